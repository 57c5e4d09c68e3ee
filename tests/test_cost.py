"""tsf.cost: architecture FLOPs against the analytic formula and independent of the path the model
takes, executed FLOPs beside them, the memory estimates against the model's parameters and its
recorded attention, and the measured peak memory."""
from dataclasses import replace

import pytest
import torch

from tsf.attention import record_attention
from tsf.cost import (attention_memory_bytes, count_flops, estimate_gpu_memory_gib, executed_flops, parameter_count,
                      peak_memory, resident_memory_mib, tokens_per_clip)
from tsf.model import ATTENTION_TYPES, PRESETS, create_model


pytestmark = pytest.mark.usefixtures("one_thread")


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


# -- FLOPs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("preset, num_frames, img_size", [("micro", 4, 32), ("micro", 6, 64), ("tiny", 16, 48)])
def test_counted_flops_are_the_architecture_formula(attention_type, preset, num_frames, img_size):
    config = replace(PRESETS[preset], attention_type=attention_type)
    assert count_flops(config, num_frames, img_size) == formula_flops(attention_type, preset, num_frames, img_size)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_architecture_flops_do_not_depend_on_the_path_the_model_takes(attention_type):
    model = create_model("micro", attention_type=attention_type)
    expected = formula_flops(attention_type, "micro", 4, 32)
    assert count_flops(model) == count_flops(model.config) == expected
    with model.lean_path(False):
        assert count_flops(model) == expected
    with model.explicit_attention():
        assert count_flops(model.eval()) == expected
    assert model.cls_token.device.type == "cpu" and all(m.fused for m in model.modules() if hasattr(m, "fused"))
    assert all(block.lean_enabled for block in model.blocks), "counting leaves the model as it was"


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_the_lean_path_executes_fewer_flops_than_the_architecture_and_the_reference_path_all(attention_type):
    model = create_model("micro", attention_type=attention_type).eval()
    clip = torch.randn(1, 3, 4, 32, 32)
    architecture = count_flops(model)
    with torch.inference_mode():
        lean = executed_flops(lambda: model(clip))
        with model.lean_path(False), model.explicit_attention():
            reference = executed_flops(lambda: model(clip))
    assert reference == architecture
    # folded projection, class-token-only last block: micro has 2 blocks, so the last one's skipped
    # work is nearly half of the model (space-only: 49.6%); more than that would skip real work
    assert 0.45 * architecture < lean < architecture


# -- memory estimates -------------------------------------------------------------------------------
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_attention_memory_is_the_size_of_the_recorded_probabilities(attention_type):
    model = create_model("micro", attention_type=attention_type).eval()
    with torch.no_grad(), record_attention(model) as recording:
        model(torch.randn(2, 3, 4, 64, 64))
    one_block = sum(maps[0].numel() for maps in (recording.spatial, recording.temporal, recording.joint) if maps)
    per_block = attention_memory_bytes(model.config, 4, 64, batch_size=2, training=False) // 2
    assert per_block == one_block * 4  # fp32
    depth = model.config.depth
    assert attention_memory_bytes(model.config, 4, 64, batch_size=2) == per_block * (depth + 2)


def test_memory_estimate_counts_the_models_parameters_and_tokens():
    for preset in ("tiny", "micro"):
        for attention in ATTENTION_TYPES:
            model = create_model(preset, attention_type=attention)
            assert parameter_count(model.config) == sum(p.numel() for p in model.parameters()), (preset, attention)
            with torch.no_grad():
                tokens = model.embed(torch.zeros(1, 3, model.config.num_frames, model.config.img_size,
                                                 model.config.img_size))
            assert tokens_per_clip(model.config) == tokens.shape[0] * tokens.shape[1], (preset, attention)
    # the paper's Table 1: 121.4M (divided) and 85.9M (space-only, joint) parameters; here with a 400-class head
    assert parameter_count(PRESETS["base_8x224"]) / 1e6 == pytest.approx(121.4, abs=0.3)
    assert parameter_count(replace(PRESETS["base_8x224"], attention_type="space_only")) / 1e6 == pytest.approx(85.9, abs=0.3)
    base = PRESETS["base_8x224"]
    assert estimate_gpu_memory_gib(base, 2, "sgd") > estimate_gpu_memory_gib(base, 1, "sgd") > estimate_gpu_memory_gib(base, 1, None)
    assert estimate_gpu_memory_gib(base, 1, "adamw") > estimate_gpu_memory_gib(base, 1, "sgd")


# -- measured memory ----------------------------------------------------------------------------------
def test_peak_memory_sees_a_large_allocation():
    with peak_memory("cpu") as memory:
        block = torch.ones(64, 2**20)  # 256 MiB, touched
        del block
    assert set(memory) == {"peak_mib", "base_mib", "method"} and memory["method"]
    if memory["peak_mib"] is None:
        pytest.skip(memory["method"])
    assert memory["peak_mib"] > 200
    assert memory["base_mib"] > 0 and resident_memory_mib() > 0
