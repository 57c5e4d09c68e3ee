"""`python -m tsf bench`: tsf against Hugging Face ``transformers`` (``tsf.bench``); prints the
markdown tables and writes the JSON report. bench/README.md has the latest figures and the targets."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..bench.settings import SECTIONS
from .common import add_device_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_device_flags(parser)
    parser.add_argument("--preset", default="base_8x224", help="model preset (tsf.PRESETS; default: base_8x224)")
    parser.add_argument("--weights", help="benchmark these weights (anything tsf.from_pretrained reads) instead of a seeded random init")
    parser.add_argument("--batch-sizes", type=_comma_list(int), default=(1, 4), metavar="B1,B2,...",
                        help="inference batch sizes, comma-separated (default: 1,4)")
    parser.add_argument("--train-batch", type=int, help="training batch (default: 1 on CPU, 8 on CUDA)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement; medians are reported (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default: 1; training uses at least 2, the first AdamW steps allocate)")
    parser.add_argument("--sections", type=_comma_list(str), default=SECTIONS, metavar="NAME,...",
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--compile", action="store_true", help="CUDA: also time tsf under torch.compile")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's default, one per core)")
    parser.add_argument("--agreement-clips", type=int, default=8, help="clips for the int8-vs-fp32 agreement (default: 8; 0 skips it)")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    parser.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON report (default: bench.json)")


def run(args: argparse.Namespace) -> int:
    import json

    from ..bench import BenchSettings, benchmark
    from ..bench.report import markdown

    try:
        settings = BenchSettings(
            device=args.device, precision=args.precision, preset=args.preset, weights=args.weights,
            batch_sizes=args.batch_sizes, train_batch=args.train_batch, repeats=args.repeats, warmup=args.warmup,
            sections=args.sections, compile=args.compile, threads=args.threads,
            agreement_clips=args.agreement_clips, hf=not args.no_hf,
        )
    except ValueError as error:
        print(f"tsf bench: {error}", file=sys.stderr)
        return 2
    report = benchmark(settings)
    print(markdown(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def _comma_list(kind: type):
    """An argparse type: ``"a,b"`` -> a tuple of ``kind``, blanks dropped."""
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(item.strip()) for item in text.split(",") if item.strip())
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: {error}") from error

    return parse
