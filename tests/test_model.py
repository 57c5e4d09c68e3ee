"""The model: shapes, the three attention schemes' semantics, fused vs explicit, checkpointing, errors."""
import numpy as np
import pytest
import timm
import torch

import tsf
from tsf.model import ATTENTION_TYPES, PRESETS, TimeSformer, create_model, resize_pos_embed, resize_time_embed


def micro(attention_type: str, **overrides) -> TimeSformer:
    torch.manual_seed(0)
    return create_model("micro", attention_type=attention_type, **overrides).eval()


def clip(batch=2, frames=4, size=32, seed=1) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_shapes_and_finite(attention_type):
    model = micro(attention_type)
    x = clip()
    logits = model(x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    assert model.forward_features(x).shape == (2, 32)
    assert torch.equal(model.forward_head(model.forward_features(x)), logits)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_fused_matches_explicit(attention_type):
    model = micro(attention_type)
    x = clip()
    fused = model(x)
    with model.explicit_attention():
        explicit = model(x)
    assert all(m.fused for m in model.modules() if hasattr(m, "fused")), "explicit_attention restores on exit"
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_gradient_checkpointing_same_gradients(attention_type):
    model = micro(attention_type).train()
    x = clip()

    def grads():
        model.zero_grad()
        model(x).logsumexp(-1).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.set_gradient_checkpointing(True)
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and len(plain) == len(list(model.parameters()))
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], atol=1e-6, rtol=1e-5, msg=name)


def test_seed_api_signature_and_presets():
    model = TimeSformer(img_size=32, num_classes=7, num_frames=4, attention_type="joint_space_time",
                        pretrained_model="", patch_size=16, embed_dim=32, depth=1, num_heads=2,
                        mlp_ratio=2.0, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0)
    assert model(clip()).shape == (2, 7)
    assert "time_embed" in model.state_dict() and "blocks.0.temporal_fc.weight" not in model.state_dict()
    assert "time_embed" not in micro("space_only").state_dict()
    base = PRESETS["base_8x224"]
    assert (base.embed_dim, base.depth, base.num_heads, base.patch_size, base.num_frames) == (768, 12, 12, 16, 8)
    assert (PRESETS["hr_16x448"].img_size, PRESETS["hr_16x448"].num_frames) == (448, 16)
    assert PRESETS["large_96x224"].num_frames == 96
    with pytest.raises(TypeError, match="unknown arguments"):
        TimeSformer(num_layers=3)


def test_official_init_zeroes_temporal_fc_except_first_block():
    model = create_model("tiny")
    assert model.blocks[0].temporal_fc.weight.abs().sum() > 0
    for block in model.blocks[1:]:
        assert block.temporal_fc.weight.abs().sum() == 0 and block.temporal_fc.bias.abs().sum() == 0


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_other_frames_and_sizes_interpolate_embeddings(attention_type, tmp_path):
    model = micro(attention_type)
    x = clip(batch=1, frames=6, size=64)
    logits = model(x)
    assert logits.shape == (1, 5) and torch.isfinite(logits).all()
    # run-time interpolation equals loading the same weights resized to that geometry
    tsf.save_pretrained(model, tmp_path / "m.pt")
    resized = tsf.from_pretrained(tmp_path / "m.pt", num_frames=6, img_size=64)
    torch.testing.assert_close(resized(x), logits, atol=1e-5, rtol=1e-5)


def test_pos_embed_resize_keeps_the_grid_two_dimensional():
    rows = torch.arange(2.0).repeat_interleave(2)[:, None].expand(4, 32)  # row index, constant along columns
    pos_embed = torch.cat((torch.full((1, 32), 7.0), rows))[None]  # (1, 1 + 2*2, 32)
    resized = resize_pos_embed(pos_embed, (4, 4))
    assert resized.shape == (1, 1 + 16, 32) and torch.equal(resized[0, 0], pos_embed[0, 0]), "class position kept"
    grid = resized[0, 1:, 0].reshape(4, 4)
    assert torch.allclose(grid, grid[:, :1].expand(4, 4)), "columns must stay constant"
    assert (grid[1:, 0] >= grid[:-1, 0]).all(), "rows must increase"
    assert resize_pos_embed(pos_embed, (2, 2)) is pos_embed


def test_time_embed_resize_is_linear_in_time():
    time_embed = torch.arange(4.0)[None, :, None].expand(1, 4, 8)  # frame t: t
    resized = resize_time_embed(time_embed.half(), 8)
    assert resized.shape == (1, 8, 8) and resized.dtype == torch.float16
    assert (resized[0, 1:, 0] >= resized[0, :-1, 0]).all() and resized[0, 0, 0] == 0 and resized[0, -1, 0] == 3
    assert resize_time_embed(time_embed, 4) is time_embed


def test_bad_inputs_name_the_expected_layout():
    model = micro("divided_space_time")
    with pytest.raises(ValueError, match=r"5-D clip batch \(B, 3, T, H, W\)"):
        model(torch.zeros(3, 4, 32, 32))
    with pytest.raises(ValueError, match="Hugging Face layout"):
        model(torch.zeros(1, 4, 3, 32, 32))
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.zeros(1, 3, 4, 30, 32))
    with pytest.raises(ValueError, match="tsf.data.normalize"):
        model(torch.zeros(1, 3, 4, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="num_heads"):
        create_model("micro", num_heads=5)
    with pytest.raises(ValueError, match="attention_type"):
        create_model("micro", attention_type="divided")


def _vit(depth=2):
    torch.manual_seed(3)
    return timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=16, embed_dim=32, depth=depth, num_heads=2, num_classes=10
    ).eval()


def test_space_only_is_a_frame_averaged_vit():
    """space_only = the ViT blocks run on each frame, tokens averaged over frames, then the final norm."""
    vit = _vit()
    model = tsf.from_imagenet_vit(vit, attention_type="space_only", num_frames=4, num_classes=0).eval()
    x = clip()
    B, C, T, H, W = x.shape
    with torch.no_grad():
        frames = x.transpose(1, 2).reshape(B * T, C, H, W)
        tokens = vit._pos_embed(vit.patch_embed(frames))
        tokens = vit.blocks(tokens)  # (B*T, 1+N, D)
        expected = vit.norm(tokens.reshape(B, T, *tokens.shape[1:]).mean(1))[:, 0]
        torch.testing.assert_close(model.forward_features(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention_type", ["divided_space_time", "space_only"])
def test_imagenet_init_starts_as_the_vit_on_a_still_video(attention_type):
    """Joint attention is left out: its class token sees T copies of each patch but one of itself."""
    vit = _vit()
    model = tsf.from_imagenet_vit(vit, attention_type=attention_type, num_frames=4, num_classes=3).eval()
    if attention_type == "divided_space_time":
        sd = model.state_dict()
        assert torch.equal(sd["blocks.1.temporal_attn.qkv.weight"], sd["blocks.1.attn.qkv.weight"])
        assert torch.equal(sd["blocks.0.temporal_norm1.weight"], sd["blocks.0.norm1.weight"])
        assert sd["blocks.1.temporal_fc.weight"].abs().sum() == 0
        assert sd["blocks.0.temporal_fc.weight"].abs().sum() > 0, "block 0 keeps its random temporal_fc (official)"
        with torch.no_grad():
            model.blocks[0].temporal_fc.weight.zero_()
            model.blocks[0].temporal_fc.bias.zero_()
        assert model.time_embed.abs().sum() == 0
    image = torch.randn(1, 3, 32, 32)
    still = image[:, :, None].expand(1, 3, 4, 32, 32)
    with torch.no_grad():
        expected = vit.forward_head(vit.forward_features(image), pre_logits=True)
        torch.testing.assert_close(model.forward_features(still), expected, atol=1e-5, rtol=1e-5)


def test_input_of_the_wrong_kind_is_refused_with_the_fix():
    model = create_model("micro").eval()
    with pytest.raises(TypeError, match="numpy.ndarray.*torch.from_numpy"):
        model(np.zeros((1, 3, 4, 32, 32), np.float32))
    with pytest.raises(ValueError, match="torch.float64: use x.to\\(torch.float32\\)"):
        model(torch.zeros(1, 3, 4, 32, 32, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown preset 'tinny'"):
        create_model("tinny")
