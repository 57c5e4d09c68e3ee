"""Attention maps: recording, token order, maps, rollout, overlays and the explorer widget (whether they
follow an object: test_following.py)."""
from pathlib import Path

import av
import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

import tsf
from tsf.attention import (
    MAP_KINDS, QUERY_KINDS, AttentionRecording, attention_map, attention_rollout, averages_heads, check_recorded,
    cls_attention, cls_rollout, divided_block_mixing, patch_rollout, patch_temporal_attention, record_attention,
    rollout_row, token_index, token_maps,
)
from tsf.model import ATTENTION_TYPES, Attention, TimeSformer, create_model
from tsf.viz import (
    attention_explorer, overlay_frames, overlay_strip, save_overlay_gif, save_overlay_mp4, save_overlay_png,
    temporal_attention_figure, upsample_maps,
)

matplotlib.use("Agg")
from conftest import OFFICIAL_FIXTURES as FIXTURES


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


def test_recording_takes_the_explicit_path_and_restores_each_setting_even_after_an_error():
    model = micro("divided_space_time")
    model.blocks[1].attn.fused = False
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    with pytest.raises(ValueError), record_attention(model):
        assert not any(m.fused for m in attentions)  # every attention passes its probabilities through attn_probs
        model(torch.zeros(1, 4, 3, 32, 32))  # (B, T, C, H, W): rejected by the model
    # each module gets its own setting back, not one for the whole model
    assert [m.fused for m in attentions] == [m is not model.blocks[1].attn for m in attentions]
    assert not any(m.attn_probs._forward_hooks for m in attentions)


def test_a_second_forward_replaces_the_first_and_forward_features_records():
    model = micro("divided_space_time")
    with record_attention(model) as rec:
        model(clip(batch=2))
        model.forward_features(clip(batch=1, frames=6))
    assert rec.num_frames == 6 and rec.spatial[1].shape[:2] == (1, 6) and rec.temporal[0].shape[:2] == (1, 4)


def test_recorded_maps_of_the_official_fixture_equal_a_computation_from_its_weights():
    model = tsf.from_pretrained(FIXTURES / "tiny_divided_space_time.pyth", num_heads=4)
    io = torch.load(FIXTURES / "tiny_divided_space_time.io.pt", map_location="cpu")
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

    B, T, N = 2, 4, 4  # N == T here: only the values tell a patch axis from a frame axis
    assert rec.grid == (2, 2) and rec.num_frames == T and len(rec.spatial) == len(rec.temporal) == 2
    with torch.no_grad():
        tokens = model.embed(x)
        for i, block in enumerate(model.blocks):
            # the token of patch n at frame t is 1 + n*T + t; (B, N, T, D), one sequence per patch
            patch_seqs = torch.stack(
                [torch.stack([tokens[:, 1 + n * T + t] for t in range(T)], 1) for n in range(N)], 1
            )
            temporal = attention_from_weights(block.temporal_attn, block.temporal_norm1(patch_seqs))
            temporal_out = block.temporal_attn(block.temporal_norm1(patch_seqs.flatten(0, 1))).unflatten(0, (B, N))
            mixed = patch_seqs + block.temporal_fc(temporal_out)
            # (B, T, 1+N, D), one sequence per frame, the class token first
            frame_seqs = torch.stack(
                [torch.stack([tokens[:, 0]] + [mixed[:, n, t] for n in range(N)], 1) for t in range(T)], 1
            )
            spatial = attention_from_weights(block.attn, block.norm1(frame_seqs))
            torch.testing.assert_close(rec.temporal[i], temporal, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(rec.spatial[i], spatial, atol=1e-6, rtol=1e-5)
            tokens = block(tokens, T)  # the next block's input, from the model's own (fused) path


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


def spotlight_model() -> TimeSformer:
    """A divided micro model whose first block attends to bright patches: every token embeds as
    +-(1, -1, 0, ...) (bright or dark patch), every query is the same fixed vector, and keys read the
    sign; so each frame's class token looks at that frame's bright patch, and each patch's temporal
    attention at the frames where it is bright. Positions and time add nothing."""
    model = micro("divided_space_time")
    D, heads = model.config.embed_dim, model.config.num_heads
    head_dim = D // heads
    with torch.no_grad():
        for tensor in (model.pos_embed, model.time_embed, model.cls_token, model.patch_embed.proj.weight):
            tensor.zero_()
        pixels_per_patch = model.patch_embed.proj.weight[0].numel()
        model.patch_embed.proj.weight[0] = 1.0 / pixels_per_patch  # channel 0: mean pixel - 0.5
        model.patch_embed.proj.weight[1] = -1.0 / pixels_per_patch  # channel 1: its negative
        model.patch_embed.proj.bias.zero_()
        model.patch_embed.proj.bias[:2] = torch.tensor([-0.5, 0.5])
        block = model.blocks[0]
        block.temporal_fc.weight.zero_()  # the spatial attention sees the embeddings unchanged
        block.temporal_fc.bias.zero_()
        for attn in (block.temporal_attn, block.attn):
            attn.qkv.weight[:2 * D].zero_()
            attn.qkv.bias[:2 * D].zero_()
            for h in range(heads):
                attn.qkv.bias[h * head_dim] = 20.0  # query: a constant
                attn.qkv.weight[D + h * head_dim, 0] = 1.0  # key: + for a bright token, - for a dark one
    return model


def test_a_real_recording_puts_each_frames_attention_on_its_bright_patch():
    # a 2 x 3 grid and 4 frames: one bright patch per frame, on a path that visits no patch twice and
    # is neither row-major nor column-major in time, so a swapped or transposed axis shows
    path = torch.tensor([[0, 1], [1, 2], [1, 0], [0, 2]])
    grid, T, patch_px = (2, 3), 4, 16
    frames = np.zeros((T, 2 * patch_px, 3 * patch_px, 3), np.uint8)
    for t, (row, col) in enumerate(path.tolist()):
        frames[t, row * patch_px:(row + 1) * patch_px, col * patch_px:(col + 1) * patch_px] = 255

    model = spotlight_model()
    x = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255.0  # (1, 3, T, H, W)
    with torch.no_grad(), record_attention(model) as rec:
        model(x)
    bright = path[:, 0] * grid[1] + path[:, 1]  # the bright patch of each frame, row-major

    def peaks(maps: torch.Tensor) -> torch.Tensor:  # (..., h, w) -> row-major index of the maximum
        return maps.flatten(-2).argmax(-1)

    cls_maps = cls_attention(rec.spatial[0], grid)[0]  # (T, heads, h, w)
    assert torch.equal(peaks(cls_maps.mean(1)), bright)
    assert (cls_maps.amax((-2, -1)) > 0.99).all()
    assert torch.equal(peaks(attention_map(rec, "cls", block=0, head=1)), bright)
    for t, (row, col) in enumerate(path.tolist()):
        # patch (row, col) is bright only at frame t: from every frame it looks there
        looks_at = patch_temporal_attention(rec.temporal[0], grid, (row, col))[0].argmax(-1)  # (heads, T)
        assert (looks_at == t).all()
        temporal_map = attention_map(rec, "temporal", block=0, patch=(row, col), frame=(t + 1) % T)
        assert temporal_map[:, row, col].argmax() == t


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
    itself = torch.zeros(2, 4, 2, 2)
    itself[:, 3, 0, 1] = 1.0
    assert torch.equal(patch_rollout(rec, (0, 1), 3), itself)  # and every patch token itself


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_rollout_rows_sum_to_one_and_the_cls_and_patch_rollouts_are_its_rows(attention_type):
    model = micro(attention_type)
    with record_attention(model) as rec:
        model(clip())
    patch, frame = (1, 0), 2
    n = 1 * 2 + 0
    for last_block in (0, -1):
        rollout = attention_rollout(rec, last_block)
        torch.testing.assert_close(rollout.sum(-1), torch.ones(rollout.shape[:-1]))
        maps = cls_rollout(rec, last_block)
        from_patch = patch_rollout(rec, patch, frame, last_block)
        assert maps.shape == from_patch.shape == (2, 4, 2, 2)
        if attention_type == "space_only":
            torch.testing.assert_close(maps, rollout[:, :, 0, 1:].unflatten(-1, (2, 2)))
            torch.testing.assert_close(from_patch[:, frame], rollout[:, frame, 1 + n, 1:].unflatten(-1, (2, 2)))
            assert from_patch[:, [0, 1, 3]].abs().sum() == 0
        else:
            torch.testing.assert_close(maps, token_maps(rollout, 0, rec.grid, rec.num_frames))
            query = token_index(patch, frame, rec.grid, rec.num_frames)
            torch.testing.assert_close(from_patch, token_maps(rollout, query, rec.grid, rec.num_frames))
            # one row of the product, or one query per clip
            torch.testing.assert_close(rollout_row(rec, query, last_block), rollout[:, query])
            queries = torch.tensor([query, 0])
            torch.testing.assert_close(rollout_row(rec, queries, last_block), rollout[torch.arange(2), queries])
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
        averaged = kind in ("rollout", "patch_rollout") or (kind == "patch" and attention_type == "divided_space_time")
        assert averages_heads(kind, attention_type) == averaged
        for head in (None,) if averaged else (None, 1):
            maps = attention_map(rec, kind, block=0, head=head, patch=(1, 2), frame=3, sample=1)
            assert maps.shape == (4, 2, 3) and torch.isfinite(maps).all() and (maps >= 0).all()
            # the last clip of the batch, by either index
            torch.testing.assert_close(attention_map(rec, kind, 0, head, (1, 2), 3, sample=-1), maps)
        if averaged:
            with pytest.raises(ValueError, match="average the heads"):
                attention_map(rec, kind, head=1)
    with pytest.raises(ValueError, match="unknown map kind"):
        attention_map(rec, "saliency")
    with pytest.raises(ValueError, match="no complete forward pass"):
        attention_map(AttentionRecording(attention_type), "cls")
    with pytest.raises(ValueError, match="no complete forward pass"):
        check_recorded(AttentionRecording(attention_type, spatial=[None, None]))
    check_recorded(rec)
    last = rec.joint[-1] if rec.joint else rec.spatial[-1]
    torch.testing.assert_close(attention_map(rec, "cls", head=1), cls_attention(last, rec.grid, 4)[0, :, 1])
    torch.testing.assert_close(attention_map(rec, "rollout", block=0, sample=1), cls_rollout(rec, 0)[1])
    from_patch = attention_map(rec, "patch_rollout", block=0, patch=(1, 2), frame=3, sample=1)
    torch.testing.assert_close(from_patch, patch_rollout(rec, (1, 2), 3, 0)[1])


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


def test_overlay_frames_normalise_the_strip_or_each_frame_and_check_inputs():
    frames, maps = random_frames(), torch.rand(4, 2, 2)
    overlays = overlay_frames(frames, maps)
    assert overlays.dtype == np.uint8 and overlays.shape == frames.shape
    assert np.array_equal(overlay_frames(frames, maps * 7 + 3), overlays)
    assert np.array_equal(overlay_frames(frames, maps, alpha=0.0), frames)
    # per frame, each frame's own scale: a frame scaled alone looks the same; over the strip it does not
    scaled = maps * torch.tensor([1.0, 8.0, 0.125, 4.0])[:, None, None]  # powers of 2: exact in floats
    assert np.array_equal(overlay_frames(frames, scaled, per_frame=True), overlay_frames(frames, maps, per_frame=True))
    assert not np.array_equal(overlay_frames(frames, scaled), overlays)
    flat = overlay_frames(frames, torch.ones(4, 2, 2), alpha=1.0, per_frame=True)  # no peak: the colormap's 0
    assert np.array_equal(flat, np.broadcast_to(flat[0, 0, 0], flat.shape))
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


def test_overlay_strip_outlines_the_track_and_the_query():
    frames, maps = random_frames(), torch.rand(2, 4, 2, 2)
    track = [(0, 0), (0, 1), (1, 1), (1, 0)]
    fig = overlay_strip(frames, maps, track=track, mark_patch=(2, 0, 1))
    outlines = [[(p.get_xy(), p.get_edgecolor()[:3]) for p in ax.patches] for ax in fig.axes]
    assert len(outlines) == 8 and outlines[:4] == outlines[4:]  # every row of strips is marked alike
    black, white = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    # 16 px cells, corners at pixel edges (-0.5): frame t's track patch, plus the query in frame 2
    assert outlines[0] == [((-0.5, -0.5), black)] and outlines[1] == [((15.5, -0.5), black)]
    assert outlines[2] == [((15.5, 15.5), black), ((15.5, -0.5), white)]
    assert outlines[3] == [((-0.5, 15.5), black)]
    with pytest.raises(ValueError, match=r"one \(row, col\) per frame, 4; got 3"):
        overlay_strip(frames, maps, track=track[:3])


def test_temporal_attention_figure():
    matrices = torch.softmax(torch.randn(3, 4, 4), -1)
    fig = temporal_attention_figure(matrices, ["block 0", "block 1", "block 2"], title="time")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["block 0", "block 1", "block 2"]
    shown = [ax.images[0] for ax in panels]
    assert all(np.array_equal(image.get_array(), m.numpy()) for image, m in zip(shown, matrices))
    assert {image.get_clim() for image in shown} == {(0.0, float(matrices.max()))}  # one colour scale
    with pytest.raises(ValueError, match="a label per panel"):
        temporal_attention_figure(matrices, ["block 0"])


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
                        ("head", "1"), ("block", 0), ("map", "patch"), ("map", "patch_rollout")]:
        controls[name].value = value
        seen.add(bytes(image.value))
        assert controls["query frame"].disabled == (controls["map"].value not in QUERY_KINDS)
    assert controls["head"].disabled and not controls["query frame"].disabled
    controls["map"].value = "rollout"
    seen.add(bytes(image.value))
    controls["scale per frame"].value = True
    seen.add(bytes(image.value))
    assert len(seen) == 11  # every change redrew something new
    assert controls["head"].disabled and controls["query frame"].disabled

    controls["video"].value = "wide"
    assert (controls["query frame"].max, controls["patch row"].max, controls["patch col"].max) == (2, 1, 2)
    assert bytes(image.value) not in seen

    space_only = attention_explorer(micro("space_only"), {"first": clips["first"]})
    assert "temporal" not in space_only.children[0].children[1].options
