"""Approximate time synchronisation of several message streams, aligned with message_filters.

ROS-free: every input delivers ``(stamp, payload)`` pairs; the node feeds it header stamps of e.g. the colour
image, the aligned depth image and the CameraInfo, and gets one matched set per camera frame. Stamps are
compared as integer nanoseconds (``add`` takes float seconds, ``add_ns`` integer nanoseconds).

The node always uses this class, also where the real ``message_filters`` is importable (every full ROS install):
the behaviour is then the same on pip and full installs, and this class keeps the two guarantees below that
message_filters lacks. ``test/test_upstream_oracles.py`` runs both on generated sequences.

Policy. Rules 1-4 are those of message_filters' Python ``ApproximateTimeSynchronizer`` (Jazzy), so that both
choose the same sets; rules 5-6 are deliberate differences:

1. Each input has a queue holding at most ``queue_size`` messages; when it overflows, its oldest message is
   dropped. A message with the same stamp as one queued on its input replaces it.
2. When a message arrives, a set is looked for among those containing it: for every other input, the candidates
   are its queued messages at most ``slop`` from the arriving stamp, nearest first (equal distances: the one
   queued first). The combinations of candidates are tried in order (``itertools.product`` over the inputs in
   input order) and the first whose spread ``max - min`` is strictly below ``slop`` is delivered at once, without
   waiting for possibly closer messages. Only sets containing the arriving message can be new, so after every
   call no deliverable set remains queued.
3. The delivered messages leave their queues.
4. Callbacks run in the thread that called :meth:`add`, one set at a time, in the order the sets were formed,
   while the synchroniser's (re-entrant) lock is held: keep them short (hand the set to a worker). A callback
   may call :meth:`add` again.
5. Never out of order, never twice (differs from message_filters, which may deliver an older set after a newer
   one, and delivers a repeated stamp again): a message whose stamp is not newer than the last stamp delivered on
   its input is dropped on arrival, and after a delivery every queued message older than the delivered one on
   the same input is dropped (it could only be delivered out of order). Delivered sets are strictly increasing in
   time on every input, which the window (a time line) and the 3D points (depth of *that* frame) rely on.
6. Identical stamps always form a set, also with ``slop`` 0 (message_filters, where nothing is strictly below
   a slop of 0, never delivers then): slop 0 means exact synchronisation.

With a single input every message is delivered immediately (subject to rule 5).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["ApproximateTimeSynchronizer", "Stamped"]


class Stamped(NamedTuple):
    """One message of a delivered set (``stamp`` in seconds)."""

    stamp: float
    payload: Any


@dataclass
class _Queued:
    stamp_ns: int
    order: int  # when the stamp was first queued on its input (message_filters' dict order): breaks ties
    payload: Any


def _seconds_to_ns(seconds: float) -> int:
    return round(float(seconds) * 1e9)


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
        self._slop_ns = _seconds_to_ns(slop)
        self._callbacks: list[Callable[..., Any]] = [callback] if callback is not None else []
        self._lock = threading.RLock()
        self._queues: list[list[_Queued]] = [[] for _ in range(self.num_inputs)]  # each sorted by stamp
        self._last_delivered: list[int | None] = [None] * self.num_inputs
        self._order = itertools.count()
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
        """Stamps (seconds) currently queued on input ``index`` (oldest first)."""
        self._check_index(index)
        with self._lock:
            return [item.stamp_ns / 1e9 for item in self._queues[index]]

    def reset(self) -> None:
        """Forget every queued message and the delivery history (e.g. after a bag loops or time jumps back)."""
        with self._lock:
            for queue in self._queues:
                queue.clear()
            self._last_delivered = [None] * self.num_inputs

    def add(self, index: int, stamp: float, payload: Any) -> tuple[Stamped, ...] | None:
        """Offer one message stamped ``stamp`` seconds; returns the set delivered because of it, if any."""
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be a finite number of seconds, got {stamp}")
        return self.add_ns(index, _seconds_to_ns(stamp), payload)

    def add_ns(self, index: int, stamp_ns: int, payload: Any) -> tuple[Stamped, ...] | None:
        """Offer one message stamped ``stamp_ns`` integer nanoseconds (exact: a header's sec * 1e9 + nanosec)."""
        self._check_index(index)
        with self._lock:
            matched = self._insert_and_match(index, int(stamp_ns), payload)
            if matched is not None:
                self.delivered += 1
                for callback in list(self._callbacks):
                    callback(*matched)
            return matched

    # ------------------------------------------------------------------------------------------------ internals

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.num_inputs:
            raise IndexError(f"input index {index} out of range for {self.num_inputs} inputs")

    def _insert_and_match(self, index: int, stamp_ns: int, payload: Any) -> tuple[Stamped, ...] | None:
        last = self._last_delivered[index]
        if last is not None and stamp_ns <= last:  # rule 5
            self.dropped[index] += 1
            return None
        queue = self._queues[index]
        arriving = next((item for item in queue if item.stamp_ns == stamp_ns), None)
        if arriving is not None:  # rule 1: same stamp replaces (keeping its place in the tie order)
            arriving.payload = payload
            self.dropped[index] += 1
        else:
            arriving = _Queued(stamp_ns, next(self._order), payload)
            queue.append(arriving)
            queue.sort(key=lambda item: item.stamp_ns)
            if len(queue) > self.queue_size:
                oldest = queue.pop(0)
                self.dropped[index] += 1
                if oldest is arriving:
                    return None

        candidates = []  # rule 2
        for other in range(self.num_inputs):
            if other == index:
                candidates.append([arriving])
                continue
            near = [item for item in self._queues[other] if abs(item.stamp_ns - stamp_ns) <= self._slop_ns]
            if not near:
                return None
            near.sort(key=lambda item: (abs(item.stamp_ns - stamp_ns), item.order))
            candidates.append(near)
        for combination in itertools.product(*candidates):
            stamps = [member.stamp_ns for member in combination]
            spread = max(stamps) - min(stamps)
            if spread < self._slop_ns or spread == 0:  # rule 6: identical stamps match with any slop
                break
        else:
            return None

        for other, member in enumerate(combination):  # rules 3 and 5
            remaining = []
            for queued in self._queues[other]:
                if queued is member:
                    continue
                if queued.stamp_ns < member.stamp_ns:
                    self.dropped[other] += 1
                    continue
                remaining.append(queued)
            self._queues[other] = remaining
            self._last_delivered[other] = member.stamp_ns
        return tuple(Stamped(member.stamp_ns / 1e9, member.payload) for member in combination)
