"""`python -m tsf bench`: tsf against Hugging Face ``transformers`` (``tsf.bench``); prints the
markdown tables and writes the JSON report. bench/README.md has the latest figures and the targets."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..bench.settings import PATHS, SECTIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--precision", default="auto",
                        help="auto: every precision that applies (CPU: fp32, bf16 where the CPU has bf16 units, int8, "
                             "onnxruntime; CUDA: bf16 autocast); fp32 or bf16: only that precision's rows and fp32's "
                             "(default auto)")
    parser.add_argument("--full", action="store_true",
                        help="everything: batches 1 and 4, the training and data sections, the explicit-attention, "
                             "dynamic-int8 and onnxruntime-int8 rows, bf16 even without bf16 units, 5 repeats "
                             "(default: the quick run, inference at batch 1, a few minutes on 2 cores)")
    parser.add_argument("--paths", type=_comma_list(str), metavar="NAME,...",
                        help=f"CPU inference paths, comma-separated subset of {','.join(PATHS)} (default: all that apply)")
    parser.add_argument("--preset", default="base_8x224", help="model preset (tsf.PRESETS; default: base_8x224)")
    parser.add_argument("--weights", help="benchmark these weights (anything tsf.from_pretrained reads) instead of a seeded random init")
    parser.add_argument("--batch-sizes", type=_comma_list(int), metavar="B1,B2,...",
                        help="inference batch sizes, comma-separated (default: 1; --full: 1,4)")
    parser.add_argument("--train-batch", type=int, help="training batch (default: 1 on CPU, 8 on CUDA)")
    parser.add_argument("--repeats", type=int, help="timed repetitions per measurement; medians are reported (default: 3; --full: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default: 1; training uses at least 2, the first AdamW steps allocate)")
    parser.add_argument("--sections", type=_comma_list(str), metavar="NAME,...",
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: inference; --full: all)")
    parser.add_argument("--compile", action="store_true", help="CUDA: also time tsf under torch.compile")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's default, one per core)")
    parser.add_argument("--agreement-clips", type=int,
                        help="clips for each path's agreement with tsf fp32 (default: 4; --full: 8; 0 skips it)")
    parser.add_argument("--agreement-data", metavar="DIR",
                        help="the agreement section's data folder (default: the --weights checkpoint's training data)")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    parser.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON report (default: bench.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    import json

    from ..bench import BenchSettings, benchmark
    from ..bench.report import markdown
    from ..outputs import atomic_write_text, refuse_to_overwrite

    try:
        settings = BenchSettings(
            device=args.device, precision=args.precision, preset=args.preset, weights=args.weights,
            batch_sizes=args.batch_sizes, train_batch=args.train_batch, repeats=args.repeats, warmup=args.warmup,
            sections=args.sections, paths=args.paths, full=args.full, compile=args.compile, threads=args.threads,
            agreement_clips=args.agreement_clips, agreement_data=args.agreement_data, hf=not args.no_hf,
        )
        refuse_to_overwrite([args.out], args.overwrite, "benchmark reports")
    except (ValueError, FileExistsError) as error:  # bad settings; tsf.errors.OutputExistsError
        print(f"tsf bench: {error}", file=sys.stderr)
        return 2
    report = benchmark(settings)
    print(markdown(report))
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
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
