"""From decoded camera inputs to frames in the rolling window (ROS-free): the live node's ingest policy.

The node decodes messages into numpy arrays and hands them over with their stamps (float seconds) and an opaque
header object it wants back on the outputs; everything that decides what becomes a frame happens here:

* Time line: per stream, a stamp not newer than the stream's previous one is a duplicate or out of order and is
  rejected; a step back of more than ``TIME_JUMP_BACK_S`` starts a new time line instead (a bag loop, a
  simulation reset): the synchroniser restarts, and the rolling window clears itself on the same rule
  (:func:`jumped_back`, the one place the threshold is applied).
* With depth, colour, depth and camera info are matched by :class:`~.sync.ApproximateTimeSynchronizer`; a long run
  of colour frames without a match is reported once per run (a misconfiguration, not an occasional drop).
* Frame size: :class:`~.frame_size.FrameSizeGate` rejects strays and confirms resolution changes.
* Depth must be registered to the colour image and camera info must give valid intrinsics; depth is kept for the
  newest ``DEPTH_CACHE_FRAMES`` frames only (looked up by the window's frame index), outside the window.

Rejections go to a :class:`~.rejections.Rejections` (category + message); frames, new time lines and time jumps are
announced through the callbacks given to :class:`RgbdIngest`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .frame_size import FrameSizeGate, SizeDecision
from .geometry import Intrinsics
from .rejections import Rejections
from .sync import ApproximateTimeSynchronizer, Stamped
from .types import Frame

if TYPE_CHECKING:
    from .window import RollingWindow

__all__ = [
    "DEPTH_CACHE_FRAMES",
    "FRAME_SIZE_CONFIRM_FRAMES",
    "TIME_JUMP_BACK_S",
    "DepthSyncSettings",
    "FrameDepth",
    "FrameMeta",
    "IngestStats",
    "RgbdIngest",
    "UnreadableInput",
    "jumped_back",
]

DEPTH_CACHE_FRAMES = 8  # depth is only needed for the newest frames (3D points of live results)
# A stamp this much older than its stream's previous one starts a new time line (bag loop, simulation reset);
# smaller steps back are out-of-order messages. The rolling window clears itself on the same rule.
TIME_JUMP_BACK_S = 1.0
FRAME_SIZE_CONFIRM_FRAMES = 3  # consecutive frames of a new size that mean the camera changed resolution
_STREAMS = ("image", "depth", "camera_info")  # synchroniser inputs 0, 1, 2


def jumped_back(stamp: float, reference: float) -> bool:
    """Whether ``stamp`` lies more than ``TIME_JUMP_BACK_S`` before ``reference``: the clock went back (a new time
    line), as opposed to a message that is merely late. ``reference`` may be ``-inf`` (nothing seen yet)."""
    return reference - stamp > TIME_JUMP_BACK_S


class UnreadableInput(ValueError):
    """A deferred decode (see :meth:`RgbdIngest.add_depth`) could not read its message; the text says why."""


@dataclass(frozen=True)
class FrameMeta:
    """What the window keeps with a frame besides its pixels: the caller's opaque header (returned on outputs)."""

    header: Any


@dataclass(frozen=True)
class FrameDepth:
    """Depth registered to a colour frame (metres, NaN invalid) and the intrinsics of that camera, if valid."""

    depth_m: np.ndarray
    intrinsics: Intrinsics | None


@dataclass(frozen=True)
class DepthSyncSettings:
    """How depth + camera info are matched to the colour image; the topic names only word the warnings."""

    queue_size: int
    slop_s: float
    depth_topic: str = "depth"
    camera_info_topic: str = "camera_info"


@dataclass(frozen=True)
class IngestStats:
    frames_received: int
    time_jumps: int
    input_rate_hz: float
    ingest_s_median: float | None  # None before the first colour frame was handled


@dataclass(frozen=True)
class _CameraInfo:
    k: tuple[float, ...]
    p: tuple[float, ...]


class RgbdIngest:
    """Turns decoded colour (+ depth + camera info) inputs into window frames; see the module docstring.

    ``on_frame(frame)`` is called for every frame added to the window, ``on_new_timeline(reason)`` when the camera
    changed resolution (the window and the depth cache are already cleared; tracking must start over) and
    ``on_time_jump(stream, seconds_back)`` when a stream's clock went back. Not thread-safe for inputs (the
    caller serialises them); :meth:`depth_for` and :meth:`stats` may be called from any thread.
    """

    def __init__(
        self,
        rejections: Rejections,
        on_frame: Callable[[Frame], None],
        on_new_timeline: Callable[[str], None],
        on_time_jump: Callable[[str, float], None],
    ) -> None:
        self.rejections = rejections
        self._on_frame = on_frame
        self._on_new_timeline = on_new_timeline
        self._on_time_jump = on_time_jump
        self.window: RollingWindow | None = None
        self.sync: ApproximateTimeSynchronizer | None = None
        self._depth_settings: DepthSyncSettings | None = None
        self._frame_sizes = FrameSizeGate(FRAME_SIZE_CONFIRM_FRAMES)
        self._depth_cache: OrderedDict[int, FrameDepth] = OrderedDict()
        self._depth_lock = threading.Lock()
        self._last_stamps: dict[str, float] = {}  # per input stream, to drop duplicates / out-of-order messages
        self._newest_stamp = -math.inf  # newest stamp accepted on any stream since the last jump back
        # Counters over the ingest's whole life (diagnostics), not reset by close().
        self.frames_received = 0
        self.time_jumps = 0
        self._received_at_last_sync = 0  # frames_received when a colour frame last found its depth + camera_info
        self._arrival_times: deque[float] = deque(maxlen=120)
        self._costs: deque[float] = deque(maxlen=200)

    # ------------------------------------------------------------------------------------------------ life
    def open(self, window: RollingWindow, depth: DepthSyncSettings | None = None) -> None:
        """Start feeding ``window``; with ``depth`` colour frames wait for their depth + camera info."""
        self.window = window
        self._depth_settings = depth
        self.sync = None
        if depth is not None:
            self.sync = ApproximateTimeSynchronizer(len(_STREAMS), depth.queue_size, depth.slop_s, self._on_synced)

    def close(self) -> None:
        """Forget the stream state (stamps, sizes, queued messages, depth); the counters stay."""
        self.window = None
        self.sync = None
        with self._depth_lock:
            self._depth_cache.clear()
        self._last_stamps.clear()
        self._newest_stamp = -math.inf
        self._frame_sizes.reset()

    @property
    def uses_depth(self) -> bool:
        return self.sync is not None

    # ------------------------------------------------------------------------------------------------ inputs
    def image_arrived(self) -> float:
        """Count a colour message as it arrives (before any check); returns the start time for :meth:`image_done`."""
        self.frames_received += 1
        self._arrival_times.append(time.monotonic())
        return time.perf_counter()

    def image_done(self, started: float) -> None:
        """Record what handling a colour message cost (decoding included), from :meth:`image_arrived`'s value."""
        self._costs.append(time.perf_counter() - started)

    def add_image(self, header: Any, stamp: float, rgb: np.ndarray) -> None:
        """A decoded colour frame (HxWx3 uint8 RGB) stamped ``stamp`` seconds."""
        if not self._accept_stamp("image", stamp):
            return
        if self.sync is not None:
            self.sync.add(0, stamp, (header, stamp, rgb))
            self._warn_if_unsynchronised()
        else:
            self._ingest(header, stamp, rgb, None, None)

    def add_depth(self, stamp: float, load_metres: Callable[[], np.ndarray]) -> None:
        """A depth message, decoded only if it is matched to a colour frame of an accepted size: ``load_metres()``
        returns HxW float metres (NaN invalid) or raises :class:`UnreadableInput`. Ignored without depth."""
        if self.sync is not None and self._accept_stamp("depth", stamp):
            self.sync.add(1, stamp, load_metres)

    def add_camera_info(self, stamp: float, k: Sequence[float], p: Sequence[float]) -> None:
        """A camera info's row-major ``K`` (3x3) and ``P`` (3x4). Ignored without depth."""
        if self.sync is not None and self._accept_stamp("camera_info", stamp):
            self.sync.add(2, stamp, _CameraInfo(tuple(k), tuple(p)))

    # ------------------------------------------------------------------------------------------------ outputs
    def depth_for(self, frame: Frame) -> FrameDepth | None:
        """The depth of a window frame, while it is among the newest ``DEPTH_CACHE_FRAMES`` with depth."""
        with self._depth_lock:
            return self._depth_cache.get(frame.index)

    def depth_frames(self) -> int:
        """How many frames' depth is held now."""
        with self._depth_lock:
            return len(self._depth_cache)

    def stats(self) -> IngestStats:
        times = list(self._arrival_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        costs = list(self._costs)
        return IngestStats(
            frames_received=self.frames_received,
            time_jumps=self.time_jumps,
            input_rate_hz=rate,
            ingest_s_median=float(np.median(costs)) if costs else None,
        )

    # ------------------------------------------------------------------------------------------------ internals
    def _accept_stamp(self, stream: str, stamp: float) -> bool:
        """False (rejected and counted) for a stamp not newer than the stream's previous one. A jump back starts a
        new time line instead: the synchroniser restarts (it would otherwise drop every message older than the
        last set it delivered) and the window clears itself when the frame arrives."""
        last = self._last_stamps.get(stream)
        if last is not None and stamp <= last:
            if not jumped_back(stamp, last):
                self.rejections.reject(
                    stream,
                    f"stamp {stamp:.3f} s is not newer than the previous {stream} message ({last:.3f} s): "
                    "duplicate or out of order; dropped",
                )
                return False
            # All streams of a camera jump; the first one restarts the synchroniser, the others catch up (they
            # land near the newest stamp of the new time line).
            if jumped_back(stamp, self._newest_stamp):
                self._newest_stamp = stamp
                self.time_jumps += 1
                if self.sync is not None:
                    self.sync.reset()
                self._on_time_jump(stream, last - stamp)
        self._last_stamps[stream] = stamp
        self._newest_stamp = max(self._newest_stamp, stamp)
        return True

    def _warn_if_unsynchronised(self) -> None:
        """With depth, frames without a matching depth + camera info never reach the window: say so when a run of
        colour frames found no match at all (a real misconfiguration), not for the occasional best-effort drop of
        one stream, which only costs that frame."""
        settings = self._depth_settings
        streak = self.frames_received - self._received_at_last_sync
        if streak <= 2 * settings.queue_size:
            return
        newest = {name: self._last_stamps.get(name) for name in _STREAMS}
        seen = ", ".join(
            f"{name} {stamp:.3f} s" if stamp is not None else f"no {name}" for name, stamp in newest.items()
        )
        self.rejections.reject(
            "unsynchronised_image",
            f"the last {streak} colour frames found no depth + camera_info within {settings.slop_s} s "
            f"(newest stamps: {seen}); check that '{settings.depth_topic}' and "
            f"'{settings.camera_info_topic}' are published with the colour image's stamps, or set "
            "use_depth false",
        )
        self._received_at_last_sync = self.frames_received  # report again only after another full run

    def _on_synced(self, image: Stamped, depth: Stamped, info: Stamped) -> None:
        self._received_at_last_sync = self.frames_received
        header, stamp, rgb = image.payload
        self._ingest(header, stamp, rgb, depth.payload, info.payload)

    def _ingest(
        self,
        header: Any,
        stamp: float,
        rgb: np.ndarray,
        load_metres: Callable[[], np.ndarray] | None,
        info: _CameraInfo | None,
    ) -> None:
        decision = self._frame_sizes.check(rgb.shape[:2])
        if decision is SizeDecision.REJECT:
            current = self._frame_sizes.size
            self.rejections.reject(
                "frame_size",
                f"frame is {rgb.shape[1]}x{rgb.shape[0]}, the stream is {current[1]}x{current[0]}; dropped (after "
                f"{FRAME_SIZE_CONFIRM_FRAMES} frames in a row of a new size the node starts a new timeline)",
            )
            return
        if decision is SizeDecision.NEW_TIMELINE:
            self.window.clear()
            with self._depth_lock:
                self._depth_cache.clear()
        depth = self._depth_of(load_metres, info, rgb.shape[:2]) if load_metres is not None else None
        try:
            # The window keeps only the header: depth (1.2 MB per 640x480 frame, not counted in window_max_mb) lives
            # in the small cache below, which is all the 3D points of live results need.
            frame = self.window.add(rgb, stamp, FrameMeta(header))
        except ValueError as exc:
            self.rejections.reject("image", str(exc))
            frame = None
        if decision is SizeDecision.NEW_TIMELINE:
            # The camera changed resolution (a driver reconfigure): tracker sessions hold the old size, so every
            # target starts over with its instruction on the frames of the new size.
            self._on_new_timeline(f"camera resolution changed to {rgb.shape[1]}x{rgb.shape[0]}")
        if frame is None:
            return
        if depth is not None:
            with self._depth_lock:
                self._depth_cache[frame.index] = depth
                while len(self._depth_cache) > DEPTH_CACHE_FRAMES:
                    self._depth_cache.popitem(last=False)
        self._on_frame(frame)

    def _depth_of(
        self, load_metres: Callable[[], np.ndarray], info: _CameraInfo, shape: tuple[int, int]
    ) -> FrameDepth | None:
        """The frame's depth with its intrinsics (None when the camera info is unusable); None without usable depth."""
        try:
            depth = load_metres()
        except UnreadableInput as exc:
            self.rejections.reject("depth", str(exc))
            return None
        if depth.shape != tuple(shape):
            self.rejections.reject(
                "depth",
                f"depth is {depth.shape[1]}x{depth.shape[0]}, colour is {shape[1]}x{shape[0]}; "
                "depth must be registered to the colour image",
            )
            return None
        if not np.isfinite(depth).any():
            self.rejections.reject("depth", "depth image has no valid pixel (all NaN/Inf/0)")
        try:
            # Rectified images: P holds the intrinsics of the rectified camera; fall back to K when P is unset.
            p = info.p
            k = [p[0], 0.0, p[2], 0.0, p[5], p[6], 0.0, 0.0, 1.0] if len(p) == 12 and p[0] > 0 else list(info.k)
            intrinsics = Intrinsics.from_camera_info_k(k)
            intrinsics.validate()
        except ValueError as exc:
            self.rejections.reject("camera_info", f"{exc}; 3D points disabled for this frame")
            return FrameDepth(depth, None)
        return FrameDepth(depth, intrinsics)
