"""Pre-flight check of a manifest: open every video, count its frames, decode a clip.

The checks run in worker processes, so a decoder that crashes on a damaged file takes down only
its worker: the pool is then replaced and the remaining files are checked one process each, which
pins the crash on its file (reported as unreadable) instead of ending the check.
"""
from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..outputs import atomic_write_text, refuse_to_overwrite
from .manifest import Manifest, VideoSample, read_manifest
from .splits import write_csv
from .dataset import usable_frames
from .readers import VideoReadError, open_video

PathLike = Union[str, os.PathLike]
STATUSES = ("ok", "missing", "unreadable", "zero_frames", "too_short", "bad_label", "malformed")
ISOLATED_TIMEOUT_S = 300


def check_video(sample: VideoSample, num_frames: int = 8, reader: str = "auto") -> dict:
    """Open one video, count its frames and decode a clip spread over all of them (first and last
    frame included, which catches truncated files).

    Args:
        sample: the video.
        num_frames: frames a clip needs; fewer is ``too_short``.
        reader: ``"auto"``, ``"decord"``, ``"torchcodec"`` or ``"pyav"``.

    Returns:
        ``{"path", "status", "reason"}``, plus ``frames``, ``fps``, ``width``, ``height`` when it opened.
    """
    result = {"path": sample.path, "status": "ok", "reason": ""}
    try:
        with open_video(sample.path, reader, frames=sample.frames) as video:
            info = video.info
            result.update(frames=info.num_frames, fps=info.fps, width=info.width, height=info.height)
            first, length = usable_frames(video, sample, num_frames)
            indices = np.linspace(first, first + length - 1, num_frames).round().astype(int).tolist()
            video.read(indices)
    except VideoReadError as error:
        result.update(status=error.kind, reason=error.reason)
    return result


def check_manifest(manifest: Union[PathLike, Manifest], classes: Optional[Sequence[str]] = None, num_frames: int = 8,
                   reader: str = "auto", workers: Optional[int] = None, progress: bool = True,
                   report: Optional[PathLike] = None, write_clean: Optional[PathLike] = None,
                   overwrite: bool = False) -> dict:
    """Check every row of a manifest: labels, files, frame counts, one decoded clip each.

    Args:
        manifest: a manifest path (any format ``read_manifest`` reads; its bad rows are reported,
            not raised) or a ``Manifest``.
        classes: class names in id order (default: as ``read_manifest``).
        num_frames: frames a clip needs; videos with fewer are ``too_short``.
        reader: ``"auto"``, ``"decord"``, ``"torchcodec"`` or ``"pyav"``.
        workers: checking processes (default: all cores).
        progress: show a progress bar (stderr).
        report: write the report as JSON here.
        write_clean: write the good rows here as a ``path,label[,start,end]`` CSV.
        overwrite: replace ``report`` / ``write_clean`` files that exist (otherwise refused before any work).

    Returns:
        ``{"manifest", "ok": n, "bad": n, "counts": {status: n}, "files": [{"path", "status",
        "reason", "where", ...}]}``: the rows that are not samples (bad label, malformed) first, then
        the videos in manifest order; ``status`` is ``"ok"`` or one of missing, unreadable,
        zero_frames, too_short, bad_label, malformed; ``where`` is the manifest's file and line.
    """
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, classes=classes, errors="collect")
    if write_clean is not None and Path(write_clean).resolve() == Path(str(manifest.source)).resolve():
        raise ValueError(f"--write-clean {write_clean} is the manifest being checked: write the good rows elsewhere")
    refuse_to_overwrite([p for p in (report, write_clean) if p is not None], overwrite, "check outputs")
    results = _check_all(manifest.samples, num_frames, reader, workers or os.cpu_count() or 1, progress)
    files = [{"path": p.path, "status": p.status, "reason": p.reason, "where": p.where} for p in manifest.problems]
    for sample, result in zip(manifest.samples, results):
        where = f"{manifest.source}:{sample.line}" if sample.line is not None else str(manifest.source)
        files.append({**result, "where": where})
    counts = {status: sum(f["status"] == status for f in files) for status in STATUSES}
    summary = {"manifest": str(manifest.source), "ok": counts["ok"], "bad": len(files) - counts["ok"],
               "counts": counts, "files": files}
    if report is not None:
        atomic_write_text(report, json.dumps(summary, indent=2) + "\n")
    if write_clean is not None:
        good = [s for s, r in zip(manifest.samples, results) if r["status"] == "ok"]
        if any(s.frames is not None for s in good):
            raise ValueError(f"{manifest.source} is an SSv2 frame list; --write-clean writes video files only")
        write_csv(write_clean, good, manifest.classes)
    return summary


def _check_all(samples: Sequence[VideoSample], num_frames: int, reader: str, workers: int, progress: bool) -> list[dict]:
    from tqdm.auto import tqdm

    results: list[Optional[dict]] = [None] * len(samples)
    bar = tqdm(total=len(samples), unit="video", desc="check", disable=not progress, dynamic_ncols=True)
    try:
        with ProcessPoolExecutor(max_workers=min(workers, max(len(samples), 1))) as pool:
            futures = {pool.submit(check_video, s, num_frames, reader): i for i, s in enumerate(samples)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    except BrokenProcessPool:
        remaining = [i for i, r in enumerate(results) if r is None]
        bar.set_description("check (a decoder crashed: one process per video)")
        for i, result in zip(remaining, _check_isolated([samples[i] for i in remaining], num_frames, reader, workers)):
            results[i] = result
            bar.update()
    finally:
        bar.close()
    return results


def _check_isolated(samples: Sequence[VideoSample], num_frames: int, reader: str, workers: int):
    """``check_video`` of each sample in a process of its own, ``workers`` at a time (yields in order)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as threads:
        yield from threads.map(lambda sample: _check_in_own_process(sample, num_frames, reader), samples)


def _check_in_own_process(sample: VideoSample, num_frames: int, reader: str) -> dict:
    context = multiprocessing.get_context()
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_send_check, args=(send, sample, num_frames, reader), daemon=True)
    process.start()
    send.close()
    try:
        if receive.poll(ISOLATED_TIMEOUT_S):
            return receive.recv()
    except EOFError:  # the process died before sending
        pass
    finally:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
        receive.close()
    how = f"exit code {process.exitcode}" if process.exitcode is not None else "no answer"
    return {"path": sample.path, "status": "unreadable",
            "reason": f"the decoder crashed or hung on it ({how}; limit {ISOLATED_TIMEOUT_S} s)"}


def _send_check(connection, sample: VideoSample, num_frames: int, reader: str) -> None:
    connection.send(check_video(sample, num_frames, reader))
    connection.close()
