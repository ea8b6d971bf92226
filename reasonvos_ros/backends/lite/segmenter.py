"""The "lite" key-frame segmenter: SSD box of the instructed COCO category, refined into a mask by GrabCut.

Steps: instruction -> COCO categories (``text_to_category``: what the instruction's target is, as opposed to
the context it mentions; a target the detector cannot know -> not present, with what was understood); detections
on the key frame (from the shared detector's cache when the "detector" sampler already ran on it); the most
confident box of those categories (none above ``min_score`` -> not present); GrabCut initialised with that box on a crop around it
(the crop's margin gives GrabCut its background colours), downscaled to at most ``grabcut_max_side`` pixels for
speed; the largest connected part of the result, inside the box. ``score`` is the detector's score.

What it cannot do: pick one of several instances by a relation or attribute ("the left dog", "the dog in red")
-- it always takes the most confident detection; reference frames are not used. GrabCut separates by colour,
so an object coloured like its surroundings gets a ragged mask; when GrabCut keeps less than
``min_fill`` of the box the box itself is returned as the mask (``details["method"] == "box"``).

Every segmentation carries ``understanding`` (target phrase, explanation, confidence of the reading).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from reasonvos_ros.core.interfaces import KeyframeSegmenter
from reasonvos_ros.core.types import Frame, Segmentation

from .detector import shared_detector
from .text_to_category import DEFAULT_MIN_CONFIDENCE, DEFAULT_THRESHOLD, TextToCategory

REFINEMENTS = ("grabcut", "box")


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected part of a bool mask (the mask itself when it is empty or has one part)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask.astype(bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def grabcut_from_box(
    image: np.ndarray,
    box: Sequence[float],
    iterations: int = 3,
    context_margin: float = 0.3,
    max_side: int = 192,
    seed: int = 0,
) -> np.ndarray:
    """Bool mask (image size) of the object in ``box = (x0, y0, x1, y1)`` by GrabCut on a crop around the box.

    The crop extends the box by ``context_margin`` of its size on every side; it is resized so that its longer
    side is at most ``max_side`` (GrabCut's cost grows with the pixel count). OpenCV's global RNG is seeded with
    ``seed`` because GrabCut's k-means initialisation draws from it (deterministic masks)."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    box_w, box_h = max(1.0, x1 - x0), max(1.0, y1 - y0)
    cx0 = int(max(0, np.floor(x0 - context_margin * box_w)))
    cy0 = int(max(0, np.floor(y0 - context_margin * box_h)))
    cx1 = int(min(width, np.ceil(x1 + context_margin * box_w)))
    cy1 = int(min(height, np.ceil(y1 + context_margin * box_h)))
    crop = image[cy0:cy1, cx0:cx1]
    factor = min(1.0, max_side / max(crop.shape[:2]))
    small = cv2.resize(crop, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA) if factor < 1 else crop
    sh, sw = small.shape[:2]
    rx0 = int(np.clip(np.floor((x0 - cx0) * factor), 0, sw - 1))
    ry0 = int(np.clip(np.floor((y0 - cy0) * factor), 0, sh - 1))
    rx1 = int(np.clip(np.ceil((x1 - cx0) * factor), rx0 + 1, sw))
    ry1 = int(np.clip(np.ceil((y1 - cy0) * factor), ry0 + 1, sh))
    labels = np.zeros((sh, sw), np.uint8)
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    rect = (rx0, ry0, rx1 - rx0, ry1 - ry0)
    mask_small = np.zeros((sh, sw), bool)
    if rect[2] >= 2 and rect[3] >= 2 and (rx0 > 0 or ry0 > 0 or rx1 < sw or ry1 < sh):
        cv2.setRNGSeed(seed)
        cv2.grabCut(np.ascontiguousarray(small), labels, rect, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_RECT)
        mask_small = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    # else: the box covers the whole crop, so GrabCut has no background sample; return nothing (caller falls back).
    coverage = cv2.resize(mask_small.astype(np.float32), (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros((height, width), bool)
    mask[cy0:cy1, cx0:cx1] = coverage >= 0.5
    inside = np.zeros_like(mask)
    inside[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = True
    return largest_component(mask & inside)


class DetectorGrabCutSegmenter(KeyframeSegmenter):
    """Options:

    ``min_score`` (weakest detection accepted; default 0.3), ``refine`` ("grabcut", or "box" for the filled
    box), ``grabcut_iterations`` (default 3), ``context_margin`` (crop margin around the box as a fraction of
    its size; default 0.3), ``grabcut_max_side`` (default 192 px), ``min_fill`` (a GrabCut mask covering less of
    the box falls back to the box; default 0.15), ``text_threshold`` and ``min_understanding_confidence``
    (instruction reading, see ``TextToCategory``), ``detector`` (options of ``SSDMobileNetDetector``; equal
    options share the sampler's detector and cache).
    """

    def __init__(
        self,
        min_score: float = 0.3,
        refine: str = "grabcut",
        grabcut_iterations: int = 3,
        context_margin: float = 0.3,
        grabcut_max_side: int = 192,
        min_fill: float = 0.15,
        text_threshold: float = DEFAULT_THRESHOLD,
        min_understanding_confidence: float = DEFAULT_MIN_CONFIDENCE,
        detector: Mapping[str, Any] | None = None,
    ) -> None:
        if refine not in REFINEMENTS:
            raise ValueError(f"refine must be one of {REFINEMENTS}, got {refine!r}")
        if not 0.0 <= min_score <= 1.0 or not 0.0 <= min_fill <= 1.0:
            raise ValueError(f"min_score and min_fill must be in [0, 1], got {min_score}, {min_fill}")
        if grabcut_iterations < 1 or grabcut_max_side < 16 or context_margin < 0:
            raise ValueError("grabcut_iterations must be >= 1, grabcut_max_side >= 16, context_margin >= 0")
        self.min_score = float(min_score)
        self.refine = refine
        self.grabcut_iterations = int(grabcut_iterations)
        self.context_margin = float(context_margin)
        self.grabcut_max_side = int(grabcut_max_side)
        self.min_fill = float(min_fill)
        self.detector = shared_detector(**dict(detector or {}))
        self.text = TextToCategory(threshold=text_threshold, min_confidence=min_understanding_confidence)

    def segment(self, frames: Sequence[Frame], key: int, references: Sequence[int], instruction: str) -> Segmentation:
        if not 0 <= key < len(frames):
            raise IndexError(f"key frame position {key} outside a window of {len(frames)} frames")
        frame = frames[key]
        image = frame.image
        empty = np.zeros(image.shape[:2], bool)
        match = self.text.match(instruction)
        understood = match.understanding()
        details: dict[str, Any] = {
            "category": match.category,
            "categories": list(match.categories),
            "category_score": match.score,
            "understanding_method": match.method,
        }
        if match.category is None:
            reason = f"not something the lite detector can find: {match.explanation}"
            return Segmentation(empty, 0.0, False, reason, details, understood)
        best = self.detector.detect_frame(frame).best(match.categories)
        if best is None or best[1] < self.min_score:
            found = "nothing" if best is None else f"only score {best[1]:.2f}"
            wanted = " or ".join(match.categories)
            reason = (
                f"understood '{understood.target_phrase}', but no {wanted} detected on the key frame ({found}; need "
                f">= {self.min_score})"
            )
            return Segmentation(empty, 0.0, False, reason, details, understood)
        box, score = best
        details["box"] = [float(v) for v in box]
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        box_mask = empty.copy()
        box_mask[y0:y1, x0:x1] = True
        method = "box"
        mask = box_mask
        if self.refine == "grabcut":
            cut = grabcut_from_box(
                image, box, self.grabcut_iterations, self.context_margin, self.grabcut_max_side, seed=frame.index
            )
            if cut.sum() >= self.min_fill * max(1, box_mask.sum()):
                mask, method = cut, "grabcut"
        details["method"] = method
        return Segmentation(mask, float(score), True, "", details, understood)

    def release(self) -> None:
        """Drop the cached detections (the network itself is small and stays loaded)."""
        self.detector.clear_cache()
