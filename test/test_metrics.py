"""ReVOS metrics: the official golden values, hand-computed cases and an independent boundary-matching check."""

from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest

from reasonvos_ros.evaluation import metrics
from reasonvos_ros.golden import run_case

GOLDEN = pathlib.Path(__file__).parent / "golden_data" / "cases" / "metrics"


def test_golden_metrics_case_passes():
    checks = run_case(GOLDEN)
    failed = [c.line() for c in checks if not c.passed]
    assert not failed, "\n".join(failed)
    names = {c.name for c in checks}
    # Both halves ran: the 40 pairs and the end-to-end fake ReVOS set.
    assert "pairs F" in names
    assert "pairs R_pred01" in names
    assert any(n.startswith("revos summary overall") for n in names)


def rect(shape, y0, y1, x0, x1):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_region_similarity_hand_computed():
    gt = rect((20, 20), 0, 10, 0, 10)  # 100 px
    pred = rect((20, 20), 5, 15, 0, 10)  # 100 px, overlap 50
    assert metrics.region_similarity(gt, pred) == pytest.approx(50 / 150)
    assert metrics.region_similarity(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    assert metrics.region_similarity(gt, np.zeros_like(gt)) == 0.0
    # Any non-zero value is foreground (PNG 255, counts 2).
    assert metrics.region_similarity(gt.astype(np.uint8) * 2, pred.astype(np.uint8) * 255) == pytest.approx(1 / 3)


def test_seg2bmap_rectangle_and_corner_rules():
    mask = rect((6, 7), 1, 4, 2, 5)  # rows 1..3, cols 2..4
    boundary = metrics.seg2bmap(mask)
    expected = np.zeros((6, 7), bool)
    # Pixels that differ from a right / lower / lower-right neighbour: the object's bottom and right edges, and
    # the background pixels just above-left of its top/left edges (the half-pixel shift towards the origin).
    expected[0, 1:5] = True  # background row above the object (its lower / lower-right neighbours are object)
    expected[1:4, 1] = True  # background column left of the object
    expected[3, 2:5] = True  # bottom row of the object
    expected[1:4, 4] = True  # right column of the object
    np.testing.assert_array_equal(boundary, expected)

    # Last row / last column / corner rules: an object filling the image has no boundary.
    assert not metrics.seg2bmap(np.ones((5, 5), bool)).any()
    single = np.zeros((5, 5), bool)
    single[4, 4] = True  # the bottom-right pixel itself is never a boundary pixel
    bmap = metrics.seg2bmap(single)
    assert not bmap[4, 4]
    assert bmap[3, 3] and bmap[3, 4] and bmap[4, 3]


def test_boundary_radius_and_disk():
    assert metrics.boundary_radius((120, 160)) == 2  # ceil(0.008 * 200)
    assert metrics.boundary_radius((480, 854)) == 8  # ceil(0.008 * 979.7)
    assert metrics.boundary_radius((480, 854), bound_th=3) == 3
    with pytest.raises(ValueError, match="whole number"):
        metrics.boundary_radius((10, 10), bound_th=1.5)
    disk = metrics.disk_footprint(2)
    expected = np.array(
        [
            [0, 0, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
            [0, 1, 1, 1, 0],
            [0, 0, 1, 0, 0],
        ],
        np.uint8,
    )
    np.testing.assert_array_equal(disk, expected)


def test_f_measure_edge_cases():
    shape = (120, 160)  # radius 2
    gt = rect(shape, 30, 70, 40, 100)
    assert metrics.boundary_f_measure(gt, gt) == 1.0
    assert metrics.boundary_f_measure(np.zeros(shape), np.zeros(shape)) == 1.0
    assert metrics.boundary_f_measure(gt, np.zeros(shape)) == 0.0
    assert metrics.boundary_f_measure(np.zeros(shape), gt) == 0.0
    # A shift within the tolerance matches every boundary pixel; far outside it matches none.
    assert metrics.boundary_f_measure(gt, rect(shape, 32, 72, 40, 100)) == 1.0
    assert metrics.boundary_f_measure(gt, rect(shape, 30, 70, 40, 100)[::-1].copy()) < 1.0
    assert metrics.boundary_f_measure(rect(shape, 0, 20, 0, 20), rect(shape, 60, 80, 100, 120)) == 0.0


def _f_by_distance(gt: np.ndarray, pred: np.ndarray) -> float:
    """Boundary F with matching by exact Euclidean distance (<= radius) instead of disk dilation."""
    radius = metrics.boundary_radius(gt.shape)
    gt_b, pred_b = metrics.seg2bmap(gt), metrics.seg2bmap(pred)

    def distance_to(boundary):
        return cv2.distanceTransform((~boundary).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)

    precision = np.mean(distance_to(gt_b)[pred_b] <= radius + 1e-4)
    recall = np.mean(distance_to(pred_b)[gt_b] <= radius + 1e-4)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("seed", range(10))
def test_f_measure_matches_distance_definition(seed):
    rng = np.random.default_rng(seed)
    shape = (120, 160) if seed % 2 else (240, 320)
    gt = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    for mask in (gt, pred):
        for _ in range(3):
            # Centres anywhere, so some shapes touch or cross the image border (the crop/edge rules).
            center = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
            axes = (int(rng.integers(5, 40)), int(rng.integers(5, 30)))
            cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    assert metrics.boundary_f_measure(gt, pred) == pytest.approx(
        _f_by_distance(gt.astype(bool), pred.astype(bool)), abs=1e-12
    )


def test_robustness_binary_and_authors_uint8():
    shape = (10, 10)
    gt = rect(shape, 0, 5, 0, 5)  # 25 px
    foreground = rect(shape, 0, 5, 0, 10)  # 50 px (another object beside it)
    inside = rect(shape, 1, 4, 1, 4)
    assert metrics.robustness(gt, inside, foreground) == 1.0
    one_fp = gt.copy()
    one_fp[9, 9] = True
    assert metrics.robustness(gt, one_fp, foreground) == pytest.approx(1 - 1 / 50)
    assert metrics.robustness(gt, np.ones(shape, bool), foreground) == 0.0  # clipped at 0
    # The authors' arithmetic: a 0/255 prediction counts each false positive 255 times.
    pred255 = one_fp.astype(np.uint8) * 255
    assert metrics.robustness_authors_uint8(gt.astype(np.uint8), pred255, foreground.astype(np.uint8)) == 0.0
    assert metrics.robustness_authors_uint8(gt, one_fp, foreground) == pytest.approx(1 - 1 / 50)
    # Overlapping ground truths (value 2) wrap: (1 - 2) * 255 = 255 * 255 = 1 (mod 256).
    gt_counts = gt.astype(np.uint8) * 2
    r = metrics.robustness_authors_uint8(gt_counts, gt.astype(np.uint8) * 255, np.full(shape, 1, np.uint8))
    assert r == pytest.approx(1 - 25 / 100)


def test_pixel_accuracy_and_shape_errors():
    gt = rect((4, 5), 0, 2, 0, 5)
    assert metrics.pixel_accuracy(gt, gt) == 1.0
    assert metrics.pixel_accuracy(gt, ~gt) == 0.0
    with pytest.raises(ValueError, match=r"\(4, 5\) vs prediction \(5, 4\)"):
        metrics.region_similarity(gt, gt.T)
    with pytest.raises(ValueError, match="mask sizes differ"):
        metrics.boundary_f_measure(gt, gt.T)
    with pytest.raises(ValueError, match="2-D"):
        metrics.robustness(gt[None], gt[None], gt[None])
    with pytest.raises(ValueError, match=r"0\.\.255"):
        metrics.robustness_authors_uint8(gt.astype(np.int32) * 300, gt, gt)
