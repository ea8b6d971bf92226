"""Plain data types shared by the ROS-free core and the model backends."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class TargetStatus(enum.IntEnum):
    """Per-target status; values match the STATUS_* constants of ``msg/TargetResult.msg``."""

    SEARCHING = 0
    TRACKING = 1
    LOST = 2
    NOT_PRESENT = 3
    ERROR = 4


class Frame:
    """One camera frame of the rolling window.

    ``index`` is a monotonically increasing sequence number assigned at ingest (never reused), ``stamp`` the
    source header time in seconds. The RGB image may be stored compactly (e.g. JPEG) and decoded on access;
    ``image`` always returns an ``HxWx3 uint8`` RGB array.
    """

    __slots__ = ("_decode", "_image", "index", "meta", "stamp")

    def __init__(
        self,
        index: int,
        stamp: float,
        image: np.ndarray | None = None,
        decode: Callable[[], np.ndarray] | None = None,
        meta: Any = None,
    ) -> None:
        if (image is None) == (decode is None):
            raise ValueError("Frame needs exactly one of image or decode")
        self.index = int(index)
        self.stamp = float(stamp)
        self._image = image
        self._decode = decode
        self.meta = meta  # opaque per-frame data for the caller (e.g. the ROS header)

    @property
    def image(self) -> np.ndarray:
        if self._image is not None:
            return self._image
        return self._decode()

    def __repr__(self) -> str:
        return f"Frame(index={self.index}, stamp={self.stamp:.3f})"


@dataclass
class KeyframeChoice:
    """What a frame sampler picked: the key (target) frame and the reference frames, as positions in the
    frame sequence it was given."""

    key: int
    references: list[int] = field(default_factory=list)
    confidence: float | None = None  # e.g. 1 - spread of the sampled answers; None if the sampler has no notion
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Segmentation:
    """A key-frame segmentation. ``present`` False means the segmenter decided the object is not in view;
    then ``mask`` is all False."""

    mask: np.ndarray  # HxW bool, size of the key frame
    score: float
    present: bool
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrackedMask:
    """A tracker's output for one object on one frame."""

    mask: np.ndarray  # HxW bool
    confidence: float  # in [0, 1]; low values trigger re-acquisition

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))
