"""`python -m tsf <command>`: the command-line front of tsf.

Each command lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``--help`` is fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("tsf.data.cli", "build manifests, pre-flight check videos, generate synthetic data"),
    "run": ("tsf.run", "execute notebooks headlessly (papermill) into a run folder"),
    "bench": ("tsf.bench", "benchmark inference, training and data loading against Hugging Face transformers"),
    "recipes": ("tsf.recipes", "list the paper's experiments as recipes (train/evaluate --config NAME), or print one"),
    "train": ("tsf.train", "train or fine-tune on a data folder, from flags or a recipe; resume a run (torchrun for multi-GPU/multi-node)"),
    "evaluate": ("tsf.evaluate", "evaluate a checkpoint with the paper's multi-view protocol"),
    "predict": ("tsf.predict", "class probabilities for your videos, a timeline over long ones, or embeddings"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tsf", description="TimeSformer research kit.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module)
        # argument definitions are cheap; the heavy imports happen inside run()
        importlib.import_module(module).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
