"""The "detector" frame sampler: the key frame is where the instructed COCO category is detected best.

A stand-in for VISA's text-guided frame sampler that needs no video LLM: the instruction is mapped to a COCO
category (``text_to_category``), the SSD detector runs over the window (or every ``stride``-th frame of it, at
most ``max_frames`` frames, always including the newest), and the frame with the highest detection score for
that category is the key frame. Scores within ``tie_tolerance`` of the best count as ties, and ties go to the
most recent frame (its mask is the one the robot needs now, and the forward catch-up is shortest).

Detections are cached per frame (``detector.shared_detector``), so the "lite" segmenter with the same detector
options reuses them on the key frame. When the category is never detected (or the instruction names no COCO
category) the newest frame is returned with ``confidence=0`` and the reason in ``details``; the segmenter then
reports "not present".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reasonvos_ros.core.interfaces import FrameSampler
from reasonvos_ros.core.types import Frame, KeyframeChoice

from .detector import shared_detector
from .text_to_category import DEFAULT_THRESHOLD, TextToCategory


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


class DetectorFrameSampler(FrameSampler):
    """Options:

    ``stride`` (scan every n-th frame, counting back from the newest; default 1), ``max_frames`` (at most this
    many detector runs per call, 0 = no limit; default 16), ``min_score`` (detections under it do not count;
    default 0.3), ``tie_tolerance`` (scores this close to the best are ties, resolved towards the newest frame;
    default 0.05), ``text_threshold`` (instruction -> category rejection threshold), ``detector`` (options of
    ``SSDMobileNetDetector``, shared with the segmenter when equal).
    """

    def __init__(
        self,
        stride: int = 1,
        max_frames: int = 16,
        min_score: float = 0.3,
        tie_tolerance: float = 0.05,
        text_threshold: float = DEFAULT_THRESHOLD,
        detector: Mapping[str, Any] | None = None,
    ) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {max_frames}")
        if not 0.0 <= min_score <= 1.0 or not 0.0 <= tie_tolerance <= 1.0:
            raise ValueError(f"min_score and tie_tolerance must be in [0, 1], got {min_score}, {tie_tolerance}")
        self.stride = int(stride)
        self.max_frames = int(max_frames)
        self.min_score = float(min_score)
        self.tie_tolerance = float(tie_tolerance)
        self.detector = shared_detector(**dict(detector or {}))
        self.text = TextToCategory(threshold=text_threshold)

    def sample(self, frames: Sequence[Frame], instruction: str) -> KeyframeChoice:
        if not frames:
            raise ValueError("cannot sample a key frame from an empty window")
        newest = len(frames) - 1
        match = self.text.match(instruction)
        details: dict[str, Any] = {
            "sampler": "detector",
            "category": match.category,
            "category_score": match.score,
            "category_method": match.method,
        }
        if match.category is None:
            details["reason"] = match.reason
            return KeyframeChoice(key=newest, confidence=0.0, details=details)
        scanned = positions_to_scan(len(frames), self.stride, self.max_frames)
        scores: dict[int, float] = {}
        for position in scanned:
            best = self.detector.detect_frame(frames[position]).best(match.category)
            scores[position] = best[1] if best is not None and best[1] >= self.min_score else 0.0
        details["scanned"] = scanned
        details["scores"] = [scores[p] for p in scanned]
        top = max(scores.values())
        if top <= 0.0:
            details["reason"] = (
                f"no {match.category!r} detected with score >= {self.min_score} in {len(scanned)} frames"
            )
            return KeyframeChoice(key=newest, confidence=0.0, details=details)
        key = max(p for p, score in scores.items() if score >= top - self.tie_tolerance)
        return KeyframeChoice(key=key, confidence=scores[key], details=details)
