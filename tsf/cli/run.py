"""`python -m tsf run NOTEBOOK... --out RUN_DIR`: execute notebooks headlessly (papermill) into a run folder."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import parse_assignments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("notebooks", nargs="+", type=Path, help="notebooks to execute, in order")
    parser.add_argument("--params", type=Path, help="YAML with one section of parameters per notebook stem")
    parser.add_argument("--out", type=Path, required=True, help="run folder (created); receives everything")
    parser.add_argument("--overwrite", action="store_true",
                        help="run notebooks again in a folder where they already ran, replacing what they wrote")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every notebook that declares KEY; VALUE is parsed as YAML")


def run(args: argparse.Namespace) -> int:
    from ..errors import TsfError
    from ..run import execute

    try:
        executed = execute(args.notebooks, args.out, args.params, parse_assignments(args.param, "-p"), args.overwrite)
    except (TsfError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"tsf run: {err}", file=sys.stderr)
        return 1
    print(f"[tsf run] done: {len(executed)} notebook(s) in {args.out}/")
    for path in sorted(Path(args.out).glob("*.png")):
        print(f"  figure: {path}")
    return 0
