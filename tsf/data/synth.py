"""The embedded default data: synthetic appearance and motion videos, written as H.264 ``.mp4``.

- ``appearance``: a square at a random place, drifting in a random direction; the class is its
  colour (red, green, blue, yellow). One frame is enough.
- ``motion``: a square of a random colour moving right, up-right, up or up-left (the class) at
  1-2 px per frame, wrapping around the frame edges, from a random start. Every frame of every
  class shows the same thing (one square somewhere, uniformly), so no single frame tells the
  class; a model that compares frames (divided or joint space-time attention) can read the
  direction. The motion is slow relative to an 8 px patch (at most a quarter of it per frame),
  which is what temporal attention over a patch's own sequence can see. One object to follow:
  the task the attention maps (``tsf.attention``, notebook 04) are drawn on.
- ``dots``: the same four directions, shown by a field of 20 small dots (3 px) that all move
  together (a random-dot kinematogram, the classic stimulus of motion perception). The task on
  which attention schemes are compared (notebook 05).

Why two motion tasks. The *set* of a ``motion`` clip's frames is not the same for every class:
the places the one square visits lie on a line along the class's axis, so space-only attention,
which averages the frames' features, reads the axis without comparing frames (measured with the
``tiny`` preset, 500 steps: 32-40% where chance is 25%). In a ``dots`` clip every frame is the
same kind of random field and the dots' paths are short, numerous and interchangeable, so the
average of the frames shows no line to read (space-only: 25.0-27.8% in six runs), while a
patch's own sequence of frames still shows the dots crossing it (divided attention: 88-98% in
500 steps over seeds, 92.5-97.8% in 700). A fair task by the other route, classes that share
their set of frames exactly (a direction and its reverse, or which frames a square is shown in),
is decided by the *order* of the frames alone; the ``tiny`` model trained from scratch learns
order only through its time embedding and stayed at chance on every such task we tried in the
budget (up/down/left/right: the axis learnt, the sign not, after 1,200 steps).

Nuisance variation: position, speed, the square's colour shade (appearance) or colour (motion,
dots), background brightness and tint, per-frame pixel noise. Everything is drawn from a generator
seeded by ``(seed, task, class, video)``, the same draws for every class, so a seed always gives
the same videos. Videos are encoded at a near-lossless quality (``crf 4``, yuv420p, High profile:
browsers play it) so that the decoded frames keep the 1-2 px steps.

Read the motion tasks with dense sampling at ``sampling_rate=1`` and without scale jitter (the
short side scaled to the crop size): a stride of 2 or more doubles the per-frame speed, and a
random rescale changes the speed and the objects' size. The default writes videos exactly as long
as the clip; longer videos (``frames=16``) give training random windows.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import OutputExistsError

PathLike = Union[str, os.PathLike]
TASKS: dict[str, tuple[str, ...]] = {
    "appearance": ("red", "green", "blue", "yellow"),
    "motion": ("right", "up-right", "up", "up-left"),
    "dots": ("right", "up-right", "up", "up-left"),
}
APPEARANCE_COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
MOTION_COLOURS = ((230, 60, 60), (60, 210, 80), (70, 100, 240), (235, 215, 60), (230, 230, 230), (220, 80, 220))
# unit steps (dx, dy), y pointing down; 45 degrees apart and none the reverse of another
DIRECTIONS = {"right": (1.0, 0.0), "up-right": (0.5**0.5, -(0.5**0.5)), "up": (0.0, -1.0),
              "up-left": (-(0.5**0.5), -(0.5**0.5))}
DEFAULTS = {"videos_per_class": 80, "frames": 8, "size": 32, "seed": 0, "val_fraction": 0.2}
NUM_DOTS = 20  # dots per frame of the ``dots`` task (3 px each at 32 px: ~18% of the frame)
FPS = 8
CRF = 4
MARKER = "synth.json"  # written first as {"complete": false}, last with the parameters: tsf made this folder


def default_root() -> Path:
    """``data/synthetic`` of the source checkout tsf runs from, else ``./data/synthetic``."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "data").is_dir():
        return checkout / "data" / "synthetic"
    return Path("data") / "synthetic"


def render(task: str, label: int, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic video as uint8 RGB ``(frames, size, size, 3)``.

    Args:
        task: ``"appearance"``, ``"motion"`` or ``"dots"``.
        label: class id, an index into ``TASKS[task]``.
        frames: frames in the video.
        size: side of the square frames in pixels.
        rng: the video's generator (all its nuisance variation comes from it).
    """
    name = TASKS[task][label]
    # 20 dots of 3 px, or the one 7 px square of the measured 32 px task
    count, side = (NUM_DOTS, max(2, round(size * 3 / 32))) if task == "dots" else (1, max(3, round(size * 7 / 32)))
    starts = rng.uniform(0, size, (count, 2))
    if task == "appearance":
        colours = np.array(APPEARANCE_COLOURS[name]) + rng.uniform(-25, 25, (1, 3))
        angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0, 2)
        step = (speed * np.cos(angle), speed * np.sin(angle))
    else:
        colours = np.array(MOTION_COLOURS)[rng.integers(len(MOTION_COLOURS), size=count)] + rng.uniform(-20, 20, (count, 3))
        speed = rng.uniform(1, 2)
        step = (speed * DIRECTIONS[name][0], speed * DIRECTIONS[name][1])
    colours = np.clip(colours, 0, 255)
    background = rng.uniform(20, 90) + rng.uniform(-10, 10, 3)
    noise = rng.uniform(2, 8)
    times = np.arange(frames)[:, None]
    # (T, objects, size): how much each object covers of every row and column, in every frame
    rows = _coverage(starts[:, 1] + times * step[1], side, size)
    cols = _coverage(starts[:, 0] + times * step[0], side, size)
    video = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        frame = np.broadcast_to(background, (size, size, 3))
        for i, colour in enumerate(colours):  # later dots cover earlier ones
            mask = np.outer(rows[t, i], cols[t, i])[..., None]
            frame = frame * (1 - mask) + colour * mask
        video[t] = np.clip(np.round(frame + rng.normal(0, noise, (size, size, 3))), 0, 255)
    return video


def _coverage(position, side: int, size: int) -> np.ndarray:
    """How much of each pixel ``[j, j + 1)`` the interval ``[position, position + side)`` covers
    on a circle of ``size`` pixels (the frame wraps around: toroidal motion, antialiased edges).
    ``position`` may be an array: the result has its shape plus a last axis of ``size``."""
    start = (np.asarray(position, dtype=np.float64) % size)[..., None]
    pixels = np.arange(size)
    covered = np.zeros(start.shape[:-1] + (size,))
    for wrap in (-size, 0, size):
        covered += np.clip(np.minimum(pixels + 1, start + side + wrap) - np.maximum(pixels, start + wrap), 0, 1)
    return covered


def write_video(path: PathLike, frames: np.ndarray, fps: int = FPS, crf: int = CRF) -> None:
    """uint8 RGB ``(T, H, W, 3)`` (even H and W) to an H.264 ``.mp4`` (libx264, yuv420p, one thread).

    Args:
        path: the file to write.
        frames: the video.
        fps: frames per second.
        crf: x264 quality (0: lossless, needs a High 4:4:4 decoder; 4: visually lossless, plays everywhere).
    """
    import av

    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"{path}: frames are {width}x{height}; H.264 in yuv420p needs even sizes")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "threads": "1", "preset": "medium"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def generate(task: str, out_dir: Optional[PathLike] = None, videos_per_class: int = DEFAULTS["videos_per_class"],
             frames: int = DEFAULTS["frames"], size: int = DEFAULTS["size"], seed: int = DEFAULTS["seed"],
             val_fraction: float = DEFAULTS["val_fraction"], overwrite: bool = False) -> Path:
    """Write a synthetic task: ``train/<class>/*.mp4``, ``val/<class>/*.mp4``, ``train.csv``,
    ``val.csv`` (``path,label``, labels by name, paths relative to the folder), ``classes.txt``,
    and last ``synth.json`` with the parameters.

    Args:
        task: ``"appearance"``, ``"motion"`` or ``"dots"``.
        out_dir: the folder (default ``<data root>/synthetic/<task>``, see ``default_root``).
        videos_per_class: videos per class, train and val together.
        frames: frames per video (8 = the default clip; longer videos give dense sampling room).
        size: side of the square frames, even, at least 16.
        seed: the same seed writes the same videos.
        val_fraction: share of each class written to val.
        overwrite: replace what the folder holds (its ``train``/``val`` folders, CSVs and class
            list); otherwise a folder that is not empty is refused.

    Returns:
        The folder.

    Raises:
        OutputExistsError: ``out_dir`` is not empty and ``overwrite`` is False.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r}: use one of {', '.join(TASKS)}")
    if size < 16 or size % 2:
        raise ValueError(f"size={size}: use an even size of at least 16 (H.264 in yuv420p needs even sizes)")
    if frames < 2 or videos_per_class < 2 or seed < 0:
        raise ValueError(f"frames={frames}, videos_per_class={videos_per_class}, seed={seed}: use frames >= 2, "
                         f"videos_per_class >= 2 (one for val), seed >= 0")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction}: use a fraction in (0, 1)")
    out = Path(out_dir) if out_dir is not None else default_root() / task
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out} is not empty ({', '.join(sorted(p.name for p in out.iterdir())[:6])}); "
                                f"nothing was written. Choose another --out, or pass --overwrite to replace its "
                                f"train/, val/, train.csv, val.csv and classes.txt")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"task": task, "complete": False}) + "\n", encoding="utf-8")
    classes = TASKS[task]
    num_val = min(max(1, round(videos_per_class * val_fraction)), videos_per_class - 1)
    rows: dict[str, list[str]] = {"train": [], "val": []}
    for split in rows:
        shutil.rmtree(out / split, ignore_errors=True)
    for label, name in enumerate(classes):
        for split in rows:
            (out / split / name).mkdir(parents=True)
        for i in range(videos_per_class):
            split = "train" if i < videos_per_class - num_val else "val"
            rng = np.random.default_rng([seed, list(TASKS).index(task), label, i])
            relative = f"{split}/{name}/{i:04d}.mp4"
            write_video(out / relative, render(task, label, frames, size, rng))
            rows[split].append(f"{relative},{name}\n")
    for split, lines in rows.items():
        (out / f"{split}.csv").write_text("path,label\n" + "".join(lines), encoding="utf-8")
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")
    parameters = {"task": task, "classes": list(classes), "videos_per_class": videos_per_class, "frames": frames,
                  "size": size, "seed": seed, "val_fraction": val_fraction, "fps": FPS, "crf": CRF}
    (out / MARKER).write_text(json.dumps(parameters, indent=2) + "\n", encoding="utf-8")
    return out


def ensure_synthetic(task: str, root: Optional[PathLike] = None, **parameters) -> Path:
    """The synthetic task's folder, generated only if it is absent, incomplete (an interrupted
    generation leaves ``synth.json`` saying so) or made with other parameters or classes. A
    folder without ``synth.json`` is not tsf's and is never replaced (``OutputExistsError``).

    Args:
        task: ``"appearance"``, ``"motion"`` or ``"dots"``.
        root: folder holding one subfolder per task (default: ``default_root()``, i.e. the
            checkout's ``data/synthetic``).
        **parameters: ``generate``'s ``videos_per_class``, ``frames``, ``size``, ``seed``, ``val_fraction``.

    Returns:
        ``root/task``.
    """
    unknown = set(parameters) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"ensure_synthetic got unknown parameters {sorted(unknown)}; use {sorted(DEFAULTS)}")
    out = Path(root if root is not None else default_root()) / task
    wanted = {**DEFAULTS, **parameters}
    marker = out / MARKER
    if not marker.is_file():  # absent, or a folder tsf did not make: generate refuses to replace that
        return generate(task, out, **wanted)
    written = json.loads(marker.read_text(encoding="utf-8"))
    # the classes too: a folder written by an older version of the task is regenerated
    same_task = written.get("task") == task and written.get("classes") == list(TASKS[task])
    if same_task and all(written.get(k) == v for k, v in wanted.items()):
        return out
    return generate(task, out, **wanted, overwrite=True)  # tsf's own data (its marker says so), regenerable
