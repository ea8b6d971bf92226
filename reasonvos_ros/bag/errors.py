"""One clear line instead of a traceback when a bag cannot be read or written.

Bags come from killed recorders, full disks, other tools and other robots: corrupt or truncated storage files,
a missing ``metadata.yaml``, no messages at all, message types nobody here knows. The bag tools catch the
exceptions that reading or writing such a bag raises (rosbags' reader/writer/type-system/serialisation errors,
SQLite and YAML errors, short reads, OS errors) and print what is wrong and what to do instead.
"""

from __future__ import annotations

import errno
import sqlite3
import struct
from pathlib import Path

import yaml
from rosbags.highlevel import AnyReaderError
from rosbags.rosbag2 import ReaderError, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys import TypesysError

__all__ = ["BAG_ERRORS", "describe_bag_error", "is_bag_error"]

# What reading or writing a damaged / foreign bag raises (besides the tools' own FileNotFoundError/ValueError).
BAG_ERRORS: tuple[type[BaseException], ...] = (
    ReaderError,
    AnyReaderError,
    WriterError,
    TypesysError,
    SerdeError,
    sqlite3.Error,
    yaml.YAMLError,
    struct.error,
    EOFError,
    OverflowError,  # a corrupt length field (mcap)
    MemoryError,  # a corrupt length field asking for terabytes
    OSError,
    KeyError,
    IndexError,
    UnicodeDecodeError,
    ImportError,
    ValueError,
    AssertionError,
)


def _from_sqlite_binding(error: BaseException) -> bool:
    """rosbags reads sqlite3 bags through apsw (its own dependency, not imported here): its errors."""
    return any(cls.__module__ == "apsw" for cls in type(error).__mro__)


def is_bag_error(error: BaseException) -> bool:
    """Whether ``error`` is what a damaged, empty or foreign bag (or a full disk) raises: reported, not a bug."""
    return isinstance(error, BAG_ERRORS) or _from_sqlite_binding(error)


def describe_bag_error(error: BaseException, bag: str | Path | None = None) -> str:
    """A one-line explanation of ``error`` for the user (no traceback)."""
    where = f"bag {bag}: " if bag is not None else ""
    text = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
    if bag is not None and str(bag) in text:
        where = ""  # the message names the bag already
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"{where}the disk is full ({text}); free space or record to another disk"
    if isinstance(error, OSError) and error.errno == errno.EACCES:
        return f"{where}permission denied ({text})"
    if isinstance(error, (ReaderError, AnyReaderError, OSError)) and "metadata" in text.lower():
        return (
            f"{where}cannot be read: {text}. A bag whose recorder was killed has no metadata.yaml; bags written by "
            "`reasonvos bag-record` keep every completed split readable"
        )
    if isinstance(error, (TypesysError, ImportError, KeyError)):
        return f"{where}has a message type that is not known here ({type(error).__name__}: {text})"
    if isinstance(error, (ReaderError, AnyReaderError)) and "magic" in text.lower():
        return f"{where}is truncated or not an mcap file ({text}): its end (footer/summary) is missing or damaged"
    if _from_sqlite_binding(error):
        return f"{where}is corrupt or truncated (sqlite3: {type(error).__name__}: {text})"
    damaged = (
        sqlite3.Error,
        struct.error,
        EOFError,
        OverflowError,
        MemoryError,
        SerdeError,
        UnicodeDecodeError,
        IndexError,
    )
    if isinstance(error, damaged):
        return f"{where}is corrupt or truncated ({type(error).__name__}: {text})"
    return f"{where}{type(error).__name__}: {text}" if not isinstance(error, ValueError) else f"{where}{text}"
