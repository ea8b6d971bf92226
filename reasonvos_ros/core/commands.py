"""What the live node's instruction topics and its reset / enable services do to the engine (ROS-free).

The node converts the messages and answers the services; the decisions are here: an instruction while the node
is not active is rejected; an invalid one is rejected with the engine's reason; the same instruction again is
counted, not restarted; one that arrives before any camera frame is accepted with a warning.
"""

from __future__ import annotations

import threading
from collections.abc import Sized
from typing import Any

from .engine import LiveEngine
from .rejections import Rejections

__all__ = ["TargetCommands"]


class TargetCommands:
    """``logger`` has ``info`` and ``warning``; ``rejections`` counts what is refused; ``image_topic`` (the frames'
    source) words the warning about an instruction that came first. Counters for diagnostics: ``repeated``
    (identical instructions, ignored) and ``lost`` (reported lost in transport)."""

    def __init__(self, rejections: Rejections, logger: Any, image_topic: str) -> None:
        self.rejections = rejections
        self.logger = logger
        self.image_topic = image_topic
        self.repeated = 0
        self.lost = 0
        self._lock = threading.Lock()

    def instructions_lost(self, count: int, total: int) -> None:
        with self._lock:
            self.lost += count
        self.rejections.reject("instruction_lost", f"{total} instruction message(s) lost in transport")

    def instruct(self, engine: LiveEngine | None, window: Sized, target_id: str, text: str, source: str) -> None:
        """Give target ``target_id`` the instruction ``text`` (from ``source``, for the log). ``engine`` is None
        while the node is not active; ``window`` holds the frames it will run on."""
        if engine is None:
            self.rejections.reject("instruction", f"target {target_id[:64]!r}: the node is not active")
            return
        previous = engine.targets().get(target_id.strip() or "default")
        try:
            state = engine.set_instruction(target_id, text)
        except ValueError as exc:
            self.rejections.reject("instruction", f"target {target_id!r}: {exc}")
            return
        if state is previous:  # the same instruction again: the target keeps following it (not restarted)
            with self._lock:
                self.repeated += 1
            return
        self.logger.info(f"instruction for {state.target_id!r} ({source}): {state.instruction!r}")
        if len(window) == 0:
            self.logger.warning(
                f"instruction for {state.target_id!r} arrived before the first camera frame; "
                f"it will run when frames arrive on '{self.image_topic}'"
            )

    def reset(self, engine: LiveEngine | None, target_id: str) -> tuple[bool, str]:
        """Reset one target (``target_id`` stripped) or, for "", every target; (success, what happened)."""
        target_id = target_id.strip()
        if engine is None:
            return False, "node is not configured"
        if engine.reset(target_id or None):
            return True, f"reset {target_id!r}" if target_id else "reset all targets"
        known = ", ".join(sorted(engine.targets())) or "none"
        message = f"unknown target {target_id!r} (known: {known})"
        self.rejections.reject("reset", message)
        return False, message

    def enable(self, engine: LiveEngine | None, enabled: bool) -> tuple[bool, str]:
        """Resume (True) or pause (False) processing; (success, what happened)."""
        if engine is None:
            return False, "node is not configured"
        engine.set_enabled(enabled)
        message = "processing enabled" if enabled else "processing paused"
        self.logger.info(message)
        return True, message
