"""`python -m tsf <command>` (or the `tsf` console script): the command line, a thin face over the library.

Each command is one module of this package with ``add_arguments(parser)`` and ``run(args) -> int``.
The modules import only argparse and torch-free parts of tsf at import time; the library loads
inside ``run``, so ``python -m tsf <command> --help`` answers at once. Flag groups that several
commands share (sampling, device and precision, ``--config``/``--set``) live in ``common``.

Errors: a problem with the input (``tsf.errors.TsfError``, ``ValueError``, a missing or unreadable
file) is printed as one line, ``tsf <command>: <what, where, the fix>``, with exit code 2; anything
else as one line saying it is a bug, with exit code 1. ``--debug`` (or ``TSF_DEBUG=1``) adds the
traceback. Warnings print as ``tsf <command>: warning: ...``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from .common import add_debug_flag, error_message

# command name -> one-line help; the command's module is tsf.cli.<name>
COMMANDS: dict[str, str] = {
    "data": "build manifests, pre-flight check videos, generate synthetic data",
    "run": "execute notebooks headlessly (papermill) into a run folder",
    "bench": "benchmark inference, training and data loading against Hugging Face transformers",
    "recipes": "list the paper's experiments as recipes (train/evaluate --config NAME), or print one",
    "train": "train or fine-tune on a data folder, from flags or a recipe; resume a run (torchrun for multi-GPU/multi-node)",
    "evaluate": "evaluate a checkpoint with the paper's multi-view protocol",
    "predict": "class probabilities for your videos, a timeline over long ones, or embeddings",
    "export": "a checkpoint as ONNX (onnxruntime) or a torch.export ExportedProgram, dynamic batch, metadata inside",
}
INPUT_ERROR, BUG = 2, 1  # exit codes


class _Parser(argparse.ArgumentParser):
    """An unknown flag is reported by the command it was given to, with that command's usage."""

    def parse_args(self, args=None, namespace=None):
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            command = getattr(parsed, "_parser", self)
            command.error(f"unrecognized arguments: {' '.join(extra)} (see {command.prog} --help)")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m tsf", description="TimeSformer research kit.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also: TSF_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=f"{__name__}.{name}", _parser=command)
        add_debug_flag(command)
        importlib.import_module(f"{__name__}.{name}").add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("TSF_DEBUG", "") not in ("", "0")
    name = args._parser.prog.replace("python -m ", "")  # "tsf data check"
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(name)
        try:
            return int(importlib.import_module(args._module).run(args) or 0)
        except KeyboardInterrupt:
            print(f"{name}: interrupted", file=sys.stderr)
            return 130
        except Exception as error:  # noqa: BLE001 - the one place where errors become messages
            if debug:
                raise
            return _report(name, error)


def _report(name: str, error: Exception) -> int:
    """One line for ``error``; its exit code."""
    from ..errors import TsfError

    message = error_message(error)
    if isinstance(error, (TsfError, ValueError, FileNotFoundError, FileExistsError, IsADirectoryError,
                          NotADirectoryError, PermissionError)):
        print(f"{name}: {message}", file=sys.stderr)
        return INPUT_ERROR
    if isinstance(error, OSError):  # a full disk, a lost network mount: the system's words are the message
        print(f"{name}: {type(error).__name__}: {message}", file=sys.stderr)
        return INPUT_ERROR
    print(f"{name}: internal error ({type(error).__name__}: {message}); this is a bug in tsf: rerun with "
          f"--debug for the traceback and report it", file=sys.stderr)
    return BUG


def _one_line_warnings(name: str):
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{name}: warning: {message}", file=sys.stderr)

    return show
