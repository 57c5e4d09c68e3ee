"""tsf.schemes: the growth of joint vs divided cost, the memory cap, the cost tables, the step budget,
and the structure of a scheme comparison (the FLOP and memory counts themselves: tests/test_cost.py;
the figures: tests/test_plots.py; the moving square: tests/test_following.py)."""
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from tsf.cost import attention_memory_bytes, count_flops
from tsf.data import ensure_synthetic
from tsf.data.synth import TASKS
from tsf.model import PRESETS
from tsf.schemes import (
    SCHEMES, attention_cost, attention_memory_table, compare_schemes, cost_table, flops_growth, growth_exponents,
    scheme_table, step_budget, steps_per_epoch, task_examples,
)
from tsf.training import TrainConfig


pytestmark = pytest.mark.usefixtures("one_thread")


def test_divided_flops_grow_linearly_with_frames_and_joint_superlinearly():
    frames = [8, 16, 32, 64, 128]
    flops = {s: [count_flops(replace(PRESETS["tiny"], attention_type=s), t, 64) for t in frames]
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


def test_attention_cost_runs_below_the_cap_and_reports_the_rest():
    points = [(4, 32), (8, 32)]
    ran = attention_cost("divided_space_time", points, preset="micro", memory_cap_gib=1.0, repeats=1)
    assert [(r["num_frames"], r["img_size"]) for r in ran] == points
    for row in ran:
        assert row["measured"] and row["skipped"] is None
        assert math.isfinite(row["step_time_s"]) and row["step_time_s"] > 0
        assert row["peak_memory_gib"] is None or row["peak_memory_gib"] >= 0
        config = replace(PRESETS["micro"], attention_type="divided_space_time")
        assert row["gflops"] == pytest.approx(count_flops(config, row["num_frames"], row["img_size"]) / 1e9)
    capped = attention_cost("joint_space_time", points, preset="micro", memory_cap_gib=1e-6)
    for row in capped:
        assert not row["measured"] and row["step_time_s"] is None and row["peak_memory_gib"] is None
        assert row["skipped"].startswith("would exceed the 1e-06 GiB cap") and row["gflops"] > 0
    assert capped[1]["attention_gib"] > capped[0]["attention_gib"]
    with pytest.raises(ValueError, match="not a multiple"):
        attention_cost("joint_space_time", [(4, 40)], preset="micro")
    table = cost_table(ran + capped).splitlines()
    assert len(table) == 2 + 4 and table[0].startswith("| scheme | frames | px | patch tokens | GFLOPs |")
    assert table[2].startswith("| Divided Space-Time | 4 | 32 | 16 | ") and table[2].count("|") == 9
    assert table[4].startswith("| Joint Space-Time | 4 | 32 | 16 | ") and "would exceed the 1e-06 GiB cap" in table[4]
    growth = flops_growth(ran + capped)
    assert list(growth) == ["divided_space_time", "joint_space_time"]
    assert growth["divided_space_time"] == pytest.approx(growth_exponents([4, 8], [r["gflops"] for r in ran]))


def test_the_paper_scale_attention_memory_table():
    table = attention_memory_table([(8, 224), (32, 224)]).splitlines()
    assert table[0] == "| frames | px | patch tokens | joint GiB / clip | divided GiB / clip |" and len(table) == 4
    config = {s: replace(PRESETS["base_8x224"], attention_type=s) for s in ("joint_space_time", "divided_space_time")}
    gib = {s: attention_memory_bytes(c, 32, 224) / 2**30 for s, c in config.items()}
    assert table[3] == f"| 32 | 224 | 6,272 | {gib['joint_space_time']:.1f} | {gib['divided_space_time']:.2f} |"


def test_steps_per_epoch_and_a_step_budget_as_the_trainer_counts_them():
    config = TrainConfig(batch_size=8, warmup_epochs=3.0, lr=1e-3, progress=False)
    assert steps_per_epoch(25, config) == 3  # the incomplete last batch is dropped
    assert steps_per_epoch(64, replace(config, grad_accum_steps=2)) == 4
    assert steps_per_epoch(64, config, world_size=2) == 4
    with pytest.raises(ValueError, match="no step"):
        steps_per_epoch(7, config)
    budget = step_budget(config, train_size=25, steps=10, warmup_fraction=0.1)
    assert (budget.epochs, budget.max_steps, budget.val_every) == (4, 10, 4)  # 10 steps of 3 per epoch: 4 epochs
    assert budget.warmup_epochs == pytest.approx(1 / 3) and budget.lr == 1e-3 and budget.batch_size == 8
    assert config.max_steps == 0, "the recipe given is left as it was"


def test_task_examples_give_the_first_validation_video_of_every_class(tmp_path):
    folder = ensure_synthetic("appearance", tmp_path, videos_per_class=2, frames=4)
    clips, labels = task_examples({"colour": folder}, num_frames=3)
    assert labels == [f"colour\n{name}" for name in TASKS["appearance"]]
    assert all(clip.shape == (3, 32, 32, 3) and clip.dtype == np.uint8 for clip in clips)


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
    with pytest.raises(ValueError, match="no TrainConfig for the tasks"):
        compare_schemes(tasks, {"appearance": config}, preset="micro")
