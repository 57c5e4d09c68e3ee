"""`python -m tsf data {manifest,check,synth,bench,readers,shard}`: build manifests, pre-flight check videos,
generate the synthetic data, measure loading throughput, compare the video readers, write WebDataset shards."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..data.readers import BACKENDS, READERS
from ..data.synth import TASKS
from .common import add_debug_flag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="{manifest,check,synth,bench,readers,shard}", required=True)

    manifest = sub.add_parser("manifest", help="stratified train/val CSVs and classes.txt from ROOT/<class>/<video>",
                              description="Write train.csv, val.csv (path,label; paths relative to --out) and classes.txt "
                                          "from a folder-per-class tree, holding out --val-fraction of each class.")
    manifest.add_argument("root", type=Path, help="folder with one subfolder of videos per class")
    manifest.add_argument("--out", type=Path, required=True, help="where train.csv, val.csv and classes.txt go")
    manifest.add_argument("--val-fraction", type=float, default=0.2, help="share of each class in val (default: 0.2)")
    manifest.add_argument("--seed", type=int, default=0, help="shuffling seed (default: 0)")
    manifest.add_argument("--overwrite", action="store_true", help="replace train.csv, val.csv and classes.txt in --out")

    check = sub.add_parser("check", help="open every video of a manifest, count frames, decode a clip; report the bad ones",
                           description="Pre-flight check: every row is opened, its frames counted and a clip decoded. "
                                       "Exit code 0 when all are good, 1 when some are bad (or there are none), 2 when the "
                                       "manifest cannot be read.")
    check.add_argument("manifest", type=Path, help="CSV (path,label[,start,end]), Kinetics `path label_id` file, "
                                                   "SSv2 split file or folder-per-class root")
    check.add_argument("--classes", type=Path, help="class list (default: classes.txt beside the manifest)")
    check.add_argument("--num-frames", type=int, default=8, help="frames a clip needs; fewer is too short (default: 8)")
    check.add_argument("--reader", choices=READERS, default="auto", help="video decoder (default: auto)")
    check.add_argument("--workers", type=int, help="checking processes (default: all cores)")
    check.add_argument("--report", type=Path, help="write the JSON report here")
    check.add_argument("--write-clean", type=Path, metavar="CSV", help="write the good rows here as path,label[,start,end]")
    check.add_argument("--overwrite", action="store_true", help="replace existing --report / --write-clean files")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")

    synth = sub.add_parser("synth", help="write the synthetic appearance, motion or dots videos (H.264 .mp4 + CSVs)",
                           description="Synthetic videos: 'appearance' (class = colour of a square), 'motion' "
                                       "(class = direction a square moves; every frame looks alike across classes) or "
                                       "'dots' (class = direction a field of dots moves: the fair task for comparing "
                                       "attention schemes, see tsf.data.synth).")
    synth.add_argument("--task", choices=TASKS, required=True, help="which task")
    synth.add_argument("--out", type=Path, help="folder to write (default: data/synthetic/<task> of the checkout)")
    synth.add_argument("--videos-per-class", type=int, default=80, help="train + val videos per class (default: 80)")
    synth.add_argument("--frames", type=int, default=8, help="frames per video (default: 8, the clip length)")
    synth.add_argument("--size", type=int, default=32, help="frame side in pixels, even (default: 32)")
    synth.add_argument("--seed", type=int, default=0, help="the same seed writes the same videos (default: 0)")
    synth.add_argument("--val-fraction", type=float, default=0.2, help="share of each class in val (default: 0.2)")
    synth.add_argument("--overwrite", action="store_true",
                       help="replace what --out holds (default: a folder that is not empty is refused)")

    bench = sub.add_parser("bench", help="clips/s of tsf's loader vs decoding whole videos, one worker",
                           description="Encode a 256p H.264 test video and time one worker loading 8x224 clips with "
                                       "tsf's loader and by decoding the whole video.")
    bench.add_argument("--num-frames", type=int, default=8, help="frames per clip (default: 8)")
    bench.add_argument("--crop-size", type=int, default=224, help="clip side (default: 224)")
    bench.add_argument("--sampling-rate", type=int, default=8, help="dense sampling stride (default: 8)")
    bench.add_argument("--height", type=int, default=256, help="test video height (default: 256)")
    bench.add_argument("--gops", type=int, nargs="+", default=[60, 250], help="keyframe intervals to test (default: 60 250)")
    bench.add_argument("--repeats", type=int, default=3, help="timed repetitions, median reported (default: 3)")
    bench.add_argument("--readers", nargs="+", choices=BACKENDS,
                       help="readers to time, the first gives the headline (default: decord if installed, and pyav)")
    bench.add_argument("--shards", type=int, metavar="N",
                       help="also time N small video files against the same videos in shards, warm and cold page cache")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")

    readers = sub.add_parser("readers", help="the readers available here against PyAV: frame by frame max difference, and speed",
                             description="Decoder-consistency check: each video is read by every reader available here "
                                         "(decord, torchcodec, PyAV) at the same frame indices and compared with PyAV's "
                                         "frames pixel by pixel; each reader's time to open the video and read a clip is "
                                         "measured. Exit code 0 when all readers agree exactly, 1 otherwise.")
    readers.add_argument("videos", type=Path, nargs="+", metavar="VIDEO", help="video files")
    readers.add_argument("--readers", nargs="+", choices=BACKENDS, help="readers to compare (default: all available here)")
    readers.add_argument("--max-frames", type=int, default=64,
                         help="frames compared per video: all when it has no more, else this many spread evenly (default: 64)")
    readers.add_argument("--clip-frames", type=int, default=8, help="frames of the timed clip (default: 8)")
    readers.add_argument("--repeats", type=int, default=3, help="timed clip reads per reader, median reported (default: 3)")
    readers.add_argument("--json", action="store_true", help="print the result as JSON")

    shard = sub.add_parser("shard", help="pack a data folder's or a manifest's videos into WebDataset tar shards + shards.json",
                           description="Check every video (as `tsf data check` does), leave out and report the bad ones, "
                                       "and pack the good ones as they are (no re-encoding) into SPLIT-000000.tar... of "
                                       "about --shard-size bytes, each video beside a JSON (label, class, source, frames, "
                                       "fps, start/end), indexed by shards.json (shards, sample counts, classes, checksums). "
                                       "Exit code 0 when every video went in, 1 when some were left out.")
    shard.add_argument("manifest", type=Path, metavar="MANIFEST",
                       help="a data folder (train.csv, val.csv, classes.txt: both splits) or one manifest of any format")
    shard.add_argument("--out", type=Path, required=True, help="the shard folder")
    shard.add_argument("--shard-size", default="1GB", help="video bytes per shard, e.g. 500MB, 1GB, 2GiB (default: 1GB)")
    shard.add_argument("--shuffle-seed", type=int, default=0,
                       help="seed of the order samples are packed in (manifests list class by class; default: 0)")
    shard.add_argument("--classes", type=Path, help="class list (default: classes.txt of the data folder / beside the manifest)")
    shard.add_argument("--num-frames", type=int, default=8, help="frames a clip needs; fewer is too short (default: 8)")
    shard.add_argument("--reader", choices=READERS, default="auto", help="video decoder of the check (default: auto)")
    shard.add_argument("--workers", type=int, help="checking processes (default: all cores)")
    shard.add_argument("--overwrite", action="store_true", help="replace shards.json and the shards in --out")
    shard.add_argument("--no-progress", action="store_true", help="no progress bar")
    for command in (manifest, check, synth, bench, readers, shard):
        command.set_defaults(_parser=command)
        add_debug_flag(command)


def run(args: argparse.Namespace) -> int:
    commands = {"manifest": _manifest, "check": _check, "synth": _synth, "bench": _bench, "readers": _readers,
                "shard": _shard}
    return commands[args.data_command](args)


def _manifest(args: argparse.Namespace) -> int:
    from ..data.manifest import load_classes, read_manifest
    from ..data.splits import write_split_manifests

    written = write_split_manifests(args.root, args.out, args.val_fraction, args.seed, args.overwrite)
    classes = load_classes(written["classes"])
    counts = {split: len(read_manifest(written[split], classes=classes).samples) for split in ("train", "val")}
    print(f"{len(classes)} classes; train {counts['train']} videos -> {written['train']}; "
          f"val {counts['val']} videos -> {written['val']}; classes -> {written['classes']}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..data.check import STATUSES, check_manifest
    from ..data.manifest import load_classes

    classes = load_classes(args.classes) if args.classes is not None else None
    report = check_manifest(args.manifest, classes=classes, num_frames=args.num_frames, reader=args.reader,
                            workers=args.workers, progress=not args.no_progress, report=args.report,
                            write_clean=args.write_clean, overwrite=args.overwrite)
    width = max(len(s) for s in STATUSES)
    print(f"{report['manifest']}: {report['ok'] + report['bad']} rows")
    for status in STATUSES:
        print(f"  {status.replace('_', ' '):<{width}}  {report['counts'][status]:>7}")
    bad = [f for f in report["files"] if f["status"] != "ok"]
    for entry in bad[:50]:
        print(f"{entry['status']}: {entry['path']} ({entry['where']}): {entry['reason']}")
    if len(bad) > 50:
        print(f"... and {len(bad) - 50} more" + (f" (all in {args.report})" if args.report else " (--report lists all)"))
    if args.report:
        print(f"report: {args.report}")
    if args.write_clean:
        print(f"good rows: {args.write_clean}")
    if report["ok"] + report["bad"] == 0:
        print(f"{report['manifest']} lists no videos: nothing to train or evaluate on", file=sys.stderr)
        return 1
    return 0 if not bad else 1


def _synth(args: argparse.Namespace) -> int:
    import time

    from ..data.synth import generate

    started = time.perf_counter()
    out = generate(args.task, args.out, videos_per_class=args.videos_per_class, frames=args.frames, size=args.size,
                   seed=args.seed, val_fraction=args.val_fraction, overwrite=args.overwrite)
    print(f"{args.task}: {len(TASKS[args.task]) * args.videos_per_class} videos in {time.perf_counter() - started:.1f} s -> {out} "
          f"(train.csv, val.csv, classes.txt)")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from ..data.bench import benchmark_loading

    result = benchmark_loading(num_frames=args.num_frames, crop_size=args.crop_size, sampling_rate=args.sampling_rate,
                               height=args.height, gops=args.gops, repeats=args.repeats, readers=args.readers)
    if args.shards:
        from ..data.shard_bench import benchmark_shards

        result["shards"] = benchmark_shards(videos=args.shards, repeats=args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    settings = result["settings"]
    print(f"{settings['video']}; clip: {settings['clip']}; one worker, one thread")
    for gop, readers in result["by_gop"].items():
        for reader, row in readers.items():
            print(f"  keyframe every {gop:>3} frames, {reader:<10}: tsf {row['tsf_clips_per_s']:6.1f} clips/s, "
                  f"whole-video decoding {row['full_decode_clips_per_s']:6.1f} clips/s -> {row['speedup']:.1f}x")
    print(f"speedup per worker ({result['headline']}): {result['speedup_per_worker']:.1f}x")
    if args.shards:
        settings = result["shards"]["settings"]
        print(f"{settings['videos']} videos of {settings['video']}; clip: {settings['clip']}; one worker, one thread; "
              f"cold: {settings['cold']}")
        for source, row in result["shards"]["rows"].items():
            print(f"  from {source:<6}: warm {row['warm_clips_per_s']:6.1f} clips/s, cold {row['cold_clips_per_s']:6.1f} clips/s")
    return 0


def _readers(args: argparse.Namespace) -> int:
    from ..data.compare import compare_readers

    results = compare_readers(args.videos, readers=args.readers, max_frames=args.max_frames,
                              clip_frames=args.clip_frames, repeats=args.repeats)
    agree = all(row["error"] is None and row["max_abs_diff"] == 0 for result in results if result["error"] is None
                for row in result["readers"].values())
    if args.json:
        print(json.dumps(results, indent=2))
        return 0 if agree else 1
    for result in results:
        if result["error"] is not None:
            print(f"{result['path']}: {result['reference']} cannot read it: {result['error']}")
            for name, row in result["readers"].items():
                print(f"  {name:<10}  " + (f"refuses it too: {row['error']}" if row["error"] else "reads it"))
            continue
        print(f"{result['path']}: {result['frames_compared']} frames compared with {result['reference']}")
        for name, row in result["readers"].items():
            if row["error"] is not None:
                print(f"  {name:<10}  fails: {row['error']}")
                continue
            worst = f" (worst: frame {row['worst_frame']})" if row["max_abs_diff"] else ""
            print(f"  {name:<10}  {row['num_frames']:>6} frames  max |diff| {row['max_abs_diff']:>3}  "
                  f"{row['frames_differing']:>4} frames differ{worst}  open + {args.clip_frames}-frame clip "
                  f"{row['clip_ms']:8.1f} ms")
    print("the readers give identical frames" if agree else "some reader differs or fails (see above)")
    return 0 if agree else 1


def _shard(args: argparse.Namespace) -> int:
    from ..data.manifest import load_classes
    from ..data.shards import write_shards

    classes = load_classes(args.classes) if args.classes is not None else None
    index = write_shards(args.manifest, args.out, shard_size=args.shard_size, shuffle_seed=args.shuffle_seed,
                         classes=classes, num_frames=args.num_frames, reader=args.reader, workers=args.workers,
                         progress=not args.no_progress, overwrite=args.overwrite)
    for split, entry in index["splits"].items():
        size = sum(s["bytes"] for s in entry["shards"])
        print(f"{split}: {entry['samples']} videos in {len(entry['shards'])} shard(s), {size / 1e6:.1f} MB "
              f"(from {entry['manifest']})")
    for entry in index["bad"][:50]:
        print(f"left out, {entry['status']}: {entry['path']} ({entry['where']}): {entry['reason']}")
    if len(index["bad"]) > 50:
        print(f"... and {len(index['bad']) - 50} more (all in {args.out / 'shards.json'}, key 'bad')")
    print(f"index: {args.out / 'shards.json'}")
    return 1 if index["bad"] else 0
