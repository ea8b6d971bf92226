"""The "detector" frame sampler: the key frame is a recent frame where the instructed COCO category is detected.

A stand-in for VISA's text-guided frame sampler that needs no video LLM: the instruction is mapped to COCO
categories (``text_to_category``), and the SSD detector looks for them over the window, **newest frame first**
(every ``stride``-th frame counting back from the newest, at most ``max_frames`` spread over the window). The scan
stops at the first frame with a detection of at least ``good_score`` clear of the image border: a robot needs the object's mask now, and
a recent key frame makes the forward catch-up short, so when the object is clearly visible on the newest frame
one detector run is all the sampler costs. Otherwise (the object is weakly detected or was only visible earlier)
the scan goes on, within ``max_scan_s``, and the best-scoring frame wins; scores within ``tie_tolerance`` of the
best are ties, resolved towards the newest frame. ``scan="window"`` scans every planned frame (the old
behaviour, for offline use).

Detections are cached per frame (``detector.shared_detector``), so the "lite" segmenter with the same detector
options reuses them on the key frame. When the category is never detected (or the instruction was refused) the
newest frame is returned with ``confidence=0`` and the reason in ``details``; the segmenter then reports "not
present".
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reasonvos_ros.core.interfaces import FrameSampler
from reasonvos_ros.core.options import OptionSet, option
from reasonvos_ros.core.types import Frame, KeyframeChoice

from .detector import DetectorOptions, detector_option, shared_detector_for
from .text_to_category import TextToCategory, min_understanding_option, text_threshold_option

SCANS = ("recent_first", "window")


def positions_to_scan(num_frames: int, stride: int, max_frames: int) -> list[int]:
    """Positions (oldest first) visited: every ``stride``-th counting back from the newest, at most
    ``max_frames`` of them spread evenly over the window."""
    if num_frames <= 0:
        return []
    positions = list(range(num_frames - 1, -1, -max(1, stride)))[::-1]
    if max_frames > 0 and len(positions) > max_frames:
        # Keep the newest and spread the rest evenly over the older frames.
        picks = (
            {round(i * (len(positions) - 1) / (max_frames - 1)) for i in range(max_frames)} if max_frames > 1 else {0}
        )
        positions = [positions[i] for i in sorted(picks | {len(positions) - 1})][-max_frames:]
    return positions


def _at_border(box, shape, margin: float = 2.0) -> bool:
    """Whether the box ``(x0, y0, x1, y1)`` touches the border of an image of ``shape``."""
    height, width = shape[:2]
    return bool(box[0] <= margin or box[1] <= margin or box[2] >= width - margin or box[3] >= height - margin)


@dataclass(frozen=True)
class DetectorSamplerOptions(OptionSet):
    stride: int = option(1, "scan every n-th frame, counting back from the newest", low=1)
    max_frames: int = option(16, "at most this many detector runs per call (0 = no limit)", low=0)
    min_score: float = option(0.3, "detections under this score do not count", low=0.0, high=1.0)
    good_score: float = option(
        0.5,
        "recent_first: the scan stops at the first frame, newest first, with a detection this good",
        low=0.0,
        high=1.0,
    )
    max_scan_s: float = option(0.6, "wall-clock budget of the scan after its first frame (0 = none)", low=0.0)
    scan: str = option(
        "recent_first", "recent_first: newest first, stop at a good frame; window: every planned frame", choices=SCANS
    )
    tie_tolerance: float = option(
        0.05, "scores this close to the best are ties, resolved towards the newest frame", low=0.0, high=1.0
    )
    text_threshold: float = text_threshold_option()
    min_understanding_confidence: float = min_understanding_option()
    detector: DetectorOptions = detector_option()


class DetectorFrameSampler(FrameSampler):
    """Key frame = a recent frame where the instructed category is detected (see the module docstring); the
    options are ``DetectorSamplerOptions``."""

    Options = DetectorSamplerOptions

    def __init__(self, options: DetectorSamplerOptions | None = None, /, **values: Any) -> None:
        self.options = options = DetectorSamplerOptions.build(options, values)
        self.detector = shared_detector_for(options.detector)
        self.text = TextToCategory(
            threshold=options.text_threshold, min_confidence=options.min_understanding_confidence
        )

    def sample(self, frames: Sequence[Frame], instruction: str) -> KeyframeChoice:
        if not frames:
            raise ValueError("cannot sample a key frame from an empty window")
        newest = len(frames) - 1
        match = self.text.match(instruction)
        details: dict[str, Any] = {
            "sampler": "detector",
            "category": match.category,
            "categories": list(match.categories),
            "category_score": match.score,
            "category_method": match.method,
        }
        if match.category is None:
            details["reason"] = match.reason
            return KeyframeChoice(key=newest, confidence=0.0, details=details)
        planned = positions_to_scan(len(frames), self.options.stride, self.options.max_frames)
        scores: dict[int, float] = {}
        start = time.perf_counter()
        for position in reversed(planned):  # newest first
            best = self.detector.detect_frame(frames[position]).best(match.categories)
            scores[position] = best[1] if best is not None and best[1] >= self.options.min_score else 0.0
            if self.options.scan == "recent_first":
                # A box cut by the image border may be an object half out of view: a poor key frame, look on.
                if scores[position] >= self.options.good_score and not _at_border(
                    best[0], frames[position].image.shape
                ):
                    break
                if self.options.max_scan_s > 0 and time.perf_counter() - start > self.options.max_scan_s:
                    break
        scanned = sorted(scores)
        details["scanned"] = scanned
        details["scores"] = [scores[p] for p in scanned]
        top = max(scores.values())
        if top <= 0.0:
            details["reason"] = (
                f"no {' or '.join(match.categories)} detected with score >= {self.options.min_score} in {len(scanned)} frames"
            )
            return KeyframeChoice(key=newest, confidence=0.0, details=details)
        key = max(p for p, score in scores.items() if score >= top - self.options.tie_tolerance)
        return KeyframeChoice(key=key, confidence=scores[key], details=details)
