"""Attention maps of TimeSformer: record the space and time attention of a forward pass, analyse it.

Recording (the model's ``forward`` and its logits are unchanged)::

    with record_attention(model) as rec:
        logits = model(clip)
    rec.temporal[i]  # (B, N, heads, T, T)          divided_space_time
    rec.spatial[i]   # (B, T, heads, 1+N, 1+N)      divided_space_time and space_only
    rec.joint[i]     # (B, heads, 1+N*T, 1+N*T)     joint_space_time

Token order, the one of ``tsf.model``: patch ``n = row * w + col`` numbers the h x w grid row-major;
in a spatial sequence patch n sits at ``1 + n`` after the class token, and in the full token space of
divided and joint models the token of patch n at frame t sits at ``1 + n*T + t`` (patch-major,
frame-minor; ``token_index``). Every map returned here is laid out ``(..., T, h, w)``.

Rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", 2020), on the full token space
``[cls, p(0,0..T-1), p(1,0..T-1), ...]`` so that space and time compose:

* one attention step with heads averaged, ``A``, plus its residual connection is ``r*I + (1-r)*A``
  (``r = 0.5`` as in the paper); values, projections and MLPs are ignored.
* divided_space_time block = temporal step, then spatial step: ``M = Space @ Time`` where ``Time``
  puts each patch's (T, T) temporal attention on its own T tokens and leaves the class token alone,
  and ``Space`` puts frame t's (1+N, 1+N) spatial attention on the tokens of frame t; the class token
  takes part in all T frames, so its row of ``Space`` is its T spatial rows averaged (the model
  averages its T outputs the same way). Both steps get their own residual.
* joint_space_time block = the step of its one attention over all tokens.
* rollout through blocks 0..k = ``M_k @ ... @ M_1 @ M_0``; every row sums to 1 and an identity
  attention gives the identity. space_only models keep one sequence per frame, so their rollout is
  per frame, ``(B, T, 1+N, 1+N)``.

Whether these maps follow a moving object (the synthetic tasks' one square) is ``tsf.following``'s
question.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch

from .model import TimeSformer

MAP_KINDS = ("cls", "rollout", "temporal", "patch", "patch_rollout")
QUERY_KINDS = ("temporal", "patch", "patch_rollout")  # the kinds of map that follow a query patch and frame


@dataclass
class AttentionRecording:
    """The attention probabilities of one forward pass, one tensor per block (``[i]`` is block i).

    ``record_attention`` fills it; one built by hand is just as good an input to the analyses.

    Attributes:
        attention_type: the model's attention scheme, one of ``tsf.model.ATTENTION_TYPES``.
        grid: ``(h, w)``, the patch grid of a frame (N = h * w).
        num_frames: T, frames of the clip.
        spatial: ``(B, T, heads, 1+N, 1+N)`` per block: frame t's sequence ``[cls, patch 0, ..., patch N-1]``
            (divided_space_time and space_only; empty for joint_space_time).
        temporal: ``(B, N, heads, T, T)`` per block: patch n's sequence of frames (divided_space_time only).
        joint: ``(B, heads, 1+N*T, 1+N*T)`` per block over all tokens (joint_space_time only).
    """

    attention_type: str
    grid: tuple[int, int] = (0, 0)
    num_frames: int = 0
    spatial: list[torch.Tensor] = field(default_factory=list)
    temporal: list[torch.Tensor] = field(default_factory=list)
    joint: list[torch.Tensor] = field(default_factory=list)


@contextmanager
def record_attention(model: TimeSformer) -> Iterator[AttentionRecording]:
    """Record every block's attention probabilities while the ``with`` body runs the model.

    Inside, every attention takes the explicit softmax path (``model.explicit_attention()``) and
    forward hooks on its ``attn_probs`` copy the probabilities (before attention dropout) into the
    recording; on exit the hooks are removed and each attention's own fused setting is restored. A second forward pass in the same
    ``with`` replaces the first one's maps. Works for ``model(clip)`` and ``model.forward_features``,
    clips of any size and frame count.

    Args:
        model: the TimeSformer to record.

    Yields:
        The ``AttentionRecording``, filled once the body has run a forward pass.
    """
    recording = AttentionRecording(model.config.attention_type)
    divided = recording.attention_type == "divided_space_time"
    spatial_kind = "joint" if recording.attention_type == "joint_space_time" else "spatial"
    kinds = (spatial_kind, "temporal") if divided else (spatial_kind,)
    depth = len(model.blocks)

    def start_forward(module, inputs, patch_grid: torch.Tensor) -> None:
        # the patch embedding opens every forward pass; its (B*T, D, h, w) output gives the grid,
        # which follows the clip's size rather than the config's
        recording.grid = tuple(patch_grid.shape[-2:])
        for kind in kinds:
            setattr(recording, kind, [None] * depth)

    def note_frames(module, args) -> None:
        recording.num_frames = args[1]  # Block.forward(x, num_frames)

    def recorder(kind: str, index: int):
        def hook(module, inputs, probs: torch.Tensor) -> None:
            probs = probs.detach()
            # the batch of sequences is ordered (b, n) for temporal and (b, t) for spatial sequences
            if kind == "temporal":
                probs = probs.unflatten(0, (-1, recording.grid[0] * recording.grid[1]))
            elif kind == "spatial":
                probs = probs.unflatten(0, (-1, recording.num_frames))
            # indexed rather than appended: gradient checkpointing re-runs blocks in the backward pass
            getattr(recording, kind)[index] = probs

        return hook

    handles = [
        model.patch_embed.proj.register_forward_hook(start_forward),
        model.blocks[0].register_forward_pre_hook(note_frames),
    ]
    for index, block in enumerate(model.blocks):
        handles.append(block.attn.attn_probs.register_forward_hook(recorder(spatial_kind, index)))
        if divided:
            handles.append(block.temporal_attn.attn_probs.register_forward_hook(recorder("temporal", index)))
    try:
        with model.explicit_attention():  # restores each attention's own fused setting on exit
            yield recording
    finally:
        for handle in handles:
            handle.remove()


# -- token layout ----------------------------------------------------------------------------------
def token_index(patch: tuple[int, int], frame: int, grid: tuple[int, int], num_frames: int) -> int:
    """Index of the token of ``patch`` = (row, col) at ``frame`` in the full token space ``(1+N*T)``.

    Args:
        patch: (row, col) in the patch grid.
        frame: frame index t.
        grid: (h, w) patch grid.
        num_frames: T.
    """
    (row, col), (h, w) = patch, grid
    if not (0 <= row < h and 0 <= col < w and 0 <= frame < num_frames):
        raise IndexError(f"patch {patch} at frame {frame} is outside the {h}x{w} grid of {num_frames} frames")
    return 1 + (row * w + col) * num_frames + frame


def patch_maps(values: torch.Tensor, grid: tuple[int, int], num_frames: int) -> torch.Tensor:
    """Values of the N*T patch tokens in token order, ``(..., N*T)``, as maps ``(..., T, h, w)``.

    Args:
        values: one value per patch token, patch-major and frame-minor.
        grid: (h, w) patch grid.
        num_frames: T.
    """
    per_patch = values.unflatten(-1, (grid[0] * grid[1], num_frames))  # (..., N, T)
    return per_patch.transpose(-1, -2).unflatten(-1, grid)


def token_maps(matrix: torch.Tensor, token: int, grid: tuple[int, int], num_frames: int) -> torch.Tensor:
    """Where one token looks: its row of a full-token-space matrix, class-token column left out.

    Args:
        matrix: ``(..., 1+N*T, 1+N*T)`` attention (``rec.joint[i]``), block mixing or rollout.
        token: the query token's index (``token_index``; 0 is the class token).
        grid: (h, w) patch grid.
        num_frames: T.

    Returns:
        ``(..., T, h, w)``.
    """
    return patch_maps(matrix[..., token, 1:], grid, num_frames)


# -- maps of one block -------------------------------------------------------------------------------
def cls_attention(attn: torch.Tensor, grid: tuple[int, int], num_frames: Optional[int] = None) -> torch.Tensor:
    """The class token's attention over the patches of each frame: the classic attention map.

    Args:
        attn: spatial ``(B, T, heads, 1+N, 1+N)`` or joint ``(B, heads, 1+N*T, 1+N*T)`` attention of a block.
        grid: (h, w) patch grid.
        num_frames: T; needed for joint attention only.

    Returns:
        ``(B, T, heads, h, w)``. Spatial maps of a frame sum to 1 minus the class token's attention to
        itself; joint maps share that sum between all frames.
    """
    if attn.ndim == 5:
        return attn[..., 0, 1:].unflatten(-1, grid)
    if num_frames is None:
        raise ValueError("cls_attention of joint attention needs num_frames")
    return token_maps(attn, 0, grid, num_frames).transpose(1, 2)


def patch_temporal_attention(temporal: torch.Tensor, grid: tuple[int, int], patch: tuple[int, int]) -> torch.Tensor:
    """How one patch attends across time: row t of the result is frame t's attention over the T frames.

    Args:
        temporal: ``(B, N, heads, T, T)`` temporal attention of a divided block.
        grid: (h, w) patch grid.
        patch: (row, col) of the patch.

    Returns:
        ``(B, heads, T, T)``.
    """
    (row, col), (h, w) = patch, grid
    if not (0 <= row < h and 0 <= col < w):
        raise IndexError(f"patch {patch} is outside the {h}x{w} grid")
    return temporal[:, row * w + col]


# -- rollout ---------------------------------------------------------------------------------------
def _with_residual(mixing: torch.Tensor, residual: float) -> torch.Tensor:
    eye = torch.eye(mixing.shape[-1], dtype=mixing.dtype, device=mixing.device)
    return residual * eye + (1.0 - residual) * mixing


def _temporal_step(temporal: torch.Tensor) -> torch.Tensor:
    """(B, N, heads, T, T) -> (B, 1+N*T, 1+N*T): each patch mixes its own T tokens, the class token stays."""
    attn = temporal.float().mean(2)
    B, N, T, _ = attn.shape
    eye_patches = torch.eye(N, dtype=attn.dtype, device=attn.device)
    # row (n, t), column (m, s): attn[n, t, s] if m == n
    patches = torch.einsum("bnts,nm->bntms", attn, eye_patches).reshape(B, N * T, N * T)
    step = torch.zeros(B, 1 + N * T, 1 + N * T, dtype=attn.dtype, device=attn.device)
    step[:, 0, 0] = 1.0
    step[:, 1:, 1:] = patches
    return step


def _spatial_step(spatial: torch.Tensor) -> torch.Tensor:
    """(B, T, heads, 1+N, 1+N) -> (B, 1+N*T, 1+N*T): each frame mixes its N tokens and the class token."""
    attn = spatial.float().mean(2)
    B, T, L, _ = attn.shape
    N = L - 1
    eye_frames = torch.eye(T, dtype=attn.dtype, device=attn.device)
    # row (n, t), column (m, s): attn[t, 1+n, 1+m] if s == t
    patches = torch.einsum("btnm,ts->bntms", attn[:, :, 1:, 1:], eye_frames).reshape(B, N * T, N * T)
    step = torch.empty(B, 1 + N * T, 1 + N * T, dtype=attn.dtype, device=attn.device)
    step[:, 1:, 1:] = patches
    step[:, 1:, 0] = attn[:, :, 1:, 0].transpose(1, 2).reshape(B, N * T)
    # the class token is in all T sequences and the model averages its T outputs
    step[:, 0, 0] = attn[:, :, 0, 0].mean(1)
    step[:, 0, 1:] = attn[:, :, 0, 1:].transpose(1, 2).reshape(B, N * T) / T
    return step


def divided_block_mixing(spatial: torch.Tensor, temporal: torch.Tensor, residual: float = 0.5) -> torch.Tensor:
    """How one divided block mixes tokens: temporal step then spatial step, heads averaged.

    Args:
        spatial: ``(B, T, heads, 1+N, 1+N)`` spatial attention of the block.
        temporal: ``(B, N, heads, T, T)`` temporal attention of the block.
        residual: weight of the identity (residual connection) in each step; 0 gives the attention
            path alone, where row ``(n, t)`` is where patch n at frame t looks in space and time.

    Returns:
        ``(B, 1+N*T, 1+N*T)`` row-stochastic matrix over the full token space.
    """
    return _with_residual(_spatial_step(spatial), residual) @ _with_residual(_temporal_step(temporal), residual)


def check_recorded(rec: AttentionRecording) -> None:
    """Raise ValueError unless ``rec`` holds every block of a forward pass."""
    blocks = rec.spatial + rec.temporal + rec.joint
    if not blocks or any(attn is None for attn in blocks):
        raise ValueError(
            "the recording holds no complete forward pass; run the model inside `with record_attention(model)`"
        )


def _rollout_steps(rec: AttentionRecording, last_block: int, residual: float) -> list[torch.Tensor]:
    """The attention steps of blocks 0..last_block with their residuals, in the order they apply."""
    check_recorded(rec)
    stop = range(len(rec.joint or rec.spatial))[last_block] + 1
    if rec.attention_type == "divided_space_time":
        return [
            _with_residual(step, residual)
            for spatial, temporal in zip(rec.spatial[:stop], rec.temporal[:stop])
            for step in (_temporal_step(temporal), _spatial_step(spatial))
        ]
    return [_with_residual(attn.float().mean(-3), residual) for attn in (rec.joint or rec.spatial)[:stop]]


def attention_rollout(rec: AttentionRecording, last_block: int = -1, residual: float = 0.5) -> torch.Tensor:
    """Attention rollout through blocks 0..``last_block`` (the module docstring has the definition).

    Args:
        rec: a recording.
        last_block: the last block composed (negative counts from the end).
        residual: weight of the identity in each attention step (0.5 in Abnar & Zuidema).

    Returns:
        ``(B, 1+N*T, 1+N*T)`` for divided and joint models; ``(B, T, 1+N, 1+N)`` per frame for space_only.
    """
    steps = _rollout_steps(rec, last_block, residual)
    rollout = steps[0]
    for step in steps[1:]:
        rollout = step @ rollout
    return rollout


def rollout_row(rec: AttentionRecording, query, last_block: int = -1, residual: float = 0.5) -> torch.Tensor:
    """Row ``query`` of ``attention_rollout``, ``(B, 1+N*T)`` (space_only: ``(B, T, 1+N)``, a row per frame),
    one row through the product, last step first: (1+N*T)^2 work per step instead of (1+N*T)^3.

    Args:
        rec: a recording.
        query: a token index (``token_index``; space_only: ``1 + n`` within a frame), or a ``(B,)`` tensor
            of one per clip (not for space_only).
        last_block: the last block composed (negative counts from the end).
        residual: weight of the identity in each attention step.
    """
    steps = _rollout_steps(rec, last_block, residual)
    if isinstance(query, int):
        row = steps[-1][..., query:query + 1, :]
    else:
        row = steps[-1][torch.arange(len(query)), query].unsqueeze(1)
    for step in reversed(steps[:-1]):
        row = row @ step
    return row[..., 0, :]


def cls_rollout(rec: AttentionRecording, last_block: int = -1, residual: float = 0.5) -> torch.Tensor:
    """The class token's row of ``attention_rollout`` as maps: how much each input patch token reaches
    the class token through blocks 0..``last_block``.

    Args:
        rec: a recording.
        last_block: the last block composed (negative counts from the end).
        residual: weight of the identity in each attention step.

    Returns:
        ``(B, T, h, w)``.
    """
    row = rollout_row(rec, 0, last_block, residual)
    if rec.attention_type == "space_only":
        return row[..., 1:].unflatten(-1, rec.grid)
    return patch_maps(row[..., 1:], rec.grid, rec.num_frames)


def patch_rollout(
    rec: AttentionRecording, patch: tuple[int, int], frame: int, last_block: int = -1, residual: float = 0.5
) -> torch.Tensor:
    """Where one patch token draws from through blocks 0..``last_block``: its row of ``attention_rollout``
    as maps, i.e. "where does this patch look over time" through space and time together (a divided
    block's temporal attention alone never leaves the patch's own place).

    Args:
        rec: a recording.
        patch: (row, col) of the query patch.
        frame: its frame.
        last_block: the last block composed (negative counts from the end).
        residual: weight of the identity in each attention step; with the default 0.5 much of the
            row stays on the query itself.

    Returns:
        ``(B, T, h, w)``; space_only models keep frames apart, so all frames but ``frame`` are zero.
    """
    query = token_index(patch, frame, rec.grid, rec.num_frames)
    if rec.attention_type != "space_only":
        return patch_maps(rollout_row(rec, query, last_block, residual)[..., 1:], rec.grid, rec.num_frames)
    within_frame = rollout_row(rec, 1 + patch[0] * rec.grid[1] + patch[1], last_block, residual)[:, frame, 1:]
    maps = within_frame.new_zeros(within_frame.shape[0], rec.num_frames, *rec.grid)
    maps[:, frame] = within_frame.unflatten(-1, rec.grid)
    return maps


def _one_clip(rec: AttentionRecording, sample: int) -> AttentionRecording:
    """The recording of one clip of a recorded batch, as a batch of one (views, no copies)."""
    def pick(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [attn[sample].unsqueeze(0) for attn in tensors]

    return AttentionRecording(rec.attention_type, rec.grid, rec.num_frames, pick(rec.spatial), pick(rec.temporal),
                              pick(rec.joint))


# -- one call per view -----------------------------------------------------------------------------
def averages_heads(kind: str, attention_type: str) -> bool:
    """Whether ``attention_map`` maps of ``kind`` always average the heads, for models of ``attention_type``:
    the rollouts, and the two-step (temporal then spatial) path of a divided block."""
    return kind in ("rollout", "patch_rollout") or (kind == "patch" and attention_type == "divided_space_time")


def attention_map(
    rec: AttentionRecording,
    kind: str = "cls",
    block: int = -1,
    head: Optional[int] = None,
    patch: tuple[int, int] = (0, 0),
    frame: int = 0,
    sample: int = 0,
) -> torch.Tensor:
    """One clip's map of one kind, ``(T, h, w)``, ready for ``tsf.viz.overlay_strip``.

    Kinds (``MAP_KINDS``):
        cls: the class token's attention in ``block`` (``cls_attention``).
        rollout: the class token's rollout through blocks 0..``block`` (``cls_rollout``; heads averaged).
        temporal: divided only: how ``patch`` at ``frame`` attends to itself across the T frames in
            ``block``, drawn at the patch's place in each frame (``patch_temporal_attention``).
        patch: where ``patch`` at ``frame`` looks in ``block``: divided: the path temporal then spatial
            attention (``divided_block_mixing`` with no residual; heads averaged); joint: its attention
            row; space_only: its attention within its own frame (other frames are zero).
        patch_rollout: where ``patch`` at ``frame`` draws from through blocks 0..``block``, space and
            time together (``patch_rollout``; heads averaged).

    Args:
        rec: a recording.
        kind: one of ``MAP_KINDS``.
        block: block index (negative counts from the end).
        head: attention head, or None for the mean of the heads (rollouts and divided patch maps
            always average the heads).
        patch: (row, col) of the query patch (temporal, patch and patch_rollout kinds).
        frame: frame of the query patch (temporal, patch and patch_rollout kinds).
        sample: which clip of the recorded batch.
    """
    check_recorded(rec)
    grid, T = rec.grid, rec.num_frames
    divided = rec.attention_type == "divided_space_time"
    if head is not None and averages_heads(kind, rec.attention_type):
        raise ValueError(f"{kind} maps of a {rec.attention_type} model average the heads; pass head=None")

    def pick_head(per_head: torch.Tensor, axis: int) -> torch.Tensor:
        return per_head.mean(axis) if head is None else per_head.select(axis, head)

    if kind == "cls":
        attn = rec.joint[block] if rec.joint else rec.spatial[block]
        return pick_head(cls_attention(attn, grid, T)[sample], axis=1)
    if kind == "rollout":
        return cls_rollout(_one_clip(rec, sample), block)[0]
    if kind == "patch_rollout":
        return patch_rollout(_one_clip(rec, sample), patch, frame, block)[0]
    query = token_index(patch, frame, grid, T)
    if kind == "temporal":
        if not divided:
            raise ValueError(f"a {rec.attention_type} model has no temporal attention; use kind='patch'")
        weights = pick_head(patch_temporal_attention(rec.temporal[block], grid, patch)[sample, :, frame], axis=0)
        maps = weights.new_zeros(T, *grid)
        maps[:, patch[0], patch[1]] = weights
        return maps
    if kind == "patch":
        if divided:
            # the query's row of divided_block_mixing(..., residual=0), without the (1+N*T)^3 product
            clip = _one_clip(rec, sample)
            space_row = _spatial_step(clip.spatial[block])[0, query]
            path = space_row @ _temporal_step(clip.temporal[block])[0]
            return patch_maps(path[1:], grid, T)
        if rec.joint:
            return token_maps(pick_head(rec.joint[block][sample], axis=0), query, grid, T)
        row = pick_head(rec.spatial[block][sample, frame], axis=0)[1 + patch[0] * grid[1] + patch[1], 1:]
        maps = row.new_zeros(T, *grid)
        maps[frame] = row.unflatten(0, grid)
        return maps
    raise ValueError(f"unknown map kind {kind!r}; expected one of {MAP_KINDS}")


__all__ = [
    "MAP_KINDS", "QUERY_KINDS", "AttentionRecording", "record_attention", "token_index", "patch_maps", "token_maps",
    "cls_attention", "patch_temporal_attention", "divided_block_mixing", "check_recorded", "attention_rollout",
    "rollout_row", "cls_rollout", "patch_rollout", "averages_heads", "attention_map",
]
