"""tsf.lean, the lean path of tsf.model.Block: taken where it applies, and equal to the reference path
(``TimeSformer.lean_path(False)``) in inference, training, bf16 autocast, gradient checkpointing
and int8. No timing asserts: timings live in bench/README.md."""
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
    int8 = quantize(model)
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
