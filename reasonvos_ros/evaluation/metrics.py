"""Video object segmentation metrics as the ReVOS / VISA evaluator computes them (numpy + OpenCV only).

- ``region_similarity`` (J): IoU of prediction and ground truth, 1 when both are empty.
- ``boundary_f_measure`` (F): the DAVIS boundary F-measure. Boundaries come from ``seg2bmap`` (1-pixel wide,
  offset half a pixel towards the origin); each boundary is dilated with a disk of radius
  ``ceil(bound_th * image diagonal)`` (``{(x, y): x^2 + y^2 <= r^2}``, the same footprint as scikit-image's
  ``disk``); precision/recall are the fractions of boundary pixels matched by the other's dilated boundary.
- ``robustness`` (R, from R2-VOS): ``max(1 - |pred AND NOT gt| / (|foreground| + 1e-6), 0)``, with the video's
  all-object foreground. ``robustness_authors_uint8`` reproduces the official script bit for bit, including its
  8-bit arithmetic on 0/255 predictions (each false-positive pixel counts 255 times); use it only to compare with
  figures produced by that script.
- ``pixel_accuracy`` (A, from R2-VOS): fraction of equal pixels. The official script compares the 0/1 ground
  truth with the raw 0/255 prediction, so its A only counts matching background; ``pixel_accuracy`` compares
  whatever arrays it is given, so pass binary masks for the meaningful figure.

Every function takes one frame (2-D arrays); the per-video mean is left to the caller.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

BOUND_TH = 0.008  # DAVIS default: the boundary tolerance as a fraction of the image diagonal
R_EPSILON = 1e-6  # R2-VOS denominator guard, as in the official script


def _check_pair(name: str, a: np.ndarray, b: np.ndarray) -> None:
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"{name}: expected 2-D masks, got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise ValueError(f"{name}: mask sizes differ: ground truth {a.shape} vs prediction {b.shape}")


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> float:
    """J: |gt AND pred| / |gt OR pred|; 1.0 when both masks are empty. Non-zero pixels are foreground."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    _check_pair("J", gt, pred)
    gt_b = gt.astype(bool, copy=False)
    pred_b = pred.astype(bool, copy=False)
    union = int(np.count_nonzero(gt_b | pred_b))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(gt_b & pred_b)) / union


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """1-pixel boundary map of a binary mask (the DAVIS/BSDS ``seg2bmap`` at the mask's own size).

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour; on the last row
    only the right neighbour counts, on the last column only the lower one, and the bottom-right pixel is never a
    boundary pixel. Neighbours outside the image count as background.
    """
    seg = np.asarray(mask).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"seg2bmap: expected a 2-D mask, got shape {seg.shape}")
    right = np.zeros_like(seg)
    below = np.zeros_like(seg)
    below_right = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    below_right[:-1, :-1] = seg[1:, 1:]
    boundary = (seg ^ right) | (seg ^ below) | (seg ^ below_right)
    boundary[-1, :] = seg[-1, :] ^ right[-1, :]
    boundary[:, -1] = seg[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def boundary_radius(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> int:
    """Dilation radius in pixels: ``bound_th`` itself when >= 1, else ``ceil(bound_th * hypot(H, W))``."""
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be a whole number, got {bound_th}")
        return int(bound_th)
    return math.ceil(bound_th * float(np.linalg.norm(shape[:2])))


@lru_cache(maxsize=16)
def disk_footprint(radius: int) -> np.ndarray:
    """Disk structuring element of the given radius: ``x^2 + y^2 <= radius^2`` on a (2r+1)^2 grid, uint8."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)


def boundary_f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F: DAVIS boundary F-measure of ``pred`` against ``gt`` (both boundaries empty: 1; one empty: 0)."""
    return boundary_f_details(gt, pred, bound_th)[0]


def boundary_f_details(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> tuple[float, int, int, int]:
    """``(F, radius, gt boundary pixel count, prediction boundary pixel count)``."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    _check_pair("F", gt, pred)
    radius = boundary_radius(pred.shape, bound_th)
    # Boundaries lie within one pixel of the masks' joint bounding box, and the dilations only matter at the other
    # boundary's pixels, so a crop with a one-pixel margin gives the same counts at a fraction of the cost.
    crop = _joint_box_with_margin(gt, pred)
    if crop is None:
        return 1.0, radius, 0, 0
    pred_boundary = seg2bmap(pred[crop])
    gt_boundary = seg2bmap(gt[crop])
    n_pred = int(np.count_nonzero(pred_boundary))
    n_gt = int(np.count_nonzero(gt_boundary))
    if n_pred == 0 and n_gt == 0:
        return 1.0, radius, n_gt, n_pred
    if n_pred == 0 or n_gt == 0:
        return 0.0, radius, n_gt, n_pred
    footprint = disk_footprint(radius)
    # cv2.dilate pads with a value that never wins the max, i.e. outside pixels are background, as in DAVIS.
    pred_dilated = cv2.dilate(pred_boundary.view(np.uint8), footprint).view(bool)
    gt_dilated = cv2.dilate(gt_boundary.view(np.uint8), footprint).view(bool)
    precision = np.count_nonzero(pred_boundary & gt_dilated) / float(n_pred)
    recall = np.count_nonzero(gt_boundary & pred_dilated) / float(n_gt)
    if precision + recall == 0:
        return 0.0, radius, n_gt, n_pred
    return 2 * precision * recall / (precision + recall), radius, n_gt, n_pred


def _joint_box_with_margin(a: np.ndarray, b: np.ndarray) -> tuple[slice, slice] | None:
    """Slices of the bounding box of ``a OR b`` grown by one pixel on every side (clipped), None if both empty.

    ``seg2bmap`` of the crop equals the crop of ``seg2bmap``: the extra row/column after the box is background
    with background neighbours (no boundary, as the last-row/column rules give), and where the box reaches the
    image edge the crop edge is the image edge.
    """
    union = a.astype(bool, copy=False) | b.astype(bool, copy=False)
    rows = np.flatnonzero(union.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(union.any(axis=0))
    height, width = union.shape
    return (
        slice(max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, height)),
        slice(max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, width)),
    )


def robustness(gt: np.ndarray, pred: np.ndarray, foreground: np.ndarray) -> float:
    """R on binary masks: ``max(1 - |pred AND NOT gt| / (|foreground| + 1e-6), 0)``; non-zero is foreground."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    foreground = np.asarray(foreground)
    _check_pair("R", gt, pred)
    _check_pair("R foreground", gt, foreground)
    false_positive = int(np.count_nonzero(pred.astype(bool) & ~gt.astype(bool)))
    positive = int(np.count_nonzero(foreground))
    return max(1 - false_positive / (positive + R_EPSILON), 0.0)


def robustness_authors_uint8(gt: np.ndarray, pred: np.ndarray, foreground: np.ndarray) -> float:
    """R exactly as the official ``eval_revos.py`` computes it, for comparison with its figures only.

    All three arrays are taken as uint8 *values* (not truth values): ``gt`` is the per-pixel count of the
    expression's objects, ``pred`` the PNG as read (0/255), ``foreground`` the per-pixel object count. The
    false-positive term ``(1 - gt) * pred`` is evaluated in wrapping 8-bit arithmetic, then summed.
    """
    gt = _as_uint8("gt", gt)
    pred = _as_uint8("pred", pred)
    foreground = _as_uint8("foreground", foreground)
    _check_pair("R", gt, pred)
    _check_pair("R foreground", gt, foreground)
    with np.errstate(over="ignore"):
        not_gt = np.subtract(np.uint8(1), gt, dtype=np.uint8)
        false_positive = int(np.multiply(not_gt, pred, dtype=np.uint8).sum(dtype=np.uint64))
    positive = int(foreground.sum(dtype=np.uint64))
    return max(1 - false_positive / (positive + R_EPSILON), 0.0)


def pixel_accuracy(gt: np.ndarray, pred: np.ndarray) -> float:
    """A: fraction of pixels where ``gt == pred`` (values compared as given)."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    _check_pair("A", gt, pred)
    return float(np.mean(gt == pred))


def _as_uint8(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.size and (array.min() < 0 or array.max() > 255 or not np.array_equal(array, np.round(array))):
        raise ValueError(f"{name}: the 8-bit compatible R needs integer values in 0..255, got dtype {array.dtype}")
    return array.astype(np.uint8)
