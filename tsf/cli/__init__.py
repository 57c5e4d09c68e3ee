"""`python -m tsf <command>` (or the `tsf` console script): the command line, a thin face over the library.

Each command is one module of this package with ``add_arguments(parser)`` and ``run(args) -> int``.
The modules import only argparse and torch-free parts of tsf at import time; the library loads
inside ``run``, so ``python -m tsf <command> --help`` answers at once. Flag groups that several
commands share (sampling, device and precision, ``--config``/``--set``) live in ``common``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command name -> one-line help; the command's module is tsf.cli.<name>
COMMANDS: dict[str, str] = {
    "data": "build manifests, pre-flight check videos, generate synthetic data",
    "run": "execute notebooks headlessly (papermill) into a run folder",
    "bench": "benchmark inference, training and data loading against Hugging Face transformers",
    "recipes": "list the paper's experiments as recipes (train/evaluate --config NAME), or print one",
    "train": "train or fine-tune on a data folder, from flags or a recipe; resume a run (torchrun for multi-GPU/multi-node)",
    "evaluate": "evaluate a checkpoint with the paper's multi-view protocol",
    "predict": "class probabilities for your videos, a timeline over long ones, or embeddings",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tsf", description="TimeSformer research kit.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        module = f"{__name__}.{name}"
        command.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)
