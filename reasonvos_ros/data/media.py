"""Locate the real test media that Debian packages ship (photos from ``darknet``, videos from ``opencv-doc``).

Nothing here downloads anything: a missing file raises ``MediaNotFound`` naming the Debian package to install.
The environment variable ``REASONVOS_MEDIA_DIR`` (a ``os.pathsep``-separated list of folders) is searched first,
so the same file names can be provided on machines without those packages.
"""

from __future__ import annotations

import os
from pathlib import Path

# name -> (Debian package, folders where that package installs it)
_MEDIA: dict[str, tuple[str, tuple[str, ...]]] = {
    **{
        f"{stem}.jpg": ("darknet", ("/usr/share/darknet/data",))
        for stem in ("dog", "person", "horses", "giraffe", "kite", "eagle", "scream")
    },
    **{
        name: ("opencv-doc", ("/usr/share/doc/opencv-doc/examples/data",))
        for name in ("vtest.avi", "Megamind.avi", "tree.avi", "building.jpg", "messi5.jpg", "baboon.jpg")
    },
}


class MediaNotFound(FileNotFoundError):
    """A test photo or video is missing; the message names the Debian package that ships it."""


def media_path(name: str) -> Path:
    """Absolute path of the media file ``name`` (e.g. ``"dog.jpg"``, ``"vtest.avi"``)."""
    if name not in _MEDIA:
        raise KeyError(f"unknown media file {name!r}; known: {', '.join(sorted(_MEDIA))}")
    package, folders = _MEDIA[name]
    extra = [folder for folder in os.environ.get("REASONVOS_MEDIA_DIR", "").split(os.pathsep) if folder]
    searched = [Path(folder) / name for folder in (*extra, *folders)]
    for candidate in searched:
        if candidate.is_file():
            return candidate
    raise MediaNotFound(
        f"media file {name!r} not found (looked in: {', '.join(str(p) for p in searched)}); it ships with the "
        f"Debian package {package!r}: sudo apt-get install {package} (or put the file in $REASONVOS_MEDIA_DIR)"
    )


def media_available(*names: str) -> bool:
    """True when every named media file can be found (for ``pytest.mark.skipif``)."""
    try:
        for name in names:
            media_path(name)
    except MediaNotFound:
        return False
    return True
