"""The rolling window of recent camera frames that instructions are resolved against.

Bounded by duration and by memory, whichever binds first. Frames are stored JPEG-encoded (about 15-20x smaller
than raw RGB at quality 90, measured in benchmarks/bench_node_io.py); the newest ``raw_cache`` frames also keep their
decoded pixels, because online tracking always reads the newest frame and catch-up reads recent ones.
Thread-safe: the ROS callbacks add frames while the inference worker reads snapshots.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .errors import ConfigError
from .ingest import jumped_back
from .types import Frame


@dataclass
class WindowStats:
    frames: int
    bytes: int
    duration_s: float
    evicted_total: int
    resets_total: int


class _StoredFrame:
    __slots__ = ("encoded", "index", "meta", "shape", "stamp")

    def __init__(self, index: int, stamp: float, encoded: np.ndarray, shape: tuple[int, ...], meta: Any) -> None:
        self.index = index
        self.stamp = stamp
        self.encoded = encoded
        self.shape = shape
        self.meta = meta


class RollingWindow:
    """Recent frames, oldest first, bounded by ``max_duration_s`` and ``max_bytes``.

    ``storage="jpeg"`` (default) keeps JPEG bytes at ``jpeg_quality``; ``storage="png"`` is lossless (larger).
    A stamp that jumped back from the newest one (:func:`.ingest.jumped_back`, e.g. a bag replay looping) clears
    the window, since the old frames no longer belong to the same timeline.
    """

    def __init__(
        self,
        max_duration_s: float = 10.0,
        max_bytes: int = 64 * 1024 * 1024,
        storage: str = "jpeg",
        jpeg_quality: int = 90,
        raw_cache: int = 8,
    ) -> None:
        if max_duration_s <= 0:
            raise ConfigError(f"window duration must be > 0 s, got {max_duration_s}")
        if max_bytes < 1024 * 1024:
            raise ConfigError(f"window memory must be >= 1 MB, got {max_bytes} bytes")
        if storage not in ("jpeg", "png"):
            raise ConfigError(f"window storage must be 'jpeg' or 'png', got {storage!r}")
        if not 1 <= jpeg_quality <= 100:
            raise ConfigError(f"jpeg quality must be in [1, 100], got {jpeg_quality}")
        self.max_duration_s = float(max_duration_s)
        self.max_bytes = int(max_bytes)
        self._ext = ".jpg" if storage == "jpeg" else ".png"
        self._params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if storage == "jpeg" else []
        self._raw_cache_size = max(1, int(raw_cache))
        self._frames: deque[_StoredFrame] = deque()
        self._raw: OrderedDict[int, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._next_index = 0
        self._evicted = 0
        self._resets = 0
        self._lock = threading.Lock()

    # ---- writing -------------------------------------------------------------------------------
    def add(self, image_rgb: np.ndarray, stamp: float, meta: Any = None) -> Frame:
        """Store a frame (RGB uint8 HxWx3) and return it; evicts what the bounds no longer allow."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"window frames must be HxWx3 uint8 RGB, got {image_rgb.shape} {image_rgb.dtype}")
        if image_rgb.shape[0] == 0 or image_rgb.shape[1] == 0:
            raise ValueError("window frames must not be empty")
        ok, encoded = cv2.imencode(self._ext, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), self._params)
        if not ok:
            raise ValueError("could not encode the frame for the window")
        with self._lock:
            if self._frames and jumped_back(stamp, self._frames[-1].stamp):
                self._clear_locked()
                self._resets += 1
            index = self._next_index
            self._next_index += 1
            stored = _StoredFrame(index, float(stamp), encoded, image_rgb.shape, meta)
            self._frames.append(stored)
            self._bytes += encoded.nbytes
            self._raw[index] = image_rgb
            while len(self._raw) > self._raw_cache_size:
                self._raw.popitem(last=False)
            self._evict_locked()
            return self._as_frame(stored)

    def clear(self) -> None:
        with self._lock:
            self._clear_locked()

    def _clear_locked(self) -> None:
        self._frames.clear()
        self._raw.clear()
        self._bytes = 0

    def _evict_locked(self) -> None:
        newest = self._frames[-1]
        while len(self._frames) > 1 and (
            self._bytes > self.max_bytes or newest.stamp - self._frames[0].stamp > self.max_duration_s
        ):
            old = self._frames.popleft()
            self._bytes -= old.encoded.nbytes
            self._raw.pop(old.index, None)
            self._evicted += 1

    # ---- reading -------------------------------------------------------------------------------
    def _decode(self, stored: _StoredFrame) -> np.ndarray:
        raw = self._raw.get(stored.index)
        if raw is not None:
            return raw
        bgr = cv2.imdecode(stored.encoded, cv2.IMREAD_COLOR)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _as_frame(self, stored: _StoredFrame) -> Frame:
        return Frame(stored.index, stored.stamp, decode=lambda: self._decode(stored), meta=stored.meta)

    def snapshot(self) -> list[Frame]:
        """The frames currently in the window, oldest first (decoded lazily on ``.image``)."""
        with self._lock:
            return [self._as_frame(s) for s in self._frames]

    def newest(self) -> Frame | None:
        with self._lock:
            return self._as_frame(self._frames[-1]) if self._frames else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def stats(self) -> WindowStats:
        with self._lock:
            duration = self._frames[-1].stamp - self._frames[0].stamp if self._frames else 0.0
            return WindowStats(len(self._frames), self._bytes, duration, self._evicted, self._resets)
