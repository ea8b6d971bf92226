"""Approximate time synchronisation of several message streams (message_filters is not installable here).

ROS-free: every input delivers ``(stamp_seconds, payload)`` pairs; the node feeds it header stamps of e.g. the
colour image, the aligned depth image and the CameraInfo, and gets one matched set per camera frame.

Policy (the same contract as message_filters' ``ApproximateTimeSynchronizer``: bounded queues, slop, no message
delivered twice; where message_filters leaves details open, this module fixes them as follows):

1. Each input has a queue ordered by stamp holding at most ``queue_size`` messages; when it overflows, its oldest
   message is dropped.
2. A message whose stamp is not newer than the last stamp delivered on its input is dropped on arrival
   (delivered sets are strictly increasing in time on every input). A message with the same stamp as one already
   queued on its input replaces it (the queued one is dropped).
3. When a message arrives, the synchroniser looks for a set made of that message and one queued message of every
   other input whose stamps all lie within ``slop`` seconds of each other (``max - min <= slop``, with 1 us of tolerance). Among such
   sets it picks the one with the smallest spread (ties: the oldest newest stamp, then the smallest total
   distance to the arriving message) and delivers it at once, without waiting for possibly closer messages.
   Only sets containing the arriving message can be new, so after every call no deliverable set remains queued.
4. The delivered messages leave their queues, and every queued message older than the delivered one on the same
   input is dropped (it could only be delivered out of order).
5. Callbacks run in the thread that called :meth:`add`, one set at a time, in the order the sets were formed,
   while the synchroniser's (re-entrant) lock is held: keep them short (hand the set to a worker). A callback
   may call :meth:`add` again.

With a single input every message is delivered immediately (subject to rule 2).
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["ApproximateTimeSynchronizer", "Stamped"]

# Stamps are float seconds: 1.05 - 1.0 > 0.05 in binary floating point, and a float64 Unix time resolves only
# ~0.2 us. One microsecond of tolerance keeps "within slop" meaning what it says.
_TOLERANCE = 1e-6


class Stamped(NamedTuple):
    """One message of a delivered set."""

    stamp: float
    payload: Any


class ApproximateTimeSynchronizer:
    """Match messages of ``num_inputs`` streams whose stamps lie within ``slop`` seconds (see module docstring).

    ``callback(*items)`` receives one :class:`Stamped` per input, in input order. :meth:`add` also returns the
    delivered set (or ``None``), so the synchroniser can be used without callbacks.
    """

    def __init__(
        self,
        num_inputs: int,
        queue_size: int,
        slop: float,
        callback: Callable[..., Any] | None = None,
    ) -> None:
        if int(num_inputs) < 1:
            raise ValueError(f"num_inputs must be >= 1, got {num_inputs}")
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not (math.isfinite(slop) and slop >= 0):
            raise ValueError(f"slop must be a finite number of seconds >= 0, got {slop}")
        self.num_inputs = int(num_inputs)
        self.queue_size = int(queue_size)
        self.slop = float(slop)
        self._callbacks: list[Callable[..., Any]] = [callback] if callback is not None else []
        self._lock = threading.RLock()
        self._queues: list[list[Stamped]] = [[] for _ in range(self.num_inputs)]
        self._last_delivered: list[float] = [-math.inf] * self.num_inputs
        self.dropped: list[int] = [0] * self.num_inputs  # messages never delivered, per input
        self.delivered = 0  # number of delivered sets

    def register_callback(self, callback: Callable[..., Any]) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def input(self, index: int) -> Callable[[float, Any], tuple[Stamped, ...] | None]:
        """A function ``feed(stamp, payload)`` for input ``index`` (convenient as a subscription callback)."""
        self._check_index(index)
        return lambda stamp, payload: self.add(index, stamp, payload)

    def queued(self, index: int) -> list[float]:
        """Stamps currently queued on input ``index`` (oldest first)."""
        self._check_index(index)
        with self._lock:
            return [item.stamp for item in self._queues[index]]

    def reset(self) -> None:
        """Forget every queued message and the delivery history (e.g. after a bag loops or time jumps back)."""
        with self._lock:
            for queue in self._queues:
                queue.clear()
            self._last_delivered = [-math.inf] * self.num_inputs

    def add(self, index: int, stamp: float, payload: Any) -> tuple[Stamped, ...] | None:
        """Offer one message; returns the set delivered because of it, if any."""
        self._check_index(index)
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be a finite number of seconds, got {stamp}")
        with self._lock:
            matched = self._insert_and_match(index, Stamped(stamp, payload))
            if matched is not None:
                self.delivered += 1
                for callback in list(self._callbacks):
                    callback(*matched)
            return matched

    # ------------------------------------------------------------------------------------------------ internals

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.num_inputs:
            raise IndexError(f"input index {index} out of range for {self.num_inputs} inputs")

    def _insert_and_match(self, index: int, item: Stamped) -> tuple[Stamped, ...] | None:
        if item.stamp <= self._last_delivered[index]:
            self.dropped[index] += 1
            return None
        queue = self._queues[index]
        stamps = [queued.stamp for queued in queue]
        position = bisect.bisect_left(stamps, item.stamp)
        if position < len(queue) and queue[position].stamp == item.stamp:
            queue[position] = item
            self.dropped[index] += 1
        else:
            queue.insert(position, item)
        if len(queue) > self.queue_size:
            oldest = queue.pop(0)
            self.dropped[index] += 1
            if oldest is item:
                return None

        best_key, best_set = None, None
        candidates = [
            [item]
            if other == index
            else [q for q in self._queues[other] if abs(q.stamp - item.stamp) <= self.slop + _TOLERANCE]
            for other in range(self.num_inputs)
        ]
        for combination in itertools.product(*candidates):
            times = [member.stamp for member in combination]
            spread = max(times) - min(times)
            if spread > self.slop + _TOLERANCE:
                continue
            key = (spread, max(times), sum(abs(t - item.stamp) for t in times))
            if best_key is None or key < best_key:
                best_key, best_set = key, combination
        if best_set is None:
            return None

        for other, member in enumerate(best_set):
            remaining = []
            for queued in self._queues[other]:
                if queued is member:
                    continue
                if queued.stamp < member.stamp:
                    self.dropped[other] += 1
                    continue
                remaining.append(queued)
            self._queues[other] = remaining
            self._last_delivered[other] = member.stamp
        return tuple(best_set)
