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
from collections.abc import Mapping, Sequence
from typing import Any

from reasonvos_ros.core.interfaces import FrameSampler
from reasonvos_ros.core.types import Frame, KeyframeChoice

from .detector import shared_detector
from .text_to_category import DEFAULT_MIN_CONFIDENCE, DEFAULT_THRESHOLD, TextToCategory

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


class DetectorFrameSampler(FrameSampler):
    """Options:

    ``stride`` (scan every n-th frame, counting back from the newest; default 1), ``max_frames`` (at most this
    many detector runs per call, 0 = no limit; default 16), ``min_score`` (detections under it do not count;
    default 0.3), ``good_score`` (``scan="recent_first"`` stops at the first frame, newest first, with a detection
    this good; default 0.5), ``max_scan_s`` (wall-clock budget of the scan after its first frame, 0 = none;
    default 0.6), ``scan`` ("recent_first" or "window"), ``tie_tolerance`` (scores this close to the best are
    ties, resolved towards the newest frame; default 0.05), ``text_threshold`` and ``min_understanding_confidence``
    (instruction reading, see ``TextToCategory``), ``detector`` (options of ``SSDMobileNetDetector``, shared with
    the segmenter when equal).
    """

    def __init__(
        self,
        stride: int = 1,
        max_frames: int = 16,
        min_score: float = 0.3,
        good_score: float = 0.5,
        max_scan_s: float = 0.6,
        scan: str = "recent_first",
        tie_tolerance: float = 0.05,
        text_threshold: float = DEFAULT_THRESHOLD,
        min_understanding_confidence: float = DEFAULT_MIN_CONFIDENCE,
        detector: Mapping[str, Any] | None = None,
    ) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {max_frames}")
        if not 0.0 <= min_score <= 1.0 or not 0.0 <= tie_tolerance <= 1.0 or not 0.0 <= good_score <= 1.0:
            raise ValueError(
                f"min_score, good_score and tie_tolerance must be in [0, 1], got {min_score}, {good_score}, "
                f"{tie_tolerance}"
            )
        if scan not in SCANS:
            raise ValueError(f"scan must be one of {SCANS}, got {scan!r}")
        if max_scan_s < 0:
            raise ValueError(f"max_scan_s must be >= 0, got {max_scan_s}")
        self.stride = int(stride)
        self.max_frames = int(max_frames)
        self.min_score = float(min_score)
        self.good_score = float(good_score)
        self.max_scan_s = float(max_scan_s)
        self.scan = scan
        self.tie_tolerance = float(tie_tolerance)
        self.detector = shared_detector(**dict(detector or {}))
        self.text = TextToCategory(threshold=text_threshold, min_confidence=min_understanding_confidence)

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
        planned = positions_to_scan(len(frames), self.stride, self.max_frames)
        scores: dict[int, float] = {}
        start = time.perf_counter()
        for position in reversed(planned):  # newest first
            best = self.detector.detect_frame(frames[position]).best(match.categories)
            scores[position] = best[1] if best is not None and best[1] >= self.min_score else 0.0
            if self.scan == "recent_first":
                # A box cut by the image border may be an object half out of view: a poor key frame, look on.
                if scores[position] >= self.good_score and not _at_border(best[0], frames[position].image.shape):
                    break
                if self.max_scan_s > 0 and time.perf_counter() - start > self.max_scan_s:
                    break
        scanned = sorted(scores)
        details["scanned"] = scanned
        details["scores"] = [scores[p] for p in scanned]
        top = max(scores.values())
        if top <= 0.0:
            details["reason"] = (
                f"no {' or '.join(match.categories)} detected with score >= {self.min_score} in {len(scanned)} frames"
            )
            return KeyframeChoice(key=newest, confidence=0.0, details=details)
        key = max(p for p, score in scores.items() if score >= top - self.tie_tolerance)
        return KeyframeChoice(key=key, confidence=scores[key], details=details)
