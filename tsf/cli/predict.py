"""`python -m tsf predict VIDEO... --checkpoint CKPT`: class probabilities per video, a timeline
over long ones (``--window``), or ``forward_features`` embeddings (``--features``).

A video that cannot be read (missing, damaged, truncated) is skipped with a warning naming it and
the reason, and the others are scored and written (``--json`` lists it last as
``{"video", "skipped": reason}``); the exit code is then 1. ``--strict`` stops at
the first bad video instead, before anything is written (exit code 2)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import add_checkpoint_flags, add_device_flags, add_sampling_flags, positive_int, sampling_from_flags

SOME_SKIPPED = 1  # exit code: results were written for the videos that could be read


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="video files")
    parser.add_argument("--checkpoint", required=True,
                        help="a run's best.pt, an official .pyth, a Hugging Face folder or a zoo name")
    parser.add_argument("--topk", type=positive_int, default=5, help="classes listed per video or window (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--window", type=_seconds, metavar="SECONDS",
                        help="a timeline: predict windows of this many seconds (one clip each) instead of the whole video")
    parser.add_argument("--stride", type=_seconds, metavar="SECONDS",
                        help="with --window: seconds between window starts (default: --window)")
    parser.add_argument("--features", type=Path, metavar="OUT.npy",
                        help="save the forward_features embeddings: (videos, D), or (windows of all videos in order, D)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --features file")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first video that cannot be read (default: skip it with a warning)")
    parser.add_argument("--temporal-clips", type=positive_int, default=1, help="whole-video mode: clips averaged (default 1)")
    parser.add_argument("--spatial-crops", type=positive_int, default=1,
                        help="whole-video mode: crops averaged (default 1; the paper's test: 3)")
    add_sampling_flags(parser)
    add_checkpoint_flags(parser)
    add_device_flags(parser)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def run(args: argparse.Namespace) -> int:
    if args.stride is not None and args.window is None:
        raise ValueError("--stride sets the step between --window windows: give --window SECONDS too")
    if args.window is not None and (args.temporal_clips, args.spatial_crops) != (1, 1):
        raise ValueError("--temporal-clips and --spatial-crops average views of a whole video; a --window "
                         "timeline scores one centre clip per window: drop one or the other")
    import numpy as np
    from tqdm.auto import tqdm

    from ..data import VideoReadError
    from ..evaluate import load_model
    from ..outputs import atomic_path, refuse_to_overwrite
    from ..prediction import predict, timeline

    if args.features is not None:
        refuse_to_overwrite([args.features], args.overwrite, "features")
    model, sampling = load_model(args.checkpoint, args.num_heads, args.trust_checkpoint)
    sampling = sampling_from_flags(sampling, args)
    results, skipped = [], []
    with model.fixed_weights():  # nothing edits the weights between videos: their caches are checked once
        for video in tqdm(args.videos, unit="video", desc="predict", disable=len(args.videos) < 2 or None):
            try:
                if not video.is_file():
                    raise VideoReadError(str(video), "missing", "no such file")
                if args.window is not None:
                    results.append((video, timeline(model, video, args.window, args.stride, args.topk, device=args.device,
                                                    precision=args.precision, progress=len(args.videos) == 1)))
                else:
                    results.append((video, [predict(model, video, args.topk, args.temporal_clips, args.spatial_crops,
                                                    device=args.device, precision=args.precision, **sampling)]))
            except VideoReadError as error:
                if args.strict:
                    raise ValueError(f"{error} (--strict: nothing was written)") from None
                print(f"tsf predict: warning: skipped {video}: {error.reason}", file=sys.stderr)
                skipped.append({"video": str(video), "reason": error.reason})
    if not results:
        raise ValueError(f"none of the {len(args.videos)} video(s) could be read; nothing was written")
    flat = [p for _, predictions in results for p in predictions]
    if args.features is not None:
        with atomic_path(args.features) as tmp:
            np.save(tmp, np.stack([p.features for p in flat]))
    if args.json:
        out, row = [], 0
        for video, predictions in results:
            dicts = [{**p.to_dict(), "feature_row": row + i} if args.features else p.to_dict()
                     for i, p in enumerate(predictions)]
            row += len(predictions)
            if args.window is not None:
                out.append({"video": str(video), "timeline": [{k: v for k, v in d.items() if k != "video"} for d in dicts]})
            else:
                out.append(dicts[0])
        out += [{"video": entry["video"], "skipped": entry["reason"]} for entry in skipped]
        print(json.dumps(out, indent=2))
    else:
        for p in flat:
            when = f" [{p.start:.2f}-{p.end:.2f} s]" if args.window is not None else ""
            print(f"{p.video}{when}: " + ", ".join(f"{name} {prob:.3f}" for name, prob in p.top))
        if args.features is not None:
            print(f"wrote {args.features} ({len(flat)} x {flat[0].features.shape[0]})")
    if skipped:
        print(f"tsf predict: {len(skipped)} of {len(args.videos)} video(s) skipped (see the warnings); results are "
              f"for the other {len(results)}", file=sys.stderr)
        return SOME_SKIPPED
    return 0
