"""Composited clips with exact ground-truth masks, for measurable segmentation and tracking tests.

No video with per-frame object masks ships on the registries available here, so ground truth is made by
compositing: a real object cut out of a real photo (the ``dog`` of Debian ``darknet``'s ``dog.jpg``, ...) is
pasted onto real background frames (``vtest.avi`` of Debian ``opencv-doc``, or any RGB image) along a known path.
An optional static occluder (a vertical strip cut from a real photo, ``building.jpg``) hides part of the object
for the frames where the path crosses it, and a path that goes outside ``[0, 1]`` makes the object leave the view.

What is exact and what is not:
- The cut-out itself is made once with OpenCV GrabCut from a hand-picked box and a few hand-drawn
  background/foreground hints on the source photo (fixed RNG seed, so it is deterministic). Its mask is not a perfect matting of the animal (a few floor pixels may come
  along), but the pasted pixels are exactly the cut-out's mask, so the ground truth of every frame (the pasted
  mask minus the occluder, clipped to the frame) is exact for the clip that is produced.
- Paste is hard (no alpha blending), so every GT pixel shows cut-out colour and every other pixel background or
  occluder colour.

``make_composite_clip`` is deterministic: the same arguments give bit-identical frames and masks.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from reasonvos_ros.core.types import Frame

from .media import media_path


@dataclass(frozen=True)
class CutoutSpec:
    """How a cut-out is made from a real photo: GrabCut initialised with a box ``(x, y, w, h)`` plus a few
    hand-drawn hints (like a user's strokes in interactive GrabCut): polygons that are surely background and
    polylines that are surely the object. ``category`` is the object's COCO category name."""

    photo: str
    box: tuple[int, int, int, int]
    category: str
    background_polygons: tuple[tuple[tuple[int, int], ...], ...] = ()
    foreground_polylines: tuple[tuple[tuple[int, int], ...], ...] = ()
    grabcut_iterations: int = 10


# Boxes and hints were drawn by hand on the source photos (checked visually on a coordinate grid).
CUTOUTS: dict[str, CutoutSpec] = {
    "dog": CutoutSpec(
        "dog.jpg",
        (128, 200, 190, 345),
        "dog",
        background_polygons=(
            ((128, 200), (225, 200), (205, 250), (170, 300), (145, 350), (128, 370)),  # bicycle wheel, wall
            ((302, 200), (318, 200), (318, 440), (302, 440)),  # wall right of the head and chest
            ((290, 490), (318, 490), (318, 545), (280, 545)),  # floor right of the tail
        ),
        foreground_polylines=(((270, 260), (240, 330), (200, 420), (180, 500), (220, 530)),),
    ),
    "person": CutoutSpec(
        "person.jpg",
        (178, 94, 100, 286),
        "person",
        background_polygons=(
            ((178, 94), (215, 94), (178, 150)),  # sky/sand left of the head
            ((250, 94), (278, 94), (278, 200), (268, 200), (256, 140)),  # right of the head and shoulder
            ((178, 285), (198, 285), (200, 345), (178, 345)),  # the dog's head left of the legs
            ((250, 292), (278, 292), (278, 380), (250, 380)),  # sand right of the legs
        ),
        foreground_polylines=(((225, 115), (230, 200), (220, 300), (215, 360)),),
    ),
}

OCCLUDER_PHOTO = "building.jpg"


@dataclass
class CompositeClip:
    """A composited clip. All lists have one entry per frame.

    ``frames``: RGB uint8 HxWx3. ``masks``: bool HxW ground truth of the *visible* object. ``boxes``: tight
    ``(x0, y0, x1, y1)`` box of the visible mask (x1/y1 exclusive) or None when nothing is visible.
    ``full_boxes``: box of the whole object (as if nothing occluded it, unclipped, may extend outside the image).
    ``visible_fraction``: visible area / area the object would have if it were fully in view and unoccluded.
    ``occluded``: True where the occluder hides at least one object pixel.
    """

    frames: list[np.ndarray]
    masks: list[np.ndarray]
    category: str
    boxes: list[tuple[int, int, int, int] | None]
    full_boxes: list[tuple[int, int, int, int]]
    visible_fraction: list[float]
    occluded: list[bool]
    occluder_mask: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    def as_frames(self, start_index: int = 0, fps: float = 10.0) -> list[Frame]:
        """The clip as pipeline ``Frame`` objects (consecutive indices, stamps at ``fps``)."""
        return [Frame(start_index + i, (start_index + i) / fps, image=img) for i, img in enumerate(self.frames)]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


@functools.lru_cache(maxsize=8)
def load_cutout(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The cut-out ``name`` (a key of ``CUTOUTS``) as ``(rgb, mask)``, cropped to the mask's bounding box.

    Made with GrabCut from the spec's box on the real photo (about 1-2 s, cached per process). The returned
    arrays are read-only."""
    if name not in CUTOUTS:
        raise KeyError(f"unknown cut-out {name!r}; known: {', '.join(sorted(CUTOUTS))}")
    spec = CUTOUTS[name]
    bgr = cv2.imread(str(media_path(spec.photo)), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"could not decode {media_path(spec.photo)}")
    labels = np.full(bgr.shape[:2], cv2.GC_BGD, np.uint8)
    x, y, w, h = spec.box
    labels[y : y + h, x : x + w] = cv2.GC_PR_FGD
    for polygon in spec.background_polygons:
        cv2.fillPoly(labels, [np.array(polygon, np.int32)], cv2.GC_BGD)
    for polyline in spec.foreground_polylines:
        cv2.polylines(labels, [np.array(polyline, np.int32)], False, cv2.GC_FGD, thickness=7)
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    # GrabCut seeds its colour models with k-means++ on OpenCV's global RNG: fix it for a deterministic cut-out.
    cv2.setRNGSeed(12345)
    cv2.grabCut(bgr, labels, None, bgd_model, fgd_model, spec.grabcut_iterations, cv2.GC_INIT_WITH_MASK)
    mask = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    mask = _largest_component(mask)
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise RuntimeError(f"GrabCut found no foreground for cut-out {name!r}")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    rgb = np.ascontiguousarray(bgr[y0:y1, x0:x1, ::-1])
    mask = np.ascontiguousarray(mask[y0:y1, x0:x1])
    rgb.flags.writeable = False
    mask.flags.writeable = False
    return rgb, mask


def _check_rgb(image, what: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"{what} must be RGB uint8 HxWx3, got {getattr(image, 'dtype', type(image).__name__)} "
            f"{getattr(image, 'shape', '')}"
        )


def _background_frames(background, n_frames: int, size: tuple[int, int], start: int):
    width, height = size
    if isinstance(background, list | tuple):
        if len(background) < start + n_frames:
            raise ValueError(f"background has {len(background)} frames, need {start + n_frames}")
        frames = []
        for image in background[start : start + n_frames]:
            _check_rgb(image, "every background frame")
            frames.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
        return frames
    if isinstance(background, np.ndarray):
        _check_rgb(background, "background image")
        still = cv2.resize(background, (width, height), interpolation=cv2.INTER_AREA)
        return [still.copy() for _ in range(n_frames)]
    path = media_path(background)
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise OSError(f"OpenCV could not open the video {path}")
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        if total is not None:
            start = start % total
        # Decode sequentially from the start: seeking is not frame-exact for every codec.
        frames: list[np.ndarray] = []
        position = 0
        while len(frames) < n_frames:
            ok, bgr = capture.read()
            if not ok:
                if position == 0:
                    raise OSError(f"could not decode any frame of {path}")
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)  # loop a video shorter than the clip
                position, start = 0, 0
                continue
            if position >= start:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                frames.append(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))
            position += 1
        return frames
    finally:
        capture.release()


def _interpolate_path(path: Sequence[Sequence[float]], n_frames: int) -> np.ndarray:
    points = np.asarray(path, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 1:
        raise ValueError(f"path must be a sequence of (x, y) waypoints, got shape {points.shape}")
    if len(points) == 1 or n_frames == 1:
        return np.repeat(points[:1], n_frames, axis=0)
    # Constant speed along the polyline: parametrise by cumulative arc length.
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    if arc[-1] == 0:
        return np.repeat(points[:1], n_frames, axis=0)
    samples = np.linspace(0.0, arc[-1], n_frames)
    return np.stack([np.interp(samples, arc, points[:, 0]), np.interp(samples, arc, points[:, 1])], axis=1)


def _occluder(size: tuple[int, int], center_x: float, width_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A full-height vertical strip (a pillar) cut from a real photo, and its mask on the frame."""
    width, height = size
    strip_width = max(1, round(width_fraction * width))
    x0 = round(center_x * width - strip_width / 2)
    x0c, x1c = max(0, x0), min(width, x0 + strip_width)
    mask = np.zeros((height, width), bool)
    patch = np.zeros((height, width, 3), np.uint8)
    if x1c <= x0c:
        return patch, mask
    photo = cv2.imread(str(media_path(OCCLUDER_PHOTO)), cv2.IMREAD_COLOR)
    if photo is None:
        raise OSError(f"could not decode {media_path(OCCLUDER_PHOTO)}")
    photo = cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)
    ph, pw = photo.shape[:2]
    # A strip from the middle of the photo keeps the aspect ratio of the source texture.
    source_width = max(1, round(strip_width * ph / height))
    sx = max(0, pw // 2 - source_width // 2)
    strip = cv2.resize(photo[:, sx : sx + source_width], (strip_width, height), interpolation=cv2.INTER_AREA)
    patch[:, x0c:x1c] = strip[:, x0c - x0 : x1c - x0]
    mask[:, x0c:x1c] = True
    return patch, mask


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def make_composite_clip(
    n_frames: int = 30,
    size: tuple[int, int] = (320, 240),
    path: Sequence[Sequence[float]] = ((0.2, 0.6), (0.8, 0.6)),
    scale: float | tuple[float, float] = 0.45,
    cutout: str = "dog",
    background: str | np.ndarray | Sequence[np.ndarray] = "vtest.avi",
    background_start: int = 0,
    occluder_x: float | None = 0.5,
    occluder_width: float = 0.06,
) -> CompositeClip:
    """Paste the cut-out ``cutout`` onto ``n_frames`` background frames of ``size = (width, height)``.

    ``path``: waypoints of the object's box centre in fractions of the frame ((0, 0) top-left, (1, 1)
    bottom-right), visited at constant speed; points outside [0, 1] move the object (partly or fully) out of view.
    ``scale``: object height as a fraction of the frame height, or ``(start, end)`` to grow/shrink linearly.
    ``background``: a media file name (a video: consecutive frames from ``background_start``, looped), one RGB
    uint8 image (a still background) or a list of RGB frames (from ``background_start``; e.g. the frames of
    another composite, to put a second object in front of the first: see ``make_two_object_clip``). ``occluder_x``: centre (fraction of the width) of a full-height occluding
    strip of width ``occluder_width`` (fraction), drawn in front of the object; None for no occluder.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    width, height = (int(v) for v in size)
    if width < 8 or height < 8:
        raise ValueError(f"size must be at least 8x8, got {size}")
    scales = np.linspace(scale[0], scale[1], n_frames) if isinstance(scale, tuple | list) else np.full(n_frames, scale)
    if np.any(scales <= 0):
        raise ValueError(f"scale must be positive, got {scale}")
    centers = _interpolate_path(path, n_frames) * np.array([width, height])
    cut_rgb, cut_mask = load_cutout(cutout)
    category = CUTOUTS[cutout].category
    frames = _background_frames(background, n_frames, (width, height), background_start)
    if occluder_x is not None:
        occluder_patch, occluder_mask = _occluder((width, height), occluder_x, occluder_width)
    else:
        occluder_patch, occluder_mask = None, None

    masks, boxes, full_boxes, visible, occluded = [], [], [], [], []
    for frame, center, object_scale in zip(frames, centers, scales):
        obj_h = max(1, round(object_scale * height))
        obj_w = max(1, round(obj_h * cut_rgb.shape[1] / cut_rgb.shape[0]))
        rgb = cv2.resize(cut_rgb, (obj_w, obj_h), interpolation=cv2.INTER_AREA)
        # Resize the mask as coverage then threshold, so thin parts keep their true size.
        alpha = cv2.resize(cut_mask.astype(np.float32), (obj_w, obj_h), interpolation=cv2.INTER_AREA)
        obj_mask = alpha >= 0.5
        x0 = round(center[0] - obj_w / 2)
        y0 = round(center[1] - obj_h / 2)
        full_boxes.append((x0, y0, x0 + obj_w, y0 + obj_h))
        full_area = int(obj_mask.sum())

        pasted = np.zeros((height, width), bool)
        fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(width, x0 + obj_w), min(height, y0 + obj_h)
        if fx1 > fx0 and fy1 > fy0:
            sub_mask = obj_mask[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
            sub_rgb = rgb[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
            region = frame[fy0:fy1, fx0:fx1]
            region[sub_mask] = sub_rgb[sub_mask]
            pasted[fy0:fy1, fx0:fx1] = sub_mask
        gt = pasted
        hidden = False
        if occluder_mask is not None:
            frame[occluder_mask] = occluder_patch[occluder_mask]
            hidden = bool(np.any(pasted & occluder_mask))
            gt = pasted & ~occluder_mask
        masks.append(gt)
        boxes.append(_mask_box(gt))
        visible.append(float(gt.sum()) / full_area if full_area else 0.0)
        occluded.append(hidden)

    meta = {
        "cutout": cutout,
        "source_photo": CUTOUTS[cutout].photo,
        "background": background if isinstance(background, str) else type(background).__name__,
        "background_start": background_start,
        "size": (width, height),
        "path": [tuple(map(float, p)) for p in path],
        "scale": scale,
        "occluder_x": occluder_x,
        "occluder_width": occluder_width,
        "centers": [tuple(map(float, c)) for c in centers],
    }
    return CompositeClip(
        frames=frames,
        masks=masks,
        category=category,
        boxes=boxes,
        full_boxes=full_boxes,
        visible_fraction=visible,
        occluded=occluded,
        occluder_mask=occluder_mask,
        meta=meta,
    )


def make_two_object_clip(
    first: dict[str, Any], second: dict[str, Any]
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], CompositeClip, CompositeClip]:
    """Two cut-outs in one clip: ``second`` (keyword arguments of ``make_composite_clip``) is pasted in front of
    ``first`` (without an occluder of its own). Returns ``(frames, masks_first, masks_second, clip_first,
    clip_second)``; the first object's ground truth has the second object's pixels removed (it is behind it)."""
    clip_first = make_composite_clip(**first)
    # The second paste gets no occluder of its own: it would hide the first object too.
    second = {**second, "n_frames": len(clip_first), "size": clip_first.meta["size"], "occluder_x": None}
    clip_second = make_composite_clip(**second, background=clip_first.frames, background_start=0)
    masks_first = [a & ~b for a, b in zip(clip_first.masks, clip_second.masks)]
    return clip_second.frames, masks_first, clip_second.masks, clip_first, clip_second


def mask_iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two bool masks; 1.0 when both are empty (correctly predicted absence)."""
    if prediction.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {prediction.shape} vs {truth.shape}")
    union = np.count_nonzero(prediction | truth)
    if union == 0:
        return 1.0
    return np.count_nonzero(prediction & truth) / union
