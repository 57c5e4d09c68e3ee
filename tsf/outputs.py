"""Writing results so that nothing is lost: no command replaces existing results unless asked
(``--overwrite``), and every file is written whole or not at all (a temporary file in the same
folder, then an atomic rename), so a crash or a full disk mid-write never leaves half a file.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Union

from .errors import OutputExistsError

PathLike = Union[str, os.PathLike]


def refuse_to_overwrite(paths: Iterable[PathLike], overwrite: bool, what: str = "results") -> None:
    """Raise when any of ``paths`` exists and ``overwrite`` is False.

    Args:
        paths: the files (or folders) a command is about to write.
        overwrite: the user asked to replace them (``--overwrite``).
        what: what they are, for the message.

    Raises:
        OutputExistsError: naming every existing path and the flag that allows replacing them.
    """
    existing = [str(p) for p in map(Path, paths) if p.exists()]
    if existing and not overwrite:
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise OutputExistsError(f"{what} already exist: {shown}; nothing was written. Choose another output, "
                                f"move them away, or pass --overwrite to replace them")


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends without error,
    removed otherwise.

    Example::

        with atomic_path("features.npy") as tmp:
            np.save(tmp, features)   # np.save keeps the name it is given when it ends in .npy
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
