"""Settings dataclasses whose fields carry their own help text.

``TrainConfig`` and ``VideoDataConfig`` declare each field with ``option(default, help)``; the
command line (``tsf.cli.train``) turns every field into a flag with that help, so a setting is
documented once, where it is defined.
"""
from __future__ import annotations

from dataclasses import field


def option(default, help: str, **metadata):
    """A dataclass field with ``help`` (and e.g. ``choices``) in its metadata; tuples become default factories."""
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})
