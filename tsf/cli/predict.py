"""`python -m tsf predict VIDEO... --checkpoint CKPT`: class probabilities per video, a timeline
over long ones (``--window``), or ``forward_features`` embeddings (``--features``)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import add_device_flags, add_sampling_flags, sampling_from_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="video files")
    parser.add_argument("--checkpoint", required=True,
                        help="a run's best.pt, an official .pyth, a Hugging Face folder or a zoo name")
    parser.add_argument("--topk", type=int, default=5, help="classes listed per video or window (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--window", type=float, metavar="SECONDS",
                        help="a timeline: predict windows of this many seconds (one clip each) instead of the whole video")
    parser.add_argument("--stride", type=float, metavar="SECONDS", help="seconds between window starts (default: --window)")
    parser.add_argument("--features", type=Path, metavar="OUT.npy",
                        help="save the forward_features embeddings: (videos, D), or (windows of all videos in order, D)")
    parser.add_argument("--temporal-clips", type=int, default=1, help="whole-video mode: clips averaged (default 1)")
    parser.add_argument("--spatial-crops", type=int, default=1, help="whole-video mode: crops averaged (default 1; the paper's test: 3)")
    add_sampling_flags(parser)
    parser.add_argument("--num-heads", type=int, help="attention heads of a checkpoint whose heads are not 64 wide")
    add_device_flags(parser)


def run(args: argparse.Namespace) -> int:
    missing = [str(v) for v in args.videos if not v.exists()]
    if missing:
        print(f"tsf predict: no such video file: {', '.join(missing)}", file=sys.stderr)
        return 2
    from ..data import VideoReadError
    from ..evaluate import load_model
    import numpy as np

    from ..prediction import predict, timeline

    try:
        model, sampling = load_model(args.checkpoint, args.num_heads)
        sampling = sampling_from_flags(sampling, args)
        results = []
        for video in args.videos:
            if args.window is not None:
                results.append(timeline(model, video, args.window, args.stride, args.topk, device=args.device,
                                        precision=args.precision))
            else:
                results.append(predict(model, video, args.topk, args.temporal_clips, args.spatial_crops,
                                       device=args.device, precision=args.precision, **sampling))
    except (ValueError, FileNotFoundError, VideoReadError) as error:
        print(f"tsf predict: {error}", file=sys.stderr)
        return 2
    flat = [p for r in results for p in (r if isinstance(r, list) else [r])]
    if args.features is not None:
        args.features.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.features, np.stack([p.features for p in flat]))
    if args.json:
        out, row = [], 0
        for video, result in zip(args.videos, results):
            entries = result if isinstance(result, list) else [result]
            dicts = [{**p.to_dict(), "feature_row": row + i} if args.features else p.to_dict() for i, p in enumerate(entries)]
            row += len(entries)
            if args.window is not None:
                out.append({"video": str(video), "timeline": [{k: v for k, v in d.items() if k != "video"} for d in dicts]})
            else:
                out.append(dicts[0])
        print(json.dumps(out, indent=2))
    else:
        for p in flat:
            when = f" [{p.start:.2f}-{p.end:.2f} s]" if args.window is not None else ""
            print(f"{p.video}{when}: " + ", ".join(f"{name} {prob:.3f}" for name, prob in p.top))
        if args.features is not None:
            print(f"wrote {args.features} ({len(flat)} x {flat[0].features.shape[0]})")
    return 0
