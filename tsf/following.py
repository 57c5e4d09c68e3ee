"""Does attention follow the object? Analyses of ``tsf.attention`` recordings on clips of one object.

The synthetic tasks of ``tsf.data.synth`` show one square on a flat background, so "following" has a
plain meaning: ``object_patches`` finds the object's patch in every frame (its track), ``map_peaks`` the
peak of any map, and a map is "on the object" in a frame when its peak is the object's patch there.

* ``object_following`` counts, block by block, the frames in which the class-token maps, the rollouts and
  the rollout of the object's own frame-0 token land on it (notebook 04); ``following_findings`` and
  ``following_table`` sum that up against chance, a map that never moves and an untrained network.
* A divided block's temporal attention never leaves a patch's place, so for it ``object_frame_share``
  asks a question in time instead: does the object's patch attend to the frames in which the object is
  there (``tracked_temporal_attention`` gives its rows along the track)?
* ``divided_attention_follows`` draws where one token of a divided model looks in a clip of the moving
  square, and ``follows_moving_square`` measures that over rendered clips (notebook 05).
"""
from __future__ import annotations

import statistics
from typing import Mapping, Optional

import numpy as np
import torch

from .attention import (
    AttentionRecording, attention_map, check_recorded, cls_attention, cls_rollout, patch_maps, record_attention,
    rollout_row, token_index,
)
from .data import normalize
from .data.synth import TASKS, render
from .model import TimeSformer


# -- where the object is ---------------------------------------------------------------------------
def map_peaks(maps: torch.Tensor) -> torch.Tensor:
    """The (row, col) of the maximum of each map: ``(..., h, w)`` -> ``(..., 2)`` (first maximum on ties).

    Args:
        maps: e.g. ``attention_map`` output ``(T, h, w)``: one peak per frame.
    """
    width = maps.shape[-1]
    flat = maps.flatten(-2).argmax(-1)
    return torch.stack((flat // width, flat % width), -1)


def object_patches(frames, grid: tuple[int, int]) -> torch.Tensor:
    """Where a lone object is in each frame: the patch whose pixels differ most from the background.

    Made for clips with one object on a flat background, such as the synthetic tasks of
    ``tsf.data.synth``: the object covers a few percent of the pixels, so each frame's per-channel
    median is its background, and the patch with the largest mean absolute difference from it holds
    the most of the object. Compare with ``map_peaks`` of a map to see whether attention follows it.

    Args:
        frames: uint8 ``(T, H, W, 3)`` (numpy or torch), H and W multiples of the grid.
        grid: (h, w) patch grid of the model's input.

    Returns:
        ``(T, 2)`` (row, col) per frame.
    """
    pixels = torch.as_tensor(frames).float()
    (h, w), (T, H, W, _) = grid, pixels.shape
    if H % h or W % w:
        raise ValueError(
            f"frames of {H}x{W} pixels do not split into a {h}x{w} patch grid; pass the model's input frames"
        )
    background = pixels.flatten(1, 2).median(1).values  # (T, 3)
    difference = (pixels - background[:, None, None]).abs().sum(-1)  # (T, H, W)
    per_patch = difference.unflatten(1, (h, H // h)).unflatten(3, (w, W // w)).mean((2, 4))  # (T, h, w)
    return map_peaks(per_patch)


def object_tracks(frames, grid: tuple[int, int]) -> torch.Tensor:
    """``object_patches`` of every clip of a batch: ``(V, T, H, W, 3)`` uint8 frames -> ``(V, T, 2)`` tracks.

    Args:
        frames: uint8 ``(V, T, H, W, 3)`` (numpy or torch), e.g. a dataset batch ``(V, 3, T, H, W)``
            permuted to ``(0, 2, 3, 4, 1)``.
        grid: (h, w) patch grid of the model's input.
    """
    return torch.stack([object_patches(clip_frames, grid) for clip_frames in frames])


def moved_frames(tracks) -> torch.Tensor:
    """``(V, T)`` bool: in which frames the object is no longer in its frame-0 patch.

    Args:
        tracks: ``(V, T, 2)`` (row, col) per clip and frame (``object_tracks``).
    """
    tracks = torch.as_tensor(tracks)
    return (tracks != tracks[:, :1]).any(-1)


# -- temporal attention along the track ------------------------------------------------------------
def tracked_temporal_attention(temporal: torch.Tensor, track, grid: tuple[int, int]) -> torch.Tensor:
    """Temporal attention along a moving object's track: row t is how the patch the object occupies at
    frame t attends over the T frames (heads averaged).

    A divided block's temporal attention keeps each patch on its own place, so this is what it can tell
    about a moving object: whether the object's patch looks at the frames in which the object is in
    that patch too (``object_frame_share``) or at the frames it has moved on from.

    Args:
        temporal: ``(B, N, heads, T, T)`` temporal attention of a divided block.
        track: ``(B, T, 2)`` (row, col) per clip and frame, e.g. ``object_patches`` of each clip.
        grid: (h, w) patch grid.

    Returns:
        ``(B, T, T)``.
    """
    track = torch.as_tensor(track)
    B, N, _, T, _ = temporal.shape
    if tuple(track.shape) != (B, T, 2) or N != grid[0] * grid[1]:
        raise ValueError(f"track must be (B, T, 2) = ({B}, {T}, 2) for temporal attention of shape "
                         f"{tuple(temporal.shape)} on a {grid[0]}x{grid[1]} grid; got {tuple(track.shape)}")
    patches = track[..., 0] * grid[1] + track[..., 1]  # (B, T)
    return temporal.float().mean(2)[torch.arange(B)[:, None], patches, torch.arange(T)]


def object_frame_share(temporal: torch.Tensor, track, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether a moving object's patch attends, in time, to the frames in which the object is there too.

    For each clip and frame t the query is the patch the object occupies at t (``tracked_temporal_attention``).
    Over the other frames (the attention a patch pays to itself says nothing about the object), it gives
    the share of the query's attention that goes to frames where the object is at the same patch, and
    the share uniform attention would give those frames (0 where the object is there at t only).

    Args:
        temporal: ``(B, N, heads, T, T)`` temporal attention of a divided block.
        track: ``(B, T, 2)`` (row, col) per clip and frame.
        grid: (h, w) patch grid.

    Returns:
        ``(share, uniform_share)``, each ``(B, T)``.
    """
    rows = tracked_temporal_attention(temporal, track, grid)
    track, T = torch.as_tensor(track), rows.shape[-1]
    others = ~torch.eye(T, dtype=torch.bool)
    object_there = (track[:, :, None] == track[:, None, :]).all(-1) & others  # (B, T query, T key)
    # a query that attends to itself alone (hand-built attention) gives the object's frames nothing
    share = (rows * object_there).sum(-1) / (rows * others).sum(-1).clamp_min(torch.finfo(rows.dtype).tiny)
    return share, object_there.sum(-1) / (T - 1)


# -- block by block --------------------------------------------------------------------------------
def object_following(rec: AttentionRecording, track, residual: float = 0.5) -> dict[str, torch.Tensor]:
    """How the attention of every block relates to a lone object moving through the clips, frame by frame.

    ``track`` gives the object's patch per clip and frame (``object_patches``); a map is "on the object"
    in a frame when its peak (``map_peaks``) is the object's patch in that frame. Chance is 1/N; a map
    that never moves is on the object wherever the object has not left its first patch.

    Entries, one row per block b, ``(depth, B, T)``:
        cls: block b's class-token attention (heads averaged) is on the object.
        rollout: the class-token rollout through blocks 0..b is on the object.
        patch_rollout: the rollout through blocks 0..b of the object's token in frame 0 (where the
            object's patch looks over time, through space and time) is on the object; not for
            space_only models, whose frames never meet.
        patch_rollout_away: the same with the object's frame-0 place left out of every frame (chance
            1/(N-1)): where else the token draws from. Its own place gets weight in every frame from
            the residuals and, in divided blocks, the temporal step, whatever the object does.
        time_share, time_uniform: divided models: ``object_frame_share`` of block b's temporal attention.

    Args:
        rec: a recording of the clips.
        track: ``(B, T, 2)`` (row, col) of the object per clip and frame.
        residual: weight of the identity in each rollout step.

    Returns:
        Entry name -> tensor (bool for the "on the object" entries).
    """
    check_recorded(rec)
    track, T = torch.as_tensor(track), rec.num_frames
    depth, B = len(rec.joint or rec.spatial), (rec.joint or rec.spatial)[0].shape[0]
    if tuple(track.shape) != (B, T, 2):
        raise ValueError(f"track must be (B, T, 2) = ({B}, {T}, 2), a patch per recorded clip and frame; "
                         f"got {tuple(track.shape)}")

    def on_object(maps: torch.Tensor) -> torch.Tensor:
        return (map_peaks(maps) == track).all(-1)

    per_block = {
        "cls": [on_object(cls_attention(attn, rec.grid, T).mean(2)) for attn in rec.joint or rec.spatial],
        "rollout": [on_object(cls_rollout(rec, b, residual)) for b in range(depth)],
    }
    if rec.attention_type != "space_only":
        first_tokens = torch.tensor([token_index(tuple(patch), 0, rec.grid, T) for patch in track[:, 0].tolist()])
        maps = [patch_maps(rollout_row(rec, first_tokens, b, residual)[:, 1:], rec.grid, T) for b in range(depth)]
        per_block["patch_rollout"] = [on_object(m) for m in maps]
        away = [m.clone() for m in maps]
        for m in away:
            m[torch.arange(B), :, track[:, 0, 0], track[:, 0, 1]] = -1.0  # below any attention weight
        per_block["patch_rollout_away"] = [on_object(m) for m in away]
    if rec.temporal:
        shares = [object_frame_share(temporal, track, rec.grid) for temporal in rec.temporal]
        per_block["time_share"] = [share for share, _ in shares]
        per_block["time_uniform"] = [uniform for _, uniform in shares]
    return {name: torch.stack(rows) for name, rows in per_block.items()}


# -- summing up: notebook 04's table and findings --------------------------------------------------
def _moved_rate(hits: torch.Tensor, moved: torch.Tensor) -> float:
    """Share of the moved frames in which the last block's map is on the object."""
    return hits[-1][moved].float().mean().item()


def following_findings(following: Mapping[str, dict], moved, grid: tuple[int, int]) -> dict:
    """The findings of ``object_following`` on one set of clips, for one or more networks (e.g. the
    trained model and the same architecture untrained), as notebook 04 writes them.

    Args:
        following: network name -> its ``object_following`` result on the same clips and tracks; the
            first one picks the block of the class-token entries.
        moved: ``(V, T)`` bool, the frames the object has moved on from (``moved_frames``).
        grid: (h, w) patch grid.

    Returns:
        ``moved_frames`` (their share of all frames) and ``chance`` (1/N); where the entries exist, per
        network: ``patch_rollout_on_square_moved_frames`` and ``patch_rollout_away_on_square_moved_frames``
        (share of the moved frames in which the rollout of the object's frame-0 token through the whole
        network peaks on the object, with and without its own place), ``best_cls_block`` (the block whose
        class-token map is on the object most often, for the first network) and ``cls_on_square_best_block``
        (that share over all frames), ``time_share_per_block``, ``time_share_uniform_per_block`` (the first
        network's) and ``time_share_largest_departure_from_uniform`` (over the blocks, of the mean share on
        the object's frames minus the uniform share, in absolute value).
    """
    moved = torch.as_tensor(moved)
    reference = next(iter(following.values()))
    findings = {"moved_frames": moved.float().mean().item(), "chance": 1 / (grid[0] * grid[1])}
    if "patch_rollout" in reference:
        for key, entry in (("patch_rollout_on_square_moved_frames", "patch_rollout"),
                           ("patch_rollout_away_on_square_moved_frames", "patch_rollout_away")):
            findings[key] = {name: _moved_rate(result[entry], moved) for name, result in following.items()}
    best_cls = max(range(len(reference["cls"])), key=lambda b: reference["cls"][b].float().mean().item())
    findings["best_cls_block"] = best_cls
    findings["cls_on_square_best_block"] = {name: result["cls"][best_cls].float().mean().item()
                                            for name, result in following.items()}
    if "time_share" in reference:
        findings["time_share_per_block"] = {name: result["time_share"].mean((1, 2)).tolist()
                                            for name, result in following.items()}
        findings["time_share_uniform_per_block"] = reference["time_uniform"].mean((1, 2)).tolist()
        findings["time_share_largest_departure_from_uniform"] = {
            name: (result["time_share"] - result["time_uniform"]).mean((1, 2)).abs().max().item()
            for name, result in following.items()
        }
    return findings


def following_table(following: Mapping[str, dict], moved, grid: tuple[int, int], thing: str = "object") -> str:
    """``object_following`` block by block as a text table: for each network, the share of all frames and
    of the moved frames in which each map peaks on the object, then (divided models) the temporal
    attention's mean share on the object's frames beside the uniform share; chance and the score of a
    map that never moves come first.

    Args:
        following: network name -> its ``object_following`` result on the same clips and tracks.
        moved: ``(V, T)`` bool, the frames the object has moved on from (``moved_frames``).
        grid: (h, w) patch grid.
        thing: what the object is called in the labels ("square").
    """
    moved = torch.as_tensor(moved)
    num_patches, reference = grid[0] * grid[1], next(iter(following.values()))
    depth, everywhere = len(reference["cls"]), torch.ones_like(moved)
    lines = [f"chance {1 / num_patches:.0%} of the frames ({1 / (num_patches - 1):.0%} with one place left out); "
             f"a map that never moves: {(~moved).float().mean().item():.0%} of all frames, 0% of the moved ones", ""]
    columns = [(f"{name}: all", "moved") for name in following]
    lines.append(f"{f'map peak on the {thing}':<44}" + "".join(f"{a:>{len(a) + 2}}{b:>7}" for a, b in columns))
    views = (("cls", "class token, block {}"), ("rollout", "class-token rollout, blocks 0-{}"),
             ("patch_rollout", "rollout of the frame-0 patch, blocks 0-{}"),
             ("patch_rollout_away", "  the same, its own place left out, 0-{}"))
    for entry, label in views:
        if entry not in reference:
            continue
        for block in range(depth):
            rates = [[result[entry][block][counted].float().mean().item() for counted in (everywhere, moved)]
                     for result in following.values()]
            lines.append(f"{label.format(block):<44}"
                         + "".join(f"{all_:>{len(a) + 2}.0%}{on_moved:>7.0%}"
                                   for (a, _), (all_, on_moved) in zip(columns, rates)))
    if "time_share" in reference:
        lines += ["", f"temporal attention of the {thing}'s patch".ljust(44)
                  + "".join(f"{name:>{len(name) + 2}}" for name in following) + f"{'uniform':>9}"]
        for block in range(depth):
            shares = [result["time_share"][block].mean().item() for result in following.values()]
            lines.append(f"{f'on the frames the {thing} is there, block {block}':<44}"
                         + "".join(f"{s:>{len(name) + 2}.0%}" for name, s in zip(following, shares))
                         + f"{reference['time_uniform'][block].mean().item():>9.0%}")
    return "\n".join(lines)


# -- divided attention follows the moving square (notebook 05) -------------------------------------
def divided_attention_follows(model: TimeSformer, clip: torch.Tensor, frames: np.ndarray,
                              query_frame: Optional[int] = None, block: int = -1) -> dict:
    """Where one token of a divided model looks, for a clip of the moving square: the query is the
    patch holding the square at ``query_frame``.

    Args:
        model: a ``divided_space_time`` model.
        clip: its normalised input ``(1, 3, T, H, W)``.
        frames: the same clip as uint8 ``(T, H, W, 3)`` (to find the square: ``object_patches``).
        query_frame: the query's frame (default: the middle one).
        block: which block's attention.

    Returns:
        ``temporal`` ``(T, h, w)``: the query's temporal attention over the frames, drawn at its own
        patch (``tsf.attention.attention_map(kind="temporal")``); ``space_time`` ``(T, h, w)``: where
        its temporal-then-spatial path reaches in each frame (``kind="patch"``); ``track`` ``(T, 2)``:
        the square's patch per frame; ``on_object`` per frame: the share of that frame's space-time
        weight on the square's patch; ``uniform``: that share if the weight were spread evenly;
        ``query`` ``(frame, row, col)``; ``probabilities`` of the classes; ``block``.
    """
    if model.config.attention_type != "divided_space_time":
        raise ValueError(f"divided_attention_follows needs a divided_space_time model; "
                         f"this one is {model.config.attention_type}")
    grid = (clip.shape[-2] // model.config.patch_size, clip.shape[-1] // model.config.patch_size)
    track = object_patches(frames, grid)
    query_frame = len(track) // 2 if query_frame is None else query_frame
    patch = tuple(track[query_frame].tolist())
    model.eval()
    with torch.no_grad(), record_attention(model) as recording:
        probabilities = model(clip).softmax(-1)[0]
    temporal = attention_map(recording, "temporal", block=block, patch=patch, frame=query_frame)
    space_time = attention_map(recording, "patch", block=block, patch=patch, frame=query_frame)
    per_frame = space_time.flatten(1)
    on_object = per_frame[torch.arange(len(track)), track[:, 0] * grid[1] + track[:, 1]] / per_frame.sum(1)
    return {"temporal": temporal, "space_time": space_time, "track": track, "on_object": on_object.tolist(),
            "uniform": 1.0 / per_frame.shape[1], "query": (query_frame, *patch),
            "probabilities": probabilities.tolist(), "block": range(len(model.blocks))[block]}


def follows_moving_square(model: TimeSformer, num_clips: int = 32, seed: int = 7, block: int = 0) -> dict:
    """How closely a divided model's attention follows a moving square, over clips of the one-square
    ``motion`` task of ``tsf.data.synth`` rendered in memory (label ``i % 4`` for clip ``i``).

    For each clip, ``divided_attention_follows`` from the square's patch in the middle frame; the
    clip counts the share of the space-time path on the square's patch over the frames in which the
    square has left the query's patch (a clip whose square never leaves it is skipped).

    Args:
        model: a ``divided_space_time`` model sized for the task (``tiny``: 8 frames of 32 px).
        num_clips: clips rendered.
        seed: their generator seed: ``np.random.default_rng([seed, i])`` for clip i.
        block: which block's attention.

    Returns:
        ``share``: the mean over the counted clips; ``clips``: how many counted; ``uniform``: the
        share of an even spread; ``block``; ``example``: ``(label, frames, follows)`` of the clip
        followed best among those the model classifies right (all of them if it gets none right,
        or has no class names to check against).
    """
    cfg = model.config
    right_names = cfg.class_names is not None and tuple(cfg.class_names) == TASKS["motion"]
    counted = []  # (classified right, share, (label, frames, follows)) of each clip whose square left the patch
    for video in range(num_clips):
        label = video % len(TASKS["motion"])
        frames = render("motion", label, cfg.num_frames, cfg.img_size, np.random.default_rng([seed, video]))
        clip = normalize(torch.from_numpy(frames).permute(3, 0, 1, 2)[None], cfg.mean, cfg.std)
        follows = divided_attention_follows(model, clip, frames, block=block)
        track, query_frame = follows["track"], follows["query"][0]
        moved = (track != track[query_frame]).any(1).numpy()
        if moved.any():
            share = float(np.mean(np.asarray(follows["on_object"])[moved]))
            right = right_names and int(np.argmax(follows["probabilities"])) == label
            counted.append((right, share, (label, frames, follows)))
    if not counted:
        raise ValueError(f"no square left its patch in {num_clips} clips: use more clips")
    example = max(counted, key=lambda c: (c[0], c[1]))[2]
    return {"share": statistics.fmean(c[1] for c in counted), "clips": len(counted), "uniform": example[2]["uniform"],
            "block": example[2]["block"], "example": example}


def following_summary(following: Mapping[str, dict]) -> dict:
    """``follows_moving_square`` of one or more networks (e.g. trained and untrained) in one plain dict:
    each network's ``share``, then the first one's ``uniform``, ``block`` and ``clips`` (notebook 05's
    ``results.json`` entry ``follows_square``).

    Args:
        following: network name -> its ``follows_moving_square`` result.
    """
    first = next(iter(following.values()))
    return {**{name: found["share"] for name, found in following.items()}, "uniform": first["uniform"],
            "block": first["block"], "clips": first["clips"]}


__all__ = [
    "tracked_temporal_attention", "object_frame_share", "map_peaks", "object_patches", "object_tracks", "moved_frames",
    "object_following", "following_findings", "following_table", "divided_attention_follows", "follows_moving_square",
    "following_summary",
]
