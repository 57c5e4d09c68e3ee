"""Lazy package exports: a package names what it offers, and each name is imported on first use.

So ``import tsf`` and the command line's imports of plain settings (``TrainConfig``,
``VideoDataConfig``, ``BenchSettings``) load no torch, while ``tsf.TimeSformer`` still works.
"""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A package's module-level ``__getattr__`` and ``__dir__`` for ``exports``.

    Args:
        package: the package's ``__name__``.
        exports: exported name -> the submodule (relative to ``package``) that defines it.
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
