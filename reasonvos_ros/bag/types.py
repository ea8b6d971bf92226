"""A rosbags typestore (ROS 2 Jazzy) with the reasonvos_ros custom messages registered from their ``.msg`` text.

The ``.msg`` files are searched, in order, in ``$REASONVOS_MSG_DIR``, the source tree's ``msg/`` folder (next to
the ``reasonvos_ros`` package), every ``share/reasonvos_ros/msg`` under ``$AMENT_PREFIX_PATH``, and
``<sys.prefix>/share/reasonvos_ros/msg`` (where the interface build installs them into the venv).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

PACKAGE = "reasonvos_ros"
CUSTOM_MESSAGES = ("Instruction", "TargetResult", "TargetResultArray", "AudioChunk")

__all__ = ["CUSTOM_MESSAGES", "PACKAGE", "find_msg_dir", "make_typestore", "msg_type_name"]


def msg_type_name(name: str) -> str:
    """``"TargetResult"`` -> ``"reasonvos_ros/msg/TargetResult"``."""
    return f"{PACKAGE}/msg/{name}"


def _candidate_dirs() -> list[Path]:
    candidates = []
    if os.environ.get("REASONVOS_MSG_DIR"):
        candidates.append(Path(os.environ["REASONVOS_MSG_DIR"]))
    candidates.append(Path(__file__).resolve().parents[2] / "msg")
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidates.append(Path(prefix) / "share" / PACKAGE / "msg")
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / "msg")
    return candidates


def find_msg_dir() -> Path:
    """The first folder holding every custom ``.msg`` file; FileNotFoundError listing where it looked."""
    candidates = _candidate_dirs()
    for folder in candidates:
        if all((folder / f"{name}.msg").is_file() for name in CUSTOM_MESSAGES):
            return folder
    looked = "\n  ".join(str(folder) for folder in candidates)
    raise FileNotFoundError(
        f"cannot find the {PACKAGE} .msg files ({', '.join(CUSTOM_MESSAGES)}); looked in:\n  {looked}\n"
        "set REASONVOS_MSG_DIR to the package's msg/ folder"
    )


def make_typestore(msg_dir: Path | None = None) -> Typestore:
    """Jazzy's standard types plus the custom messages (parsed from ``msg_dir`` or :func:`find_msg_dir`)."""
    folder = Path(msg_dir) if msg_dir is not None else find_msg_dir()
    typestore = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for name in CUSTOM_MESSAGES:
        path = folder / f"{name}.msg"
        if not path.is_file():
            raise FileNotFoundError(f"message definition {path} does not exist")
        types.update(get_types_from_msg(path.read_text(encoding="utf-8"), msg_type_name(name)))
    typestore.register(types)
    return typestore
