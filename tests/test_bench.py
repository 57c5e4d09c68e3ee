"""`python -m tsf bench` smoke run, int8 quantization, and the model's lean (fast) path against its
reference path. No timing asserts: timings live in bench/README.md."""
import importlib.util
import json

import pytest
import torch

import tsf.cli
from tsf.model import ATTENTION_TYPES, Block, create_model
from tsf.quantize import DynamicInt8Linear, int8_agreement, quantize


@pytest.fixture
def cli_main(monkeypatch):
    """tsf.cli.main; commands whose module is not importable yet (packages still being written) are
    left out of the parser so that the bench command can be tested on its own."""
    available = {name: entry for name, entry in tsf.cli.COMMANDS.items() if _importable(entry[0])}
    monkeypatch.setattr(tsf.cli, "COMMANDS", available)
    return tsf.cli.main


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def test_bench_tiny_smoke_run_writes_the_report(cli_main, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--preset", "tiny", "--repeats", "1", "--warmup", "0", "--batch-sizes", "1,2",
                     "--agreement-clips", "4", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"device", "versions", "settings", "peak", "flops_per_clip_forward", "inference", "train", "data",
            "ratios", "targets", "notes"} <= report.keys()
    assert report["device"]["type"] == "cpu" and report["versions"]["torch"] == torch.__version__
    assert report["peak"]["flops_per_s"] > 0 and report["flops_per_clip_forward"] > 0
    for batch in ("1", "2"):
        rows = report["inference"]["batches"][batch]
        assert {"tsf_fused", "tsf_explicit", "tsf_int8", "hf"} <= rows.keys()
        for row in rows.values():
            assert len(row["times_s"]) == 1 and row["clips_per_s"] > 0 and row["fraction_of_peak"] > 0
    assert report["inference"]["max_abs_logit_diff_vs_hf"] < 1e-4
    assert 0.0 <= report["inference"]["int8"]["top1_agreement"] <= 1.0
    train = report["train"]["configs"]
    assert set(train) == {"tsf", "tsf_checkpointing", "hf", "hf_checkpointing"}
    for name, row in train.items():
        assert "error" not in row, (name, row)
        assert row["median_s"] > 0 and row["step_peak_mb"] >= 0
    assert "inference_b1_tsf_fused_vs_hf" in report["ratios"] and "train_tsf_memory_vs_hf" in report["ratios"]
    assert any(t["name"].startswith("GPU") and t["met"] is None for t in report["targets"])
    assert "| tsf_fused | 1 |" in capsys.readouterr().out


def test_int8_keeps_top1_on_a_tiny_model():
    torch.manual_seed(0)
    model = create_model("tiny", num_classes=10).eval()
    with torch.no_grad():  # a head that separates the classes, so top-1 is a fair question
        model.head.weight.mul_(20)
    clips = torch.randn(16, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    int8 = quantize(model)
    assert int8 is not model and type(model.blocks[0].mlp.fc1) is torch.nn.Linear, "the fp32 model is untouched"
    assert all(type(m) is not torch.nn.Linear for m in int8.modules())
    assert isinstance(int8.head, DynamicInt8Linear)
    with torch.no_grad():
        ref, got = model(clips), int8(clips)
    assert ((got - ref).norm() / ref.norm()) < 0.05
    assert int8_agreement(model, clips, quantized=int8) >= 0.9
    assert int8_agreement(model, [(clips[:8], None), (clips[8:], None)]) >= 0.9


# -- the lean path of tsf.model.Block equals its reference path -----------------------------------------
@pytest.fixture
def reference_path(monkeypatch):
    lean = Block._lean_path_applies

    def use(on: bool):
        monkeypatch.setattr(Block, "_lean_path_applies", (lambda self: False) if on else lean)

    return use


def _model(attention_type):
    torch.manual_seed(0)
    model = create_model("tiny", attention_type=attention_type, drop_path_rate=0.0)
    with torch.no_grad():  # official init zeroes temporal_fc past block 0: make the fold matter
        for block in model.blocks:
            if hasattr(block, "temporal_fc"):
                torch.nn.init.normal_(block.temporal_fc.weight, std=0.05)
    return model


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_lean_inference_matches_reference_and_leaves_inputs_alone(attention_type, reference_path):
    model = _model(attention_type).eval()
    x = torch.randn(3, 3, 8, 32, 32)
    x_before = x.clone()
    with torch.inference_mode():
        lean = model(x)
        tokens = model.embed(x)
        tokens_before = tokens.clone()
        block_out = model.blocks[0](tokens, 8)
        assert torch.equal(tokens, tokens_before), "a block must not write into its input"
        reference_path(True)
        torch.testing.assert_close(model(x), lean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.blocks[0](tokens, 8), block_out, atol=1e-5, rtol=1e-5)
    assert torch.equal(x, x_before)


def test_folded_temporal_projection_follows_weight_edits():
    model = _model("divided_space_time").eval()
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        before = model(x)
        model.blocks[1].temporal_fc.weight.data.mul_(3)  # bypasses the version counter
        after = model(x)
        model.blocks[1]._shortcuts = False
        expected = model(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("checkpointing", [False, True])
def test_lean_training_gradients_match_reference(attention_type, checkpointing, reference_path):
    model = _model(attention_type).train()
    x = torch.randn(2, 3, 8, 32, 32)

    def grads(reference: bool):
        reference_path(reference)
        model.set_gradient_checkpointing(checkpointing and not reference)
        model.zero_grad()
        clip = x.clone().requires_grad_()
        model(clip).logsumexp(-1).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}, clip.grad

    lean, lean_x = grads(False)
    ref, ref_x = grads(True)
    torch.testing.assert_close(lean_x, ref_x, atol=1e-6, rtol=1e-4)
    for name in ref:
        torch.testing.assert_close(lean[name], ref[name], atol=1e-6, rtol=1e-4, msg=name)


def test_lean_training_under_bf16_autocast_matches_reference(reference_path):
    """The autograd functions cast by hand (LayerNorm fp32, matmuls bf16), as autocast would."""
    model = _model("divided_space_time").train()
    x = torch.randn(2, 3, 8, 32, 32)

    def run(reference: bool):
        reference_path(reference)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().logsumexp(-1).sum().backward()
        return out.float(), {n: p.grad.clone() for n, p in model.named_parameters()}

    out, lean = run(False)
    ref_out, ref = run(True)
    torch.testing.assert_close(out, ref_out, atol=2e-2, rtol=2e-2)
    for name in ref:
        assert lean[name].dtype == torch.float32
        scale = ref[name].abs().max().clamp_min(1e-6)
        assert ((lean[name] - ref[name]).abs().max() / scale) < 0.05, name


def test_hooks_and_explicit_attention_see_every_token():
    """A hook on the last block, or the explicit (attention-map) path, gets the full token set."""
    model = _model("divided_space_time").eval()
    x = torch.randn(1, 3, 8, 32, 32)
    seen = []
    handle = model.blocks[-1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        hooked = model(x)
    handle.remove()
    assert seen == [torch.Size([1, 1 + 16 * 8, 64])]
    probs = []
    model.set_fused_attention(False)
    handle = model.blocks[-1].attn.attn_probs.register_forward_hook(lambda m, i, o: probs.append(o.shape))
    with torch.no_grad():
        explicit = model(x)
    handle.remove()
    assert probs == [torch.Size([8, 4, 17, 17])]
    torch.testing.assert_close(explicit, hooked, atol=1e-5, rtol=1e-5)
