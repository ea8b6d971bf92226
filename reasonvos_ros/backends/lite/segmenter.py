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

``verify`` re-checks a tracked mask with the detector (cheap: the detector's per-frame cache is shared, so one
forward pass serves every target on a frame): the detections of the target's categories are associated with the
mask by box overlap and colour appearance (a hue-saturation histogram of the key-frame mask vs. the inside of
each box). A well-overlapping detection supports the mask (support = its box IoU); a detection that overlaps a
little, or lies near the mask and looks like the target, means the track drifted: its GrabCut mask is returned
as a correction; no such detection contradicts the mask (support 0). A small mask that a detection overlaps too little to support is
looked at again on an enlarged crop around it (the network sees the whole frame at 300x300, where a pedestrian
far away is a few pixels wide and its box is coarse); only a detection on that crop that supports or corrects
the mask changes the outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from reasonvos_ros.core.errors import ConfigError
from reasonvos_ros.core.interfaces import KeyframeSegmenter
from reasonvos_ros.core.options import OptionSet, option
from reasonvos_ros.core.types import Evidence, Frame, Segmentation

from .detector import Detections, DetectorOptions, detector_option, shared_detector_for
from .text_to_category import TextToCategory, min_understanding_option, text_threshold_option

REFINEMENTS = ("grabcut", "box")
# ``refind`` refuses when the two best-looking detections where the target was are this close in colour
# similarity: after two similar people cross, choosing one would be a coin toss reported as tracking.
REFIND_MARGIN = 0.1


def appearance_histogram(image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """Normalised hue-saturation histogram (16 x 8 bins, float32) of the pixels of ``mask``; None when empty."""
    if not mask.any():
        return None
    hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], mask.astype(np.uint8), [16, 8], [0, 180, 0, 256])
    total = float(hist.sum())
    return (hist / total).astype(np.float32) if total > 0 else None


def _looks_like(reference: np.ndarray | None, image: np.ndarray, box: Sequence[float]) -> float:
    """``appearance_similarity`` of ``reference`` and the central part of ``box`` on ``image``."""
    return appearance_similarity(reference, appearance_histogram(image, _inner_box_mask(image.shape[:2], box)))


def appearance_similarity(first: np.ndarray | None, second: np.ndarray | None) -> float:
    """1 - Bhattacharyya distance of two histograms from ``appearance_histogram`` (1 = same colours)."""
    if first is None or second is None:
        return 0.0
    return float(1.0 - cv2.compareHist(first, second, cv2.HISTCMP_BHATTACHARYYA))


def box_iou(box: Sequence[float], boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(x0, y0, x1, y1)`` box with each row of ``boxes`` (N x 4)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _inner_box_mask(shape: tuple[int, int], box: Sequence[float], shrink: float = 0.2) -> np.ndarray:
    """The central part of a box (``shrink`` of its size off each side): mostly object pixels."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = shrink * (x1 - x0), shrink * (y1 - y0)
    mask = np.zeros(shape, bool)
    mask[int(y0 + dy) : max(int(y0 + dy) + 1, int(y1 - dy)), int(x0 + dx) : max(int(x0 + dx) + 1, int(x1 - dx))] = True
    return mask


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


@dataclass(frozen=True)
class LiteSegmenterOptions(OptionSet):
    min_score: float = option(0.3, "weakest detection accepted", low=0.0, high=1.0)
    refine: str = option("grabcut", "grabcut: GrabCut mask inside the box; box: the filled box", choices=REFINEMENTS)
    grabcut_iterations: int = option(3, "GrabCut iterations", low=1)
    context_margin: float = option(0.3, "crop margin around the box, as a fraction of its size", low=0.0)
    grabcut_max_side: int = option(192, "GrabCut runs on the crop downscaled to at most this many pixels", low=16)
    min_fill: float = option(0.15, "a GrabCut mask covering less of the box falls back to the box", low=0.0, high=1.0)
    text_threshold: float = text_threshold_option()
    min_understanding_confidence: float = min_understanding_option()
    verify_min_score: float = option(0.3, "weakest detection the live re-check counts", low=0.0, high=1.0)
    verify_support_iou: float = option(
        0.45, "box IoU from which a detection supports the tracked mask as it is (> 0)", low=0.0, high=1.0
    )
    verify_min_appearance: float = option(
        0.5,
        "colour similarity a detection needs to be taken as the target when it overlaps the mask little",
        low=0.0,
        high=1.0,
    )
    verify_zoom_below: float = option(
        0.25,
        "a mask whose box's longer side is under this fraction of the frame's shorter side, overlapped by a detection "
        "too little to be supported, is checked again on an enlarged crop around it (0 = never): the detector's "
        "300x300 view of the whole frame localises small objects coarsely",
        low=0.0,
        high=1.0,
    )
    verify_zoom_context: float = option(
        3.0, "size of that crop, in multiples of the mask box's longer side (at least 64 px)", low=1.0
    )
    detector: DetectorOptions = detector_option()

    def check(self) -> None:
        if self.verify_support_iou <= 0.0:
            raise ConfigError(f"verify_support_iou must be in (0, 1], got {self.verify_support_iou}")


class DetectorGrabCutSegmenter(KeyframeSegmenter):
    """Detector box refined by GrabCut (see the module docstring); the options are ``LiteSegmenterOptions``."""

    Options = LiteSegmenterOptions

    def __init__(self, options: LiteSegmenterOptions | None = None, /, **values: Any) -> None:
        self.options = options = LiteSegmenterOptions.build(options, values)
        self.detector = shared_detector_for(options.detector)
        self.text = TextToCategory(
            threshold=options.text_threshold, min_confidence=options.min_understanding_confidence
        )

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
        if best is None or best[1] < self.options.min_score:
            found = "nothing" if best is None else f"only score {best[1]:.2f}"
            wanted = " or ".join(match.categories)
            reason = (
                f"understood '{understood.target_phrase}', but no {wanted} detected on the key frame ({found}; need "
                f">= {self.options.min_score})"
            )
            return Segmentation(empty, 0.0, False, reason, details, understood)
        box, score = best
        details["box"] = [float(v) for v in box]
        mask, method = self._mask_in_box(image, box, frame.index, self.options.refine == "grabcut")
        details["method"] = method
        details["appearance"] = appearance_histogram(image, mask)
        return Segmentation(mask, float(score), True, "", details, understood)

    def verify(
        self,
        frame: Frame,
        mask: np.ndarray,
        segmentation: Segmentation,
        predicted_box: tuple[float, float, float, float] | None = None,
    ) -> Evidence | None:
        categories = segmentation.details.get("categories")
        if not categories:
            return None  # not one of this segmenter's segmentations
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return Evidence(0.0, "empty mask")
        cols = np.flatnonzero(mask.any(axis=0))
        box = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
        found = self.detector.detect_frame(frame).of_categories(categories)
        evidence, overlap = self._associate(frame, mask, box, segmentation, predicted_box, found)
        height, width = mask.shape
        small = max(box[2] - box[0], box[3] - box[1]) < self.options.verify_zoom_below * min(height, width)
        if evidence.support <= 0.0 and evidence.correction is None and small and overlap > 0.0:
            # A detection overlaps the small mask, but too little to support it: the network sees the whole frame
            # at 300x300, where a small person is a few pixels and its box is coarse. Look again, closer.
            zoomed, _ = self._associate(
                frame, mask, box, segmentation, predicted_box, self._detect_around(frame.image, box, categories)
            )
            if zoomed.support > 0.0 or zoomed.correction is not None:
                zoomed.reason += " (on an enlarged crop around the mask)"
                return zoomed
        return evidence

    def _detect_around(self, image: np.ndarray, box, categories) -> Detections:
        """Detections of ``categories`` on a square crop ``verify_zoom_context`` times the box's longer side (at
        least 64 px), centred on the box, in image coordinates. Not cached: it depends on the box."""
        height, width = image.shape[:2]
        side = max(64.0, self.options.verify_zoom_context * max(box[2] - box[0], box[3] - box[1]))
        centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        x0 = int(np.clip(round(centre_x - side / 2), 0, max(0, width - side)))
        y0 = int(np.clip(round(centre_y - side / 2), 0, max(0, height - side)))
        x1, y1 = min(width, x0 + int(side)), min(height, y0 + int(side))
        found = self.detector.detect(np.ascontiguousarray(image[y0:y1, x0:x1])).of_categories(categories)
        offset = np.array([x0, y0, x0, y0], np.float32)
        return Detections(found.boxes + offset, found.class_ids, found.scores)

    def _associate(self, frame, mask, box, segmentation, predicted_box, found: Detections) -> tuple[Evidence, float]:
        """``verify`` with the detections ``found`` (of the target's categories, image coordinates): (evidence,
        the best box IoU of a detection with the mask)."""
        categories = segmentation.details["categories"]
        wanted = " or ".join(categories)
        keep = found.scores >= self.options.verify_min_score
        boxes, scores = found.boxes[keep], found.scores[keep]
        if not len(scores):
            return Evidence(0.0, f"the detector sees no {wanted} on this frame"), 0.0
        overlaps = box_iou(box, boxes)
        on_path = box_iou(predicted_box, boxes) if predicted_box is not None else None
        best = int(np.argmax(overlaps))
        consistent = on_path is None or on_path[best] >= 0.2
        # Located unambiguously: the one detection at the mask (and on the predicted path, when there is one).
        located = None
        if int(np.count_nonzero(overlaps >= 0.1)) == 1 and consistent:
            located = tuple(float(v) for v in boxes[best])
        if overlaps[best] >= self.options.verify_support_iou and consistent:
            support = float(overlaps[best])
            return Evidence(
                support, f"a {wanted} detection overlaps the mask (box IoU {support:.2f})", None, located
            ), float(overlaps[best])
        # The mask matches no detection, or one away from where the target's motion leads (the track jumped to a
        # similar object): is the target a detection near it, recognisable by its colours and, when the motion
        # is known, on its path?
        reference = segmentation.details.get("appearance")
        image = frame.image
        size = max(box[2] - box[0], box[3] - box[1])
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        candidates = []
        for index, candidate in enumerate(boxes):
            if on_path is not None:
                if on_path[index] < 0.2:
                    continue  # not where the target's motion leads
                closeness = float(on_path[index])
            else:
                distance = float(np.linalg.norm((candidate[:2] + candidate[2:]) / 2 - centre))
                if overlaps[index] <= 0.0 and distance > size:
                    continue  # too far from where the target was to be it
                closeness = float(overlaps[index])
            similarity = _looks_like(reference, image, candidate)
            # Colours like the target's, or a large part of the mask (a mask grown over a neighbour, or lagging);
            # squarely on the predicted path, colours need only be roughly alike.
            on_course = on_path is not None and on_path[index] >= 0.3
            needed = 0.6 * self.options.verify_min_appearance if on_course else self.options.verify_min_appearance
            if similarity >= needed or overlaps[index] >= (0.2 if on_course else 0.3):
                candidates.append((similarity + closeness, index, similarity))
        if not candidates:
            if overlaps[best] >= self.options.verify_support_iou:
                # A detection supports the mask but not the motion, and nothing is on the path: the target may
                # have turned. Weak support: the mask stays, the score drops.
                support = 0.5 * float(overlaps[best])
                return Evidence(
                    support, f"a {wanted} detection overlaps the mask, off the target's predicted path", None, None
                ), float(overlaps[best])
            return Evidence(
                0.0,
                f"no {wanted} detection at the mask (best box IoU {overlaps[best]:.2f}) or near it looking like the "
                f"target",
            ), float(overlaps[best])
        _, index, similarity = max(candidates)
        if overlaps[index] >= self.options.verify_support_iou:
            support = float(overlaps[index])
            return Evidence(
                support, f"a {wanted} detection overlaps the mask (box IoU {support:.2f})", None, located
            ), float(overlaps[best])
        reason = (
            f"the track drifted: re-seeded on a {wanted} detection (box IoU with the mask {overlaps[index]:.2f}, "
            f"colour similarity {similarity:.2f})"
        )
        located = len(candidates) == 1
        return self._reseed_on(frame, boxes[index], float(scores[index]) * similarity, reason, located), float(
            overlaps[best]
        )

    def refind(
        self,
        frame: Frame,
        expected_box: tuple[float, float, float, float],
        segmentation: Segmentation,
        predicted_box: tuple[float, float, float, float] | None = None,
    ) -> Evidence | None:
        categories = segmentation.details.get("categories")
        if not categories:
            return None
        found = self.detector.detect_frame(frame).of_categories(categories)
        keep = found.scores >= self.options.verify_min_score
        boxes, scores = found.boxes[keep], found.scores[keep]
        if not len(scores):
            return None
        image = frame.image
        expected = np.asarray(expected_box, np.float64)
        size = max(expected[2] - expected[0], expected[3] - expected[1], 1.0)
        centre = (expected[:2] + expected[2:]) / 2
        overlaps = box_iou(expected, boxes)
        on_path = box_iou(predicted_box, boxes) if predicted_box is not None else np.zeros(len(boxes))
        reference = segmentation.details.get("appearance")
        ranked = []
        for index, candidate in enumerate(boxes):
            distance = float(np.linalg.norm((candidate[:2] + candidate[2:]) / 2 - centre))
            if overlaps[index] < 0.1 and on_path[index] < 0.2 and distance > size:
                continue  # not where the target was or is heading
            similarity = _looks_like(reference, image, candidate)
            if similarity >= self.options.verify_min_appearance:
                ranked.append((similarity, index))
        if not ranked:
            return None
        ranked.sort(reverse=True)
        if len(ranked) > 1 and ranked[0][0] - ranked[1][0] < REFIND_MARGIN:
            return None  # two look-alikes where the target was: taking either would be a guess
        similarity, index = ranked[0]
        wanted = " or ".join(categories)
        reason = f"the track was lost: re-found on a {wanted} detection where the target was (colour similarity {similarity:.2f})"
        return self._reseed_on(frame, boxes[index], float(scores[index]) * similarity, reason, located=True)

    def _reseed_on(self, frame: Frame, box, support: float, reason: str, located: bool) -> Evidence:
        """Evidence whose correction is the object's mask inside the detection ``box`` (``box`` is given as the
        target's location when ``located``: it was found unambiguously)."""
        mask, _ = self._mask_in_box(frame.image, box, frame.index)
        return Evidence(support, reason, mask, tuple(float(v) for v in box) if located else None)

    def _mask_in_box(self, image: np.ndarray, box, seed: int, grabcut: bool = True) -> tuple[np.ndarray, str]:
        """The object's mask inside a detection box: GrabCut (when ``grabcut``), or the filled box when GrabCut
        keeps less than ``min_fill`` of it; with the method used ("grabcut" or "box")."""
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        box_mask = np.zeros(image.shape[:2], bool)
        box_mask[y0:y1, x0:x1] = True
        if grabcut:
            cut = grabcut_from_box(
                image,
                box,
                self.options.grabcut_iterations,
                self.options.context_margin,
                self.options.grabcut_max_side,
                seed=seed,
            )
            if cut.sum() >= self.options.min_fill * max(1, box_mask.sum()):
                return cut, "grabcut"
        return box_mask, "box"

    def release(self) -> None:
        """Drop the cached detections (the network itself is small and stays loaded)."""
        self.detector.clear_cache()
