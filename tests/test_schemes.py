"""tsf.schemes: FLOPs (against the formula), attention memory (against recorded attention), the
growth of joint vs divided cost, the memory cap, and the structure of a scheme comparison."""
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from tsf.attention import record_attention
from tsf.bench import peak_memory
from tsf.data import ensure_synthetic
from tsf.data.synth import TASKS, render
from tsf.model import PRESETS, create_model
from tsf.schemes import (
    SCHEMES, attention_cost, attention_memory_bytes, compare_schemes, count_architecture_flops,
    divided_attention_follows, follows_moving_square, growth_exponents, plot_cost, plot_scheme_accuracy,
    scheme_table,
)
from tsf.train import TrainConfig


@pytest.fixture(autouse=True)
def one_thread():
    """Micro models gain nothing from a second intra-op thread and lose a lot when another
    process competes for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def formula_flops(attention_type: str, preset: str, num_frames: int, img_size: int) -> int:
    """Forward FLOPs of one clip from the architecture (multiply-add = 2; matmuls and the patch
    convolution only, as torch's FLOP counter counts them)."""
    c = PRESETS[preset]
    D, T, hidden = c.embed_dim, num_frames, int(c.embed_dim * c.mlp_ratio)
    N = (img_size // c.patch_size) ** 2

    def vit_block(length: int) -> int:  # qkv + proj, scores + weighted values, MLP
        return 8 * length * D * D + 4 * length * length * D + 4 * length * D * hidden

    if attention_type == "joint_space_time":
        block = vit_block(1 + N * T)
    elif attention_type == "space_only":
        block = T * vit_block(1 + N)
    else:
        temporal = 10 * N * T * D * D + 4 * N * T * T * D  # qkv, proj, temporal_fc; scores + values
        spatial = T * (8 * (1 + N) * D * D + 4 * (1 + N) ** 2 * D)  # the class token joins every frame
        block = temporal + spatial + 4 * (1 + N * T) * D * hidden
    patch_embedding = 2 * T * N * D * c.in_chans * c.patch_size**2
    return patch_embedding + c.depth * block + 2 * D * c.num_classes


@pytest.mark.parametrize("attention_type", SCHEMES)
@pytest.mark.parametrize("preset, num_frames, img_size", [("micro", 4, 32), ("micro", 6, 64), ("tiny", 16, 48)])
def test_counted_flops_are_the_architecture_formula(attention_type, preset, num_frames, img_size):
    config = replace(PRESETS[preset], attention_type=attention_type)
    assert count_architecture_flops(config, num_frames, img_size) == formula_flops(attention_type, preset, num_frames, img_size)


def test_counting_flops_leaves_the_model_as_it_was():
    model = create_model("micro", attention_type="joint_space_time")
    flops = count_architecture_flops(model)
    assert flops == formula_flops("joint_space_time", "micro", 4, 32)
    assert model.cls_token.device.type == "cpu" and all(m.fused for m in model.modules() if hasattr(m, "fused"))


def test_divided_flops_grow_linearly_with_frames_and_joint_superlinearly():
    frames = [8, 16, 32, 64, 128]
    flops = {s: [count_architecture_flops(replace(PRESETS["tiny"], attention_type=s), t, 64) for t in frames]
             for s in ("divided_space_time", "joint_space_time")}
    divided, joint = (growth_exponents(frames, flops[s]) for s in ("divided_space_time", "joint_space_time"))
    assert all(1.0 < e < 1.15 for e in divided), divided  # the temporal T^2 term is small beside N T D^2
    assert all(b > a for a, b in zip(joint, joint[1:])) and joint[-1] > 1.7, joint  # on its way to quadratic
    assert flops["joint_space_time"][-1] > 10 * flops["divided_space_time"][-1]


def test_growth_exponents():
    assert growth_exponents([1, 2, 4], [3, 6, 12]) == pytest.approx([1.0, 1.0])
    assert growth_exponents([2, 4, 8], [4, 16, 64]) == pytest.approx([2.0, 2.0])
    with pytest.raises(ValueError, match="two or more"):
        growth_exponents([1], [1])


@pytest.mark.parametrize("attention_type", SCHEMES)
def test_attention_memory_is_the_size_of_the_recorded_probabilities(attention_type):
    model = create_model("micro", attention_type=attention_type).eval()
    with torch.no_grad(), record_attention(model) as recording:
        model(torch.randn(2, 3, 4, 64, 64))
    one_block = sum(maps[0].numel() for maps in (recording.spatial, recording.temporal, recording.joint) if maps)
    per_block = attention_memory_bytes(model.config, 4, 64, batch_size=2, training=False) // 2
    assert per_block == one_block * 4  # fp32
    depth = model.config.depth
    assert attention_memory_bytes(model.config, 4, 64, batch_size=2) == per_block * (depth + 2)


def test_attention_cost_runs_below_the_cap_and_reports_the_rest():
    points = [(4, 32), (8, 32)]
    ran = attention_cost("divided_space_time", points, preset="micro", memory_cap_gib=1.0, repeats=1)
    assert [(r["num_frames"], r["img_size"]) for r in ran] == points
    for row in ran:
        assert row["measured"] and row["skipped"] is None
        assert math.isfinite(row["step_time_s"]) and row["step_time_s"] > 0
        assert row["peak_memory_gib"] is None or row["peak_memory_gib"] >= 0
        assert row["gflops"] == pytest.approx(formula_flops("divided_space_time", "micro", *points[ran.index(row)]) / 1e9)
    capped = attention_cost("joint_space_time", points, preset="micro", memory_cap_gib=1e-6)
    for row in capped:
        assert not row["measured"] and row["step_time_s"] is None and row["peak_memory_gib"] is None
        assert row["skipped"].startswith("would exceed the 1e-06 GiB cap") and row["gflops"] > 0
    assert capped[1]["attention_gib"] > capped[0]["attention_gib"]
    with pytest.raises(ValueError, match="not a multiple"):
        attention_cost("joint_space_time", [(4, 40)], preset="micro")
    fig = plot_cost(ran + capped, ran + capped, memory_cap_gib=1.0)
    assert len(fig.axes) == 6


def test_peak_memory_sees_a_large_allocation():
    with peak_memory("cpu") as memory:
        block = torch.ones(64, 2**20)  # 256 MiB, touched
        del block
    if memory["peak_mib"] is None:
        pytest.skip(memory["method"])
    assert memory["peak_mib"] > 200


def test_divided_attention_follows_gives_maps_and_shares():
    torch.manual_seed(0)
    model = create_model("micro", attention_type="divided_space_time", num_classes=4)
    frames = render("motion", 3, 4, 32, np.random.default_rng(0))
    clip = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255
    found = divided_attention_follows(model, clip, frames)
    assert found["temporal"].shape == found["space_time"].shape == (4, 2, 2) and found["track"].shape == (4, 2)
    assert len(found["on_object"]) == 4 and all(0 <= s <= 1 for s in found["on_object"])
    assert found["uniform"] == 0.25 and found["query"][0] == 2 and found["block"] == 1
    assert sum(found["probabilities"]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs a divided_space_time model"):
        divided_attention_follows(create_model("micro", attention_type="space_only"), clip, frames)


def test_follows_moving_square_measures_the_share_on_the_square_where_it_moved():
    torch.manual_seed(0)
    model = create_model("tiny", attention_type="divided_space_time", class_names=TASKS["motion"], depth=1)
    found = follows_moving_square(model, num_clips=6, seed=7)
    label, frames, follows = found["example"]
    assert 0 < found["clips"] <= 6 and 0.0 <= found["share"] <= 1.0 and found["uniform"] == 1 / 16
    assert frames.shape == (8, 32, 32, 3) and found["block"] == 0 and label in range(4)
    # the example's frames are clip `label` mod 4 of the seed: the square really moves in that direction
    assert (follows["track"] != follows["track"][follows["query"][0]]).any()
    with pytest.raises(ValueError, match="needs a divided_space_time model"):
        follows_moving_square(create_model("tiny", attention_type="space_only"), num_clips=1)
    with pytest.raises(ValueError, match="no square left its patch in 0 clips"):
        follows_moving_square(model, num_clips=0)


def test_compare_schemes_gives_every_result_for_every_scheme_task_and_seed(tmp_path):
    tasks = {task: ensure_synthetic(task, tmp_path, videos_per_class=4, frames=4) for task in ("appearance", "motion")}
    config = TrainConfig(epochs=1, batch_size=4, optimizer="adamw", lr=2e-3, num_workers=0, progress=False)
    lines = []
    comparison = compare_schemes(tasks, {task: config for task in tasks}, seeds=(0, 1), preset="micro", log=lines.append)
    results = json.loads(json.dumps(comparison.results))  # plain data
    assert set(results["val_top1"]) == set(tasks) and results["chance"] == {"appearance": 0.25, "motion": 0.25}
    for task in tasks:
        assert list(results["val_top1"][task]) == list(SCHEMES)
        for scheme in SCHEMES:
            per_seed = results["val_top1_per_seed"][task][scheme]
            assert len(per_seed) == 2 and all(0 <= a <= 1 for a in per_seed)
            assert results["val_top1"][task][scheme] == pytest.approx(sum(per_seed) / 2)
            assert results["train_time_s"][task][scheme] > 0
            assert comparison.models[task][scheme].config.attention_type == scheme
    params = results["params"]
    assert params["divided_space_time"] > params["joint_space_time"] > params["space_only"]  # temporal layers; time embedding
    assert all(results["gflops"][s] > 0 for s in SCHEMES) and len(lines) == 6
    table = scheme_table(results)
    assert all(name in table for name in ("Space", "Joint Space-Time", "Divided Space-Time", "motion top-1", "59.5%"))
    assert len(plot_scheme_accuracy(results, thresholds={"motion": 0.9}).axes) == 2
    with pytest.raises(ValueError, match="no TrainConfig for the tasks"):
        compare_schemes(tasks, {"appearance": config}, preset="micro")
