"""Plain data types shared by the ROS-free core and the model backends."""

from __future__ import annotations

import enum
import itertools
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


# Process-unique frame ids: next() on itertools.count is atomic under the GIL, so frames made on any thread differ.
_FRAME_UIDS = itertools.count()


class Frame:
    """One camera frame of the rolling window.

    ``index`` is the source's sequence number (monotonically increasing within one live stream, but an offline
    clip starts again at 0), ``stamp`` the source header time in seconds. ``uid`` is unique within the process
    (assigned at construction, never reused): caches of per-frame features key on it, so that two clips whose
    indices coincide never share an entry. The RGB image may be stored compactly (e.g. JPEG) and decoded on access;
    ``image`` always returns an ``HxWx3 uint8`` RGB array.
    """

    __slots__ = ("_decode", "_image", "index", "meta", "stamp", "uid")

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
        self.uid = next(_FRAME_UIDS)
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


@dataclass(frozen=True)
class Understanding:
    """What a segmenter understood an instruction to mean, for the people and planners downstream.

    ``target_phrase`` names the object it looks for as a short noun phrase or detector category ("bottle
    opener", "person"); ``explanation`` says in one short sentence why (e.g. which words were read as the target
    and which as context); ``confidence`` in [0, 1] is how sure the segmenter is that the phrase is what the
    instruction means (not how good the mask is: that is the result's ``score``)."""

    target_phrase: str = ""
    explanation: str = ""
    confidence: float = 0.0


@dataclass
class Segmentation:
    """A key-frame segmentation. ``present`` False means the segmenter decided the object is not in view;
    then ``mask`` is all False."""

    mask: np.ndarray  # HxW bool, size of the key frame
    score: float
    present: bool
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    understanding: Understanding | None = None  # filled by segmenters that can say what they understood


@dataclass
class Evidence:
    """An independent check of a tracked mask (e.g. the detector re-run on the frame, see
    ``KeyframeSegmenter.verify``). ``support`` in [0, 1]: how well the check agrees that the mask shows the
    target (0: it contradicts it: nothing of the target's kind is there); ``correction``: a better mask of the
    target on the same frame (the track drifted off it), to re-seed the tracker with; ``reason`` says why, for
    people."""

    support: float
    reason: str = ""
    correction: np.ndarray | None = None
    # The target's box on this frame (x0, y0, x1, y1) when the check located it unambiguously: it feeds the
    # motion model that predicts where the target should be at the next check.
    box: tuple[float, float, float, float] | None = None


@dataclass
class TrackedMask:
    """A tracker's output for one object on one frame."""

    mask: np.ndarray  # HxW bool
    confidence: float  # in [0, 1]; low values trigger re-acquisition

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))
