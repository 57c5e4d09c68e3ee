"""Attention maps: recording, token order, analyses, rollout, overlays and the explorer widget."""
from pathlib import Path

import av
import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from tsf.attention import (
    MAP_KINDS, AttentionRecording, attention_map, attention_rollout, cls_attention, cls_rollout,
    divided_block_mixing, patch_temporal_attention, record_attention, token_index, token_maps,
)
from tsf.model import ATTENTION_TYPES, Attention, TimeSformer, create_model
from tsf.viz import (
    attention_explorer, overlay_frames, overlay_strip, save_overlay_gif, save_overlay_mp4, save_overlay_png,
    upsample_maps,
)

matplotlib.use("Agg")
FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "official"


def micro(attention_type: str) -> TimeSformer:
    torch.manual_seed(0)
    return create_model("micro", attention_type=attention_type).eval()


def clip(batch=2, frames=4, height=32, width=32, seed=1) -> torch.Tensor:
    return torch.randn(batch, 3, frames, height, width, generator=torch.Generator().manual_seed(seed))


def random_frames(frames=4, size=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)


def recorded_tensors(rec: AttentionRecording) -> list[torch.Tensor]:
    return rec.spatial + rec.temporal + rec.joint


# -- recording -------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_recording_shapes_rows_and_unchanged_logits(attention_type):
    model = micro(attention_type)
    x = clip(height=32, width=48, frames=3)  # a 2 x 3 grid and 3 frames, neither the config's
    expected = model(x)
    with record_attention(model) as rec:
        logits = model(x)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert rec.grid == (2, 3) and rec.num_frames == 3
    B, T, N, H = 2, 3, 6, 2
    shapes = {
        "divided_space_time": ([(B, T, H, 1 + N, 1 + N)] * 2, [(B, N, H, T, T)] * 2, []),
        "space_only": ([(B, T, H, 1 + N, 1 + N)] * 2, [], []),
        "joint_space_time": ([], [], [(B, H, 1 + N * T, 1 + N * T)] * 2),
    }[attention_type]
    assert [[tuple(a.shape) for a in kind] for kind in (rec.spatial, rec.temporal, rec.joint)] == list(shapes)
    for attn in recorded_tensors(rec):
        torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
        assert not attn.requires_grad
    # back to fused, no hooks left, and a later forward records nothing
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    assert all(m.fused and not m.attn_probs._forward_hooks for m in attentions)
    assert not model.patch_embed.proj._forward_hooks and not model.blocks[0]._forward_pre_hooks
    before = [a.clone() for a in recorded_tensors(rec)]
    model(clip(seed=5))
    assert all(torch.equal(a, b) for a, b in zip(recorded_tensors(rec), before))


def test_recording_restores_settings_even_after_an_error():
    model = micro("divided_space_time")
    model.blocks[1].attn.fused = False
    with pytest.raises(ValueError), record_attention(model):
        model(torch.zeros(1, 4, 3, 32, 32))  # (B, T, C, H, W): rejected by the model
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    assert [m.fused for m in attentions] == [m is not model.blocks[1].attn for m in attentions]


def test_a_second_forward_replaces_the_first_and_forward_features_records():
    model = micro("divided_space_time")
    with record_attention(model) as rec:
        model(clip(batch=2))
        model.forward_features(clip(batch=1, frames=6))
    assert rec.num_frames == 6 and rec.spatial[1].shape[:2] == (1, 6) and rec.temporal[0].shape[:2] == (1, 4)


def test_recorded_maps_of_the_official_fixture_equal_a_computation_from_its_weights():
    state = torch.load(FIXTURES / "tiny_divided_space_time.pyth", map_location="cpu", weights_only=False)["model_state"]
    io = torch.load(FIXTURES / "tiny_divided_space_time.io.pt", map_location="cpu")
    model = TimeSformer(img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=4, num_frames=4, num_classes=5)
    model.load_state_dict({name.removeprefix("model."): value for name, value in state.items()})
    model.eval()
    x = io["input"]
    with torch.no_grad(), record_attention(model) as rec:
        logits = model(x)
    torch.testing.assert_close(logits, io["logits"], atol=1e-5, rtol=1e-5)

    def attention_from_weights(attn: Attention, tokens: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) per head: (..., L, D) -> (..., heads, L, L)."""
        D, heads = tokens.shape[-1], attn.num_heads
        qkv = tokens @ attn.qkv.weight.T + attn.qkv.bias
        q, k = (qkv[..., i * D:(i + 1) * D].unflatten(-1, (heads, D // heads)).transpose(-3, -2) for i in (0, 1))
        return (q @ k.transpose(-2, -1) / (D // heads) ** 0.5).softmax(-1)

    block, B, T, N = model.blocks[0], 2, 4, 4
    with torch.no_grad():
        x0 = model.embed(x)
        # the token of patch n at frame t is 1 + n*T + t
        patch_seqs = torch.stack([torch.stack([x0[:, 1 + n * T + t] for t in range(T)], 1) for n in range(N)], 1)
        temporal = attention_from_weights(block.temporal_attn, block.temporal_norm1(patch_seqs))  # (B, N, heads, T, T)
        temporal_out = block.temporal_attn(block.temporal_norm1(patch_seqs.flatten(0, 1))).unflatten(0, (B, N))
        mixed = patch_seqs + block.temporal_fc(temporal_out)
        frame_seqs = torch.stack([torch.stack([x0[:, 0]] + [mixed[:, n, t] for n in range(N)], 1) for t in range(T)], 1)
        spatial = attention_from_weights(block.attn, block.norm1(frame_seqs))  # (B, T, heads, 1+N, 1+N)
    torch.testing.assert_close(rec.temporal[0], temporal, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(rec.spatial[0], spatial, atol=1e-6, rtol=1e-5)


# -- token order: a hand-built pattern comes out where it was put ----------------------------------
def test_hand_built_attention_comes_out_where_it_was_put():
    grid, T, N = (2, 3), 4, 6
    # a patch off the grid's diagonal and corners, so that a transposed or column-major grid shows
    patch, frame = (0, 1), 2
    n = 0 * 3 + 1
    assert token_index(patch, frame, grid, T) == 1 + n * T + frame
    with pytest.raises(IndexError):
        token_index((2, 0), 0, grid, T)

    spatial = torch.zeros(1, T, 1, 1 + N, 1 + N)
    spatial[0, frame, 0, 0, 1 + n] = 1.0
    expected = torch.zeros(1, T, 1, *grid)
    expected[0, frame, 0, 0, 1] = 1.0
    assert torch.equal(cls_attention(spatial, grid), expected)

    joint = torch.zeros(1, 1, 1 + N * T, 1 + N * T)
    joint[0, 0, 0, 1 + n * T + frame] = 1.0
    assert torch.equal(cls_attention(joint, grid, T), expected)
    assert torch.equal(token_maps(joint, 0, grid, T), expected.transpose(1, 2))

    temporal = torch.zeros(1, N, 1, T, T)
    temporal[0, n, 0] = torch.eye(T).roll(1, dims=1)
    assert torch.equal(patch_temporal_attention(temporal, grid, patch)[0, 0], torch.eye(T).roll(1, dims=1))
    assert patch_temporal_attention(temporal, grid, (1, 1)).abs().sum() == 0


def test_divided_block_mixing_composes_time_then_space():
    grid, T, N = (2, 3), 4, 6
    # time: every patch looks one frame ahead; space: every patch looks at the next patch, the class
    # token at patch 0 in every frame
    temporal = torch.eye(T).roll(1, dims=1).expand(1, N, 2, T, T)
    spatial = torch.zeros(1, T, 2, 1 + N, 1 + N)
    spatial[..., 1:, 1:] = torch.eye(N).roll(1, dims=1)
    spatial[..., 0, 1] = 1.0
    mixing = divided_block_mixing(spatial, temporal, residual=0.0)[0]
    for n in range(N):
        for t in range(T):
            query = token_index(divmod(n, 3), t, grid, T)
            where = torch.zeros(T, *grid)
            where[(t + 1) % T, *divmod((n + 1) % N, 3)] = 1.0  # patch n+1 (space), then frame t+1 (time)
            assert torch.equal(token_maps(mixing, query, grid, T), where)
    cls_reach = torch.zeros(T, *grid)
    cls_reach[:, 0, 0] = 1.0 / T  # the class token's T frame copies are averaged
    assert torch.equal(token_maps(mixing, 0, grid, T), cls_reach)
    with_residual = divided_block_mixing(spatial, temporal)
    torch.testing.assert_close(with_residual.sum(-1), torch.ones(1, 1 + N * T))


# -- rollout ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_rollout_of_an_identity_attention_model_is_the_identity(attention_type):
    model = micro(attention_type)

    def attend_to_self(module, inputs, probs):
        return torch.eye(probs.shape[-1]).expand_as(probs)

    handles = [m.attn_probs.register_forward_hook(attend_to_self) for m in model.modules() if isinstance(m, Attention)]
    with record_attention(model) as rec:
        model(clip())
    for handle in handles:
        handle.remove()
    rollout = attention_rollout(rec)
    assert torch.equal(rollout, torch.eye(rollout.shape[-1]).expand_as(rollout))
    assert cls_rollout(rec).abs().sum() == 0  # the class token only reaches itself


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_rollout_rows_sum_to_one_and_cls_rollout_is_its_first_row(attention_type):
    model = micro(attention_type)
    with record_attention(model) as rec:
        model(clip())
    for last_block in (0, -1):
        rollout = attention_rollout(rec, last_block)
        torch.testing.assert_close(rollout.sum(-1), torch.ones(rollout.shape[:-1]))
        maps = cls_rollout(rec, last_block)
        assert maps.shape == (2, 4, 2, 2)
        if attention_type == "space_only":
            torch.testing.assert_close(maps, rollout[:, :, 0, 1:].unflatten(-1, (2, 2)))
        else:
            torch.testing.assert_close(maps, token_maps(rollout, 0, rec.grid, rec.num_frames))
    one_block = AttentionRecording(
        rec.attention_type, rec.grid, rec.num_frames, rec.spatial[:1], rec.temporal[:1], rec.joint[:1]
    )
    torch.testing.assert_close(attention_rollout(rec, 0), attention_rollout(one_block))
    if attention_type == "divided_space_time":
        torch.testing.assert_close(attention_rollout(one_block), divided_block_mixing(rec.spatial[0], rec.temporal[0]))


# -- one-call maps ---------------------------------------------------------------------------------
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_attention_map_of_every_kind(attention_type):
    model = micro(attention_type)
    with record_attention(model) as rec:
        model(clip(height=32, width=48))
    for kind in MAP_KINDS:
        if kind == "temporal" and attention_type != "divided_space_time":
            with pytest.raises(ValueError, match="no temporal attention"):
                attention_map(rec, kind)
            continue
        averaged = kind == "rollout" or (kind == "patch" and attention_type == "divided_space_time")
        for head in (None,) if averaged else (None, 1):
            maps = attention_map(rec, kind, block=0, head=head, patch=(1, 2), frame=3, sample=1)
            assert maps.shape == (4, 2, 3) and torch.isfinite(maps).all() and (maps >= 0).all()
        if averaged:
            with pytest.raises(ValueError, match="average the heads"):
                attention_map(rec, kind, head=1)
    with pytest.raises(ValueError, match="unknown map kind"):
        attention_map(rec, "saliency")
    with pytest.raises(ValueError, match="no complete forward pass"):
        attention_map(AttentionRecording(attention_type), "cls")
    last = rec.joint[-1] if rec.joint else rec.spatial[-1]
    torch.testing.assert_close(attention_map(rec, "cls", head=1), cls_attention(last, rec.grid, 4)[0, :, 1])


def test_temporal_and_patch_maps_are_drawn_at_the_query_patch():
    model = micro("divided_space_time")
    with record_attention(model) as rec:
        model(clip(height=32, width=48))
    maps = attention_map(rec, "temporal", block=1, head=0, patch=(1, 2), frame=3, sample=1)
    assert torch.equal(maps[:, 1, 2], rec.temporal[1][1, 5, 0, 3])
    maps[:, 1, 2] = 0
    assert maps.abs().sum() == 0
    # the two-step path of a patch: its row of the block's mixing, reaching patches and class token
    path = attention_map(rec, "patch", block=1, patch=(1, 2), frame=3, sample=1)
    mixing = divided_block_mixing(rec.spatial[1], rec.temporal[1], residual=0.0)[1]
    query = token_index((1, 2), 3, rec.grid, 4)
    torch.testing.assert_close(path, token_maps(mixing, query, rec.grid, 4))
    torch.testing.assert_close(path.sum() + mixing[query, 0], torch.tensor(1.0))

    space_only = micro("space_only")
    with record_attention(space_only) as rec:
        space_only(clip())
    within_frame = attention_map(rec, "patch", head=1, patch=(0, 1), frame=2)
    assert torch.equal(within_frame[2].flatten(), rec.spatial[-1][0, 2, 1, 2, 1:])
    assert within_frame[[0, 1, 3]].abs().sum() == 0


# -- overlays --------------------------------------------------------------------------------------
def test_upsampled_maps_keep_the_peak_in_its_patch():
    maps = torch.zeros(1, 2, 3)
    maps[0, 1, 2] = 1.0
    up = upsample_maps(maps, (20, 30))
    assert up.shape == (1, 20, 30)
    row, col = np.unravel_index(up[0].argmax(), (20, 30))
    assert 10 <= row < 20 and 20 <= col < 30


def test_overlay_frames_normalise_the_strip_and_check_inputs():
    frames, maps = random_frames(), torch.rand(4, 2, 2)
    overlays = overlay_frames(frames, maps)
    assert overlays.dtype == np.uint8 and overlays.shape == frames.shape
    assert np.array_equal(overlay_frames(frames, maps * 7 + 3), overlays)
    assert np.array_equal(overlay_frames(frames, maps, alpha=0.0), frames)
    with pytest.raises(ValueError, match=r"uint8 \(T, H, W, 3\)"):
        overlay_frames(torch.rand(4, 3, 32, 32), maps)
    with pytest.raises(ValueError, match="T = 4"):
        overlay_frames(frames, maps[:3])


def test_overlay_strip_and_files(tmp_path):
    frames, maps = random_frames(), torch.rand(3, 4, 2, 2)
    fig = overlay_strip(frames, maps, row_labels=["block 0", "block 1", "block 2"], title="cls", mark_patch=(1, 0, 1))
    assert isinstance(fig, Figure) and len(fig.axes) == 12
    assert [ax.get_ylabel() for ax in fig.axes[::4]] == ["block 0", "block 1", "block 2"]
    with Image.open(save_overlay_png(tmp_path / "strip.png", frames, maps[0], title="one strip")) as png:
        assert png.format == "PNG"
    with Image.open(save_overlay_gif(tmp_path / "clip.gif", frames, maps[0])) as gif:
        assert gif.n_frames == 4 and gif.size == (32, 32)
    with av.open(str(save_overlay_mp4(tmp_path / "clip.mp4", frames[:, :31], maps[0]))) as video:
        decoded = list(video.decode(video=0))
    assert len(decoded) == 4 and (decoded[0].height, decoded[0].width) == (32, 32)


# -- the explorer ----------------------------------------------------------------------------------
def test_explorer_builds_without_a_display_and_follows_its_controls():
    model = micro("divided_space_time")
    clips = {
        "first": (clip(batch=1), random_frames(size=64)),
        "wide": (clip(batch=1, frames=3, width=48, seed=2), random_frames(frames=3, size=40)),
    }
    explorer = attention_explorer(model, clips)
    rows = [child for child in explorer.children if hasattr(child, "children")]
    controls = {control.description: control for row in rows for control in row.children}
    caption, image = explorer.children[-2:]
    assert bytes(image.value).startswith(b"\x89PNG") and "prediction" in caption.value
    assert list(controls["map"].options) == list(MAP_KINDS)
    assert controls["query frame"].disabled and not controls["head"].disabled

    seen = {bytes(image.value)}
    for name, value in [("map", "temporal"), ("patch row", 1), ("patch col", 1), ("query frame", 2),
                        ("head", "1"), ("block", 0), ("map", "patch"), ("map", "rollout")]:
        controls[name].value = value
        seen.add(bytes(image.value))
    assert len(seen) == 9  # every change redrew something new
    assert controls["head"].disabled and controls["query frame"].disabled

    controls["video"].value = "wide"
    assert (controls["query frame"].max, controls["patch row"].max, controls["patch col"].max) == (2, 1, 2)
    assert bytes(image.value) not in seen

    space_only = attention_explorer(micro("space_only"), {"first": clips["first"]})
    assert "temporal" not in space_only.children[0].children[1].options
