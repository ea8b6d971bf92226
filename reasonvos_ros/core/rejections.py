"""Counting what the live node refuses or trips over (ROS-free): rejected inputs and exceptions in callbacks.

Both report through a logger object with ``warning`` / ``error`` methods (rclpy's, or any stand-in) and keep
counts that the diagnostics show; neither ever raises on behalf of the input it reports.
"""

from __future__ import annotations

import functools
import re
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["MAX_LOGGED_CHARS", "CallbackFailures", "CallbackGuard", "RejectionCounter", "Rejections"]

MAX_LOGGED_CHARS = 300  # rejected inputs can be megabytes (a 1 MB instruction): log lines show the start only

# Sender-controlled parts of rejection messages: quoted text (repr of names, ids) and numbers.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class Rejections(Protocol):
    """Where the core reports an input it refuses: ``category`` names the counter, ``message`` says why."""

    def reject(self, category: str, message: str) -> None: ...


class RejectionCounter:
    """Counts rejected inputs per category (reported in diagnostics) and rate-limits their log lines.

    Log lines are rate-limited per kind of problem: the message with what the sender controls masked (quoted
    text such as encoding names and target ids, numbers), so varying that text cannot flood the log; and at most
    ``kinds_per_period`` kinds per category are logged per period. The counts always cover every rejection."""

    def __init__(self, logger: Any, period_s: float = 5.0, kinds_per_period: int = 4) -> None:
        self.logger = logger
        self.period_s = period_s
        self.kinds_per_period = kinds_per_period
        self.counts: dict[str, int] = {}
        self._last_log: dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def kind_of(category: str, message: str) -> str:
        masked = _QUOTED.sub("'…'", message)
        return category + ":" + _NUMBER.sub("#", masked)[:80]

    def reject(self, category: str, message: str) -> None:
        now = time.monotonic()
        key = self.kind_of(category, message)
        with self._lock:
            self.counts[category] = self.counts.get(category, 0) + 1
            if now - self._last_log.get(key, -1e9) < self.period_s:
                return
            prefix = category + ":"
            recent = sum(1 for k, t in self._last_log.items() if k.startswith(prefix) and now - t < self.period_s)
            if recent >= self.kinds_per_period:
                return
            self._last_log[key] = now
            if len(self._last_log) > 1000:  # forget old kinds (the keys are bounded per period, not in total)
                self._last_log = {k: t for k, t in self._last_log.items() if now - t < self.period_s}
            count = self.counts[category]
        if len(message) > MAX_LOGGED_CHARS:
            message = message[:MAX_LOGGED_CHARS] + f"... ({len(message)} characters)"
        self.logger.warning(f"rejected {category} ({count} so far): {message}")

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


class CallbackFailures:
    """Exceptions that escaped a callback: counted per kind (callback + exception type), logged once per kind
    with the traceback, and contained (an exception reaching the executor would end the node)."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, callback: str, exc: BaseException) -> None:
        kind = f"{callback}:{type(exc).__name__}"
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            first = self.counts[kind] == 1
        if first:
            text = "".join(traceback.format_exception(exc))[-4000:]
            self.logger.error(
                f"unexpected {type(exc).__name__} in the {callback} callback (contained; counted as "
                f"callback_errors[{kind}] in diagnostics, logged once): {exc}\n{text}"
            )

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


class CallbackGuard:
    """Wraps callbacks so that no exception escapes them (an exception reaching the executor would end the node)
    and counts the ones running, so that a shutdown can wait for them (bounded)."""

    def __init__(self, failures: CallbackFailures, is_running: Callable[[], bool]) -> None:
        self.failures = failures
        self._is_running = is_running  # False while shutting down: failures then are expected, not recorded
        self._in_flight = 0
        self._done = threading.Condition()

    def wrap(self, name: str, callback: Callable[..., Any], *, service: bool = False) -> Callable[..., Any]:
        """``callback`` with every exception contained: counted and logged once per kind (see CallbackFailures).
        A service callback (``args`` = request, response) answers ``success = False`` with the reason instead."""

        @functools.wraps(callback)
        def guarded(*args):
            with self._done:
                self._in_flight += 1
            try:
                return callback(*args)
            except Exception as exc:
                if self._is_running():
                    self.failures.record(name, exc)
                if not service:
                    return None
                response = args[1]
                response.success = False
                if hasattr(response, "message"):
                    response.message = f"internal error: {type(exc).__name__}: {exc}"[:MAX_LOGGED_CHARS]
                return response
            finally:
                with self._done:
                    self._in_flight -= 1
                    self._done.notify_all()

        return guarded

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no wrapped callback runs; False on timeout."""
        with self._done:
            return self._done.wait_for(lambda: self._in_flight == 0, timeout)
