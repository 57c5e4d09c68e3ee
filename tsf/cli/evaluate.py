"""`python -m tsf evaluate --checkpoint CKPT --data DIR`: the paper's multi-view protocol on a data folder.

Videos that cannot be read are left out of the metrics, named in a warning and in the summary's
``bad_video_reasons``, and the exit code is 1; above ``--max-bad-fraction`` of them the
evaluation stops (exit code 2)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import (add_checkpoint_flags, add_config_flags, add_device_flags, add_sampling_flags, apply_config,
                     data_location, positive_int, sampling_from_flags, temporal_clips_value)

SOME_LEFT_OUT = 1  # exit code: the results are written, but some videos could not be read

# defaults of the flags a --config file may also set (applied after it, so that flags > --set > file > these)
DEFAULTS = {"split": "val", "temporal_clips": 1, "spatial_crops": 3, "batch_size": 8, "num_workers": 2,
            "device": "auto", "precision": "auto", "max_bad_fraction": 0.05}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint",
                        help="a run's best.pt/last.pt, an official .pyth, a Hugging Face folder or a zoo name (required)")
    parser.add_argument("--data", type=data_location, help="data folder with <split>.csv and classes.txt, or shards: "
                        "their folder or a brace pattern of shard paths or URLs (required)")
    parser.add_argument("--split", help="which <split>.csv to evaluate (default: val)")
    parser.add_argument("--temporal-clips", type=temporal_clips_value, metavar="K|cover",
                        help="clips per video, evenly spaced (paper, Kinetics: 1; default 1), or cover: per video, as "
                             "many as cover it, ceil(length / clip span) (paper, HowTo100M long videos)")
    parser.add_argument("--spatial-crops", type=positive_int, help="crops per clip across the long side (paper: 3; default 3)")
    add_sampling_flags(parser)
    parser.add_argument("--batch-size", type=positive_int, help="clips per forward pass (default 8)")
    parser.add_argument("--num-workers", type=int, help="data-loading processes (default 2)")
    add_device_flags(parser, default=None)
    parser.add_argument("--max-bad-fraction", type=float,
                        help="videos that cannot be read are left out and reported; stop when more than this share "
                             "of them is bad (default 0.05)")
    add_checkpoint_flags(parser)
    parser.add_argument("--out", type=Path,
                        help="folder for eval_<split>_{summary.json,predictions.csv,confusion.csv} "
                             "(default: beside the checkpoint file, else the current folder)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace the eval_<split>_* files of an earlier evaluation in --out")
    add_config_flags(parser)


def run(args: argparse.Namespace) -> int:
    apply_config(args, "evaluate")
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.checkpoint is None or args.data is None:
        raise ValueError("give --checkpoint and --data (flags, --set or the --config file)")
    from ..evaluate import evaluate, load_model

    model, sampling = load_model(args.checkpoint, args.num_heads, args.trust_checkpoint)
    out = args.out or (Path(args.checkpoint).parent if Path(args.checkpoint).is_file() else Path("."))
    result = evaluate(model, args.data, split=args.split, temporal_clips=args.temporal_clips,
                      spatial_crops=args.spatial_crops, batch_size=args.batch_size, num_workers=args.num_workers,
                      device=args.device, precision=args.precision, out_dir=out, progress=not args.json,
                      max_bad_fraction=args.max_bad_fraction, overwrite=args.overwrite,
                      **sampling_from_flags(sampling, args))
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.checkpoint} on {args.data} ({args.split}): {summary['videos']} videos x "
              f"{summary['views_per_video']} views: top-1 {summary['top1']:.4f}, top-{summary['top5_k']} "
              f"{summary['top5']:.4f}, mean class accuracy {summary['mean_class_accuracy']:.4f}, loss {summary['loss']:.4f}")
        print(f"wrote {out / f'eval_{args.split}_summary.json'}, _predictions.csv, _confusion.csv")
    if result.bad_videos:  # the warning named them; the metrics are of the others
        print(f"tsf evaluate: {len(result.bad_videos)} video(s) could not be read and were left out of these metrics "
              f"(eval_{args.split}_summary.json: bad_video_reasons)", file=sys.stderr)
        return SOME_LEFT_OUT
    return 0
