"""Deterministic TEST DOUBLES for the three model roles (not models: no learning, no reasoning).

They let the pipeline, the engine and the node be tested exactly on synthetic scenes of coloured shapes:

* ``ScriptedSegmenter`` segments the pixels of the colour named in the instruction ("the red one" -> red).
  An instruction with no known colour word gives "not present". Words ``fail``/``nan``/``oom`` in the
  instruction make it raise / return a NaN score / raise a simulated out-of-memory error (fault injection).
* ``ScriptedTracker`` re-finds the seeded colour on every frame (a perfect tracker on such scenes) and records
  the order in which each session visits frames, so tests can check backward/forward ordering.
* ``ScriptedSampler`` picks the newest frame, a fixed position or a fraction of the window.

Every call can be slowed with ``delay_s`` to test cancellation, skipping and catch-up policies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import BackendFailure, ConfigError
from ..core.interfaces import FrameSampler, KeyframeSegmenter, Tracker, TrackerSession
from ..core.options import OptionSet, option
from ..core.types import Frame, KeyframeChoice, Segmentation, TrackedMask, Understanding

COLOURS = {"red": 0, "green": 1, "blue": 2}


def colour_mask(image: np.ndarray, channel: int, margin: int = 60) -> np.ndarray:
    """Pixels where ``channel`` exceeds both other channels by ``margin`` (saturated primary colours)."""
    img = image.astype(np.int16)
    others = [c for c in range(3) if c != channel]
    return (img[..., channel] - img[..., others[0]] > margin) & (img[..., channel] - img[..., others[1]] > margin)


def colour_in(text: str) -> int | None:
    words = text.lower().replace(",", " ").replace(".", " ").split()
    for word in words:
        if word in COLOURS:
            return COLOURS[word]
    return None


def _delay_option() -> Any:
    return option(0.0, "seconds each call sleeps (tests of cancellation, skipping and catch-up)", low=0.0)


@dataclass(frozen=True)
class ScriptedSamplerOptions(OptionSet):
    position: str | float = option(
        "latest", "key frame: 'latest', 'first', or a fraction in [0, 1] of the window", low=0.0, high=1.0
    )
    delay_s: float = _delay_option()

    def check(self) -> None:
        if isinstance(self.position, str) and self.position not in ("latest", "first"):
            raise ConfigError(f"position must be 'latest', 'first' or a number in [0, 1], got {self.position!r}")


class ScriptedSampler(FrameSampler):
    """Key frame = ``position`` ("latest", "first", or a fraction in [0, 1] of the window)."""

    Options = ScriptedSamplerOptions

    def __init__(self, options: ScriptedSamplerOptions | None = None, /, **values: Any) -> None:
        self.options = ScriptedSamplerOptions.build(options, values)
        self.position = self.options.position
        self.delay_s = self.options.delay_s
        self.calls: list[tuple[int, str]] = []

    def sample(self, frames: Sequence[Frame], instruction: str) -> KeyframeChoice:
        self.calls.append((len(frames), instruction))
        if self.delay_s:
            time.sleep(self.delay_s)
        n = len(frames)
        if self.position == "latest":
            key = n - 1
        elif self.position == "first":
            key = 0
        else:
            key = min(int(n * float(self.position)), n - 1)
        return KeyframeChoice(key=key, confidence=1.0, details={"sampler": "scripted"})


@dataclass(frozen=True)
class ScriptedSegmenterOptions(OptionSet):
    delay_s: float = _delay_option()
    score: float = option(0.9, "score of every mask it returns", low=0.0, high=1.0)


class ScriptedSegmenter(KeyframeSegmenter):
    Options = ScriptedSegmenterOptions

    def __init__(self, options: ScriptedSegmenterOptions | None = None, /, **values: Any) -> None:
        self.options = ScriptedSegmenterOptions.build(options, values)
        self.delay_s = self.options.delay_s
        self.score = self.options.score
        self.calls: list[tuple[int, tuple[int, ...], str]] = []
        self.released = 0

    def segment(self, frames: Sequence[Frame], key: int, references: Sequence[int], instruction: str) -> Segmentation:
        self.calls.append((frames[key].index, tuple(references), instruction))
        if self.delay_s:
            time.sleep(self.delay_s)
        words = instruction.lower().split()
        if "fail" in words:
            raise BackendFailure("scripted segmenter failure (fault injection)")
        if "oom" in words:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        image = frames[key].image
        channel = colour_in(instruction)
        if channel is None:
            understood = Understanding("", "no colour word in the instruction", 0.0)
            return Segmentation(
                np.zeros(image.shape[:2], bool), 0.0, False, "no colour named in the instruction", {}, understood
            )
        colour = next(name for name, value in COLOURS.items() if value == channel)
        understood = Understanding(f"{colour} object", f"the instruction names the colour {colour}", 1.0)
        mask = colour_mask(image, channel)
        score = float("nan") if "nan" in words else self.score
        if not mask.any():
            return Segmentation(mask, 0.0, False, "no pixel of that colour on the key frame", {}, understood)
        return Segmentation(mask, score, True, "", {}, understood)

    def release(self) -> None:
        self.released += 1


class ScriptedTrackerSession(TrackerSession):
    def __init__(self, tracker: ScriptedTracker) -> None:
        self.tracker = tracker
        self.channels: dict[str, int] = {}
        self.visited: list[int] = []
        self.closed = False
        tracker.sessions.append(self)

    def step(self, frame: Frame, new_masks: Mapping[str, np.ndarray] | None = None) -> dict[str, TrackedMask]:
        if self.closed:
            raise RuntimeError("step on a closed session")
        self.visited.append(frame.index)
        if self.tracker.delay_s:
            time.sleep(self.tracker.delay_s)
        if self.tracker.fail_after is not None and len(self.visited) > self.tracker.fail_after:
            raise BackendFailure("scripted tracker failure (fault injection)")
        image = frame.image
        for obj_id, mask in (new_masks or {}).items():
            mean = image[np.asarray(mask, bool)].reshape(-1, 3).mean(axis=0)
            self.channels[obj_id] = int(np.argmax(mean))
        out = {}
        for obj_id, channel in self.channels.items():
            mask = colour_mask(image, channel)
            out[obj_id] = TrackedMask(mask, self.tracker.confidence)
        return out

    def close(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class ScriptedTrackerOptions(OptionSet):
    delay_s: float = _delay_option()
    confidence: float = option(0.95, "confidence of every mask it returns", low=0.0, high=1.0)
    fail_after: int | None = option(
        None, "steps a session takes before every further step raises (fault injection; null: never)", low=0
    )


class ScriptedTracker(Tracker):
    Options = ScriptedTrackerOptions

    def __init__(self, options: ScriptedTrackerOptions | None = None, /, **values: Any) -> None:
        self.options = ScriptedTrackerOptions.build(options, values)
        # Plain attributes as well as the frozen options: tests turn these knobs while a run goes on.
        self.delay_s = self.options.delay_s
        self.confidence = self.options.confidence
        self.fail_after = self.options.fail_after
        self.sessions: list[ScriptedTrackerSession] = []
        self.lock = threading.Lock()

    def new_session(self) -> ScriptedTrackerSession:
        return ScriptedTrackerSession(self)
