"""Attention overlays (PNG strips, GIF and MP4 animations) and an ipywidgets explorer: thin views over
``tsf.attention``.

Maps ``(T, h, w)`` are upsampled bilinearly onto the frames they were computed from, normalised to
[0, 1] over the whole strip (so that frames compare with one another; each strip of a multi-row figure
is normalised on its own) or, with ``per_frame=True``, frame by frame (to see where each frame's peak
is when one frame holds most of the weight, as in the rollout of a patch), coloured and blended with
the frames.
"""
from __future__ import annotations

import functools
import html
import io
from pathlib import Path
from typing import Optional, Sequence, Union

import av
import ipywidgets as widgets
import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from .attention import MAP_KINDS, QUERY_KINDS, attention_map, averages_heads, record_attention
from .model import TimeSformer

ArrayLike = Union[np.ndarray, torch.Tensor]
PathLike = Union[str, Path]


def _frames_array(frames: ArrayLike) -> np.ndarray:
    frames = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3); got {frames.dtype} of shape {frames.shape}")
    return frames


def upsample_maps(maps: ArrayLike, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of maps ``(T, h, w)`` to ``(T, H, W)`` float32.

    Args:
        maps: one map per frame.
        size: (H, W) in pixels.
    """
    maps = torch.as_tensor(maps).detach().float().cpu()
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def overlay_frames(
    frames: ArrayLike, maps: ArrayLike, alpha: float = 0.5, cmap: str = "jet", per_frame: bool = False
) -> np.ndarray:
    """The frames with their maps blended on top, normalised over the whole strip or frame by frame.

    Args:
        frames: uint8 ``(T, H, W, 3)``.
        maps: ``(T, h, w)``, any grid (upsampled to H x W).
        alpha: opacity of the heat map.
        cmap: matplotlib colormap name.
        per_frame: normalise each frame's map on its own rather than the strip's together.

    Returns:
        uint8 ``(T, H, W, 3)``.
    """
    frames = _frames_array(frames)
    shape = tuple(torch.as_tensor(maps).shape)
    if len(shape) != 3 or shape[0] != len(frames):
        raise ValueError(f"maps must be (T, h, w) with T = {len(frames)} frames; got shape {shape}")
    heat = upsample_maps(maps, frames.shape[1:3])
    axes = (1, 2) if per_frame else None
    low, span = heat.min(axis=axes, keepdims=True), np.ptp(heat, axis=axes, keepdims=True)
    heat = np.divide(heat - low, span, out=np.zeros_like(heat), where=span > 0)  # a flat map: all 0
    colours = matplotlib.colormaps[cmap](heat)[..., :3] * 255.0
    return ((1.0 - alpha) * frames + alpha * colours).round().astype(np.uint8)


def overlay_strip(
    frames: ArrayLike,
    maps: ArrayLike,
    row_labels: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    mark_patch: Optional[tuple[int, int, int]] = None,
    track: Optional[ArrayLike] = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    per_frame: bool = False,
    panel_inches: float = 1.6,
) -> Figure:
    """A figure of the frames side by side with the maps overlaid: one strip, or one per block or head.

    Args:
        frames: uint8 ``(T, H, W, 3)``.
        maps: ``(T, h, w)`` for one strip, ``(rows, T, h, w)`` for several (each normalised on its own).
        row_labels: a label per strip, e.g. ``["block 0", "block 1"]``.
        title: figure title.
        mark_patch: (frame, row, col) of a patch to outline (solid white), e.g. the query of a temporal map.
        track: ``(T, 2)`` (row, col) of one patch per frame to outline (dashed black), e.g. where the
            object is (``tsf.following.object_patches``), so that a map can be seen following it.
        alpha: opacity of the heat maps.
        cmap: matplotlib colormap name.
        per_frame: normalise every frame's map on its own (``overlay_frames``).
        panel_inches: size of one frame's panel.
    """
    frames = _frames_array(frames)
    maps = torch.as_tensor(maps)
    strips = maps[None] if maps.ndim == 3 else maps
    rows, num_frames = strips.shape[:2]
    if track is not None and len(track) != num_frames:
        raise ValueError(f"track must give one (row, col) per frame, {num_frames}; got {len(track)}")
    figsize = (panel_inches * num_frames, panel_inches * rows + (0.4 if title else 0.0))
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(rows, num_frames, squeeze=False)
    for r, strip in enumerate(strips):
        for t, image in enumerate(overlay_frames(frames, strip, alpha, cmap, per_frame)):
            axes[r, t].imshow(image)
            axes[r, t].set_xticks([])
            axes[r, t].set_yticks([])
            if r == 0:
                axes[r, t].set_title(f"t = {t}", fontsize=9)
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
    cell_h, cell_w = frames.shape[1] / strips.shape[-2], frames.shape[2] / strips.shape[-1]
    outlines = [] if track is None else [(t, row, col, "black", "--") for t, (row, col) in enumerate(np.asarray(track))]
    if mark_patch is not None:
        outlines.append((*mark_patch, "white", "-"))
    for r in range(rows):
        for frame, row, col, colour, style in outlines:
            # imshow puts pixel centres on integers, so pixel edges are at -0.5
            corner = (col * cell_w - 0.5, row * cell_h - 0.5)
            axes[r, frame].add_patch(
                Rectangle(corner, cell_w, cell_h, fill=False, edgecolor=colour, linestyle=style, linewidth=1.5)
            )
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def temporal_attention_figure(
    matrices: ArrayLike, labels: Sequence[str], title: Optional[str] = None, panel_inches: float = 2.2
) -> Figure:
    """Temporal attention matrices side by side on one colour scale (0 to the largest weight shown).

    Args:
        matrices: ``(panels, T, T)``; row t of a panel is how the query at frame t spreads its attention
            over the T frames, e.g. ``tsf.attention.patch_temporal_attention(...)[0].mean(0)`` per block.
        labels: a title per panel.
        title: figure title.
        panel_inches: size of one panel.
    """
    matrices = torch.as_tensor(matrices).detach().float().cpu()
    if matrices.ndim != 3 or matrices.shape[1] != matrices.shape[2] or len(labels) != len(matrices):
        raise ValueError(f"expected (panels, T, T) matrices and a label per panel; got shape "
                         f"{tuple(matrices.shape)} and {len(labels)} labels")
    figsize = (panel_inches * len(matrices) + 0.8, panel_inches + (0.4 if title else 0.0))  # + the colour bar
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    top = float(matrices.max())
    for ax, matrix, label in zip(axes, matrices, labels):
        image = ax.imshow(matrix.numpy(), cmap="viridis", vmin=0.0, vmax=top)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("key frame", fontsize=8)
        ax.set_ylabel("query frame", fontsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="attention")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def save_overlay_png(path: PathLike, frames: ArrayLike, maps: ArrayLike, dpi: int = 100, **strip_options) -> Path:
    """Save ``overlay_strip(frames, maps, **strip_options)`` as a PNG.

    Args:
        path: output file.
        frames: uint8 ``(T, H, W, 3)``.
        maps: ``(T, h, w)`` or ``(rows, T, h, w)``.
        dpi: resolution.
        **strip_options: ``overlay_strip`` options (row_labels, title, mark_patch, track, alpha, cmap, per_frame,
            panel_inches).
    """
    path = Path(path)
    overlay_strip(frames, maps, **strip_options).savefig(path, format="png", dpi=dpi)
    return path


def save_overlay_gif(
    path: PathLike, frames: ArrayLike, maps: ArrayLike, fps: float = 4.0, alpha: float = 0.5, cmap: str = "jet",
    per_frame: bool = False,
) -> Path:
    """Save the overlaid frames as a looping animated GIF.

    Args:
        path: output file.
        frames: uint8 ``(T, H, W, 3)``.
        maps: ``(T, h, w)``.
        fps: frames per second.
        alpha: opacity of the heat map.
        cmap: matplotlib colormap name.
        per_frame: normalise every frame's map on its own (``overlay_frames``).
    """
    path = Path(path)
    images = [Image.fromarray(image) for image in overlay_frames(frames, maps, alpha, cmap, per_frame)]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


def save_overlay_mp4(
    path: PathLike, frames: ArrayLike, maps: ArrayLike, fps: int = 4, alpha: float = 0.5, cmap: str = "jet",
    per_frame: bool = False,
) -> Path:
    """Save the overlaid frames as an H.264 MP4 (odd sizes are padded by one edge pixel: yuv420p needs even).

    Args:
        path: output file.
        frames: uint8 ``(T, H, W, 3)``.
        maps: ``(T, h, w)``.
        fps: frames per second.
        alpha: opacity of the heat map.
        cmap: matplotlib colormap name.
        per_frame: normalise every frame's map on its own (``overlay_frames``).
    """
    path = Path(path)
    images = overlay_frames(frames, maps, alpha, cmap, per_frame)
    _, height, width, _ = images.shape
    images = np.pad(images, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = images.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}  # heat-map colours band badly at the default quality
        for image in images:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def _png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def attention_explorer(
    model: TimeSformer,
    clips: dict[str, tuple[torch.Tensor, ArrayLike]],
    alpha: float = 0.5,
    cmap: str = "jet",
) -> widgets.VBox:
    """An interactive explorer: choose video, map kind, block, head, query frame and patch, and whether the
    colours scale per frame or over the strip; the overlay strip follows. Each video is run through the
    model once, when first shown.

    Map kinds are those of ``tsf.attention.attention_map``: cls, rollout (through blocks 0..block),
    temporal (divided models; the query patch's attention across frames), patch (where the query
    patch looks in space and time in the block) and patch_rollout (where it draws from through blocks
    0..block). Controls that a kind does not use are disabled.

    Args:
        model: the TimeSformer, in eval mode.
        clips: name -> (normalised clip ``(1, 3, T, H, W)``, its frames for display uint8 ``(T, H', W', 3)``;
            any display size, the maps are upsampled onto it).
        alpha: opacity of the heat maps.
        cmap: matplotlib colormap name.

    Returns:
        The explorer; display it as a notebook cell's last expression.
    """
    if not clips:
        raise ValueError("attention_explorer needs at least one clip")
    cfg = model.config
    divided = cfg.attention_type == "divided_space_time"
    depth = len(model.blocks)
    # one label width, wider than ipywidgets' 80 px (which cuts "query frame"), so the columns line up; and a
    # tooltip on every control (without one a browser shows "null" over the sliders' labels)
    label = {"style": {"description_width": "7.5em"}}
    video = widgets.Dropdown(options=list(clips), description="video", tooltip="the clip shown", **label)
    kind = widgets.Dropdown(options=[k for k in MAP_KINDS if divided or k != "temporal"], description="map",
                            tooltip="cls, rollout (blocks 0..block), temporal, patch, patch_rollout", **label)
    block = widgets.IntSlider(value=depth - 1, min=0, max=depth - 1, description="block",
                              tooltip="the block shown (rollouts: through blocks 0..block)", **label)
    head = widgets.Dropdown(options=["mean", *map(str, range(cfg.num_heads))], description="head",
                            tooltip="one head, or their mean (maps that average heads disable it)", **label)
    frame = widgets.IntSlider(min=0, max=0, description="query frame", tooltip="the query patch's frame", **label)
    row = widgets.IntSlider(min=0, max=0, description="patch row", tooltip="the query patch's row", **label)
    col = widgets.IntSlider(min=0, max=0, description="patch col", tooltip="the query patch's column", **label)
    per_frame = widgets.Checkbox(value=False, description="scale per frame", indent=False,
                                 tooltip="colours scaled frame by frame, else over the whole strip")
    caption = widgets.HTML()
    image = widgets.Image(format="png")

    @functools.lru_cache(maxsize=None)
    def recording(name: str):
        clip = clips[name][0].to(model.cls_token.device)
        with torch.no_grad(), record_attention(model) as rec:
            output = model(clip)
        if cfg.num_classes:
            probs = output.softmax(-1)[0]
            label = int(probs.argmax())
            name_of_label = cfg.class_names[label] if cfg.class_names else f"class {label}"
            prediction = f"prediction: <b>{html.escape(name_of_label)}</b> (p = {probs[label]:.2f})"
        else:
            prediction = "feature extractor (no classifier head)"
        return rec, prediction

    # rollout and maps of big models take a moment; controls a kind ignores are keyed out
    @functools.lru_cache(maxsize=128)
    def cached_map(name: str, map_kind: str, block_index: int, head_index: Optional[int], query: tuple[int, int, int]):
        q_frame, q_row, q_col = query
        return attention_map(recording(name)[0], map_kind, block_index, head_index, (q_row, q_col), q_frame)

    def redraw(change=None) -> None:
        queried = kind.value in QUERY_KINDS
        for control in (frame, row, col):
            control.disabled = not queried
        head.disabled = averages_heads(kind.value, cfg.attention_type)
        head_index = None if head.disabled or head.value == "mean" else int(head.value)
        query = (frame.value, row.value, col.value) if queried else (0, 0, 0)
        maps = cached_map(video.value, kind.value, block.value, head_index, query)
        descriptions = {
            "cls": "class-token attention",
            "rollout": f"class-token rollout, blocks 0-{block.value}",
            "temporal": f"temporal attention of patch ({row.value}, {col.value}) at t = {frame.value}",
            "patch": f"where patch ({row.value}, {col.value}) at t = {frame.value} looks",
            "patch_rollout": f"rollout of patch ({row.value}, {col.value}) at t = {frame.value}, "
                             f"blocks 0-{block.value}",
        }
        title = f"{video.value} | block {block.value} | head {'mean' if head_index is None else head_index}"
        fig = overlay_strip(
            clips[video.value][1], maps, title=f"{title} | {descriptions[kind.value]}",
            mark_patch=query if queried else None, alpha=alpha, cmap=cmap, per_frame=per_frame.value,
        )
        image.value = _png_bytes(fig)
        caption.value = recording(video.value)[1]

    def change_video(change=None) -> None:
        rec, _ = recording(video.value)
        # clips of other sizes have other grids and frame counts
        frame.max, row.max, col.max = rec.num_frames - 1, rec.grid[0] - 1, rec.grid[1] - 1
        redraw()

    video.observe(change_video, names="value")
    for control in (kind, block, head, frame, row, col, per_frame):
        control.observe(redraw, names="value")
    change_video()
    return widgets.VBox([
        widgets.HBox([video, kind, head]),
        widgets.HBox([block, frame]),
        widgets.HBox([row, col, per_frame]),
        caption,
        image,
    ])


__all__ = [
    "upsample_maps", "overlay_frames", "overlay_strip", "temporal_attention_figure", "save_overlay_png",
    "save_overlay_gif", "save_overlay_mp4", "attention_explorer",
]
