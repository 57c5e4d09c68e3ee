"""The errors tsf raises for things a user can fix. Each message says what is wrong, where (file,
line, key, value) and how to fix it; the command line prints it in one line and exits non-zero
(``--debug`` or ``TSF_DEBUG=1`` shows the traceback too).

``TsfError`` is the root; the subclasses that stand for a bad value are also ``ValueError``s, so
code that caught ``ValueError`` before keeps working.
"""
from __future__ import annotations


class TsfError(Exception):
    """A problem the user can fix; the message says how."""


class ConfigError(TsfError, ValueError):
    """A setting, flag or argument value that cannot be used."""


class DataError(TsfError, ValueError):
    """Data (a manifest, a video, a data folder) that cannot be used as given."""


class CheckpointError(TsfError, ValueError):
    """A checkpoint that cannot be read, or does not fit what it is used for."""


class DeviceError(TsfError, RuntimeError):
    """A device or precision this machine cannot provide."""


class DownloadError(TsfError, RuntimeError):
    """A file that could not be downloaded (offline, moved, corrupt)."""


class OutputExistsError(TsfError, FileExistsError):
    """The command would replace results that already exist."""
