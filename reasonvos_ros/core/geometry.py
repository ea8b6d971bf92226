"""Mask geometry for manipulation: boxes, a robust interior point, robust depth and deprojection (REP 103/118)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the (rectified) colour camera, in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_camera_info_k(cls, k) -> Intrinsics:
        """From the row-major 3x3 ``K`` of sensor_msgs/CameraInfo (fx = K[0], cx = K[2], fy = K[4], cy = K[5])."""
        k = [float(v) for v in k]
        if len(k) != 9:
            raise ValueError(f"K must have 9 elements, got {len(k)}")
        return cls(fx=k[0], fy=k[4], cx=k[2], cy=k[5])

    def validate(self) -> None:
        if not all(np.isfinite([self.fx, self.fy, self.cx, self.cy])):
            raise ValueError("camera intrinsics contain NaN/Inf")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive (fx={self.fx}, fy={self.fy})")


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of the mask's non-zero pixels, or None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


def interior_point(mask: np.ndarray) -> tuple[float, float] | None:
    """The mask pixel farthest from the mask boundary, as (x, y); None when empty.

    Unlike the centroid, this always lies on the object, also for concave shapes (a ring, an L-shaped tool).
    Ties are broken towards the centroid so the point is stable from frame to frame. Computed on the mask's
    bounding box only (the distance transform of the full frame costs ~10x more for typical objects).
    """
    box = mask_bbox(mask)
    if box is None:
        return None
    x0, y0, w, h = box
    crop = np.ascontiguousarray(mask[y0 : y0 + h, x0 : x0 + w], dtype=np.uint8)
    # Pad so that pixels on the crop's border count as boundary, too.
    dist = cv2.distanceTransform(np.pad(crop, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    best = dist.max()
    ys, xs = np.nonzero(dist >= best - 1e-6)
    ys_all, xs_all = np.nonzero(crop)
    cy, cx = ys_all.mean(), xs_all.mean()
    nearest = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return float(xs[nearest] + x0), float(ys[nearest] + y0)


def robust_depth(mask: np.ndarray, depth_m: np.ndarray, erode_px: int = 3, min_valid: int = 10) -> float | None:
    """Median of the valid depth values (finite, > 0) over the eroded mask, in metres.

    Erosion removes the mask's rim, where registered depth mixes object and background. Falls back to the
    un-eroded mask for thin objects; None when fewer than ``min_valid`` valid values remain.
    """
    if mask.shape != depth_m.shape:
        raise ValueError(f"mask shape {mask.shape} != depth shape {depth_m.shape}")
    mask_u8 = mask.astype(np.uint8)
    candidates = [mask_u8]
    if erode_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1, 2 * erode_px + 1))
        candidates.insert(0, cv2.erode(mask_u8, kernel))
    for region in candidates:
        values = depth_m[region.astype(bool)]
        values = values[np.isfinite(values) & (values > 0)]
        if values.size >= min_valid:
            return float(np.median(values))
    return None


def deproject(u: float, v: float, z: float, intrinsics: Intrinsics) -> tuple[float, float, float]:
    """Pixel (u, v) at depth z (metres) -> (X, Y, Z) in the camera optical frame (x right, y down, z forward)."""
    return (
        (u - intrinsics.cx) * z / intrinsics.fx,
        (v - intrinsics.cy) * z / intrinsics.fy,
        z,
    )
