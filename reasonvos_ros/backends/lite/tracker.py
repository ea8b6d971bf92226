"""The "opencv" tracker: box tracker + dense optical flow + colour graph cut, per object, on the CPU.

No learned weights. Each step, for every object:

1. **Flow warp.** DIS optical flow from the new frame back to the previous one (computed once per step for all
   objects) pulls the previous mask onto the new frame (backward warping). The forward flow is computed too:
   a pixel whose forward-backward round trip misses by more than ``fb_threshold`` px has unreliable flow.
2. **Box tracker.** An OpenCV tracker (CSRT by default; KCF, MOSSE, MedianFlow, none, or "auto": KCF on live
   steps one frame apart, CSRT on strided or backward steps), initialised on the seed mask's box, gives the
   object's motion this step. When it reports failure (or there is none) the motion
   is the robust median of the reliable flow over the warped mask, and failing that the previous motion.
3. **Shape memory.** The last mask seen at full size is moved with the object (re-aligned with the tracker
   box). It re-adds the parts that re-appear after an occluder, which flow alone cannot see (they were hidden
   on the previous frame).
4. **Graph cut.** GrabCut decides the final mask near (warped mask | moved shape), with the colour models
   (GMMs) learnt from the seed frame kept frozen: the eroded warped mask is sure object, its surroundings are
   uncertain, everything farther is sure background, and so are pixels whose reliable flow is ~zero while the
   object moves (a static occluder in front of a moving object).

``confidence`` is the geometric mean of three terms in [0, 1]:

* tracker term: 1 when the box tracker reports success (or no box tracker is used), else ``lost_tracker_term``;
* area stability: ``min(r, 1/r)`` with ``r`` = mask area / median area of the last ``area_window`` frames;
* flow consistency: fraction of the warped mask's pixels whose flow is reliable (forward-backward check).

An empty mask has confidence 0. Frames may come in any order: a backward pass gives them newest first, and a
pass may skip frames (larger motion per step). Work is done at ``max_side`` pixels on the longer side and masks
are returned at the frame's size. Measured quality and speed: ``benchmarks/bench_lite.py`` and the report of
``test/test_lite_tracker.py``; it is much weaker than XMem on long occlusions and on objects coloured like
their background.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from reasonvos_ros.core.errors import BackendUnavailable, ConfigError
from reasonvos_ros.core.interfaces import Tracker, TrackerSession, checked_seed_masks
from reasonvos_ros.core.options import OptionSet, option
from reasonvos_ros.core.types import Frame, TrackedMask

BOX_TRACKERS = ("kcf", "csrt", "mosse", "medianflow", "none", "auto")
# "auto": KCF on forward steps that follow the previous frame by at most this much camera time (live tracking:
# consecutive frames, or a few skipped at 30 Hz; a KCF update costs ~2 ms against CSRT's ~16 ms), CSRT on the
# other steps (backward passes, and the strided passes that fit a time budget: larger motion per step, where
# CSRT holds on through occlusions that KCF loses). 0.15 s: one frame at 10 Hz with margin, four at 30 Hz.
AUTO_KCF_MAX_STEP_S = 0.15
# Still pixels (reliable flow under 0.5 px) are taken for a static occluder in front of the object when the
# object moved 2+ px, unless they make up this much of the warped mask: then the object's own pixels did not
# move, and the box tracker's motion is jitter (a small or slow object). Erasing them emptied the mask of
# slowly walking pedestrians ("mask vanished" on vtest.avi, benchmarks/bench_multi_target.py --replay).
STILL_OBJECT_FRACTION = 0.9
FLOW_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def make_box_tracker(kind: str, options: OpenCVTrackerOptions | None = None):
    """A new OpenCV box tracker of ``kind`` (one of ``BOX_TRACKERS`` except "none"), CSRT set up with the
    ``csrt_*`` fields of ``options`` (default: the default options). CSRT's colour segmentation and its number of
    scales searched are its largest costs on small objects; its template size (learning resolution, px) on large
    ones.

    CSRT, KCF, MOSSE and MedianFlow live in OpenCV's contrib modules; a build without them raises
    ``BackendUnavailable`` naming the package that has them."""
    if kind not in BOX_TRACKERS or kind in ("none", "auto"):
        raise ValueError(f"unknown box tracker {kind!r}; expected one of {BOX_TRACKERS[:-2]}")
    factories = {
        "kcf": lambda: cv2.TrackerKCF_create(),
        "csrt": lambda: cv2.TrackerCSRT_create(_csrt_params(options or OpenCVTrackerOptions())),
        "mosse": lambda: cv2.legacy.TrackerMOSSE_create(),
        "medianflow": lambda: cv2.legacy.TrackerMedianFlow_create(),
    }
    try:
        return factories[kind]()
    except AttributeError as exc:
        raise BackendUnavailable(
            f"box tracker {kind!r} needs OpenCV's contrib modules: pip install opencv-contrib-python-headless "
            f"(instead of opencv-python)"
        ) from exc


def _csrt_params(options: OpenCVTrackerOptions):
    params = cv2.TrackerCSRT_Params()
    params.template_size = float(options.csrt_template_size)
    params.use_segmentation = bool(options.csrt_segmentation)
    params.number_of_scales = int(options.csrt_scales)
    return params


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive ends, of a bool mask; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _shift(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate a bool mask by whole pixels, filling with False."""
    out = np.zeros_like(mask)
    height, width = mask.shape
    src_x0, src_x1 = max(0, -dx), min(width, width - dx)
    src_y0, src_y1 = max(0, -dy), min(height, height - dy)
    if src_x1 > src_x0 and src_y1 > src_y0:
        out[src_y0 + dy : src_y1 + dy, src_x0 + dx : src_x1 + dx] = mask[src_y0:src_y1, src_x0:src_x1]
    return out


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _seed_colour_models(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """GrabCut's background/foreground GMMs learnt from the seed mask and its surroundings, or None when the
    crop around the mask has no background pixel (the models would be undefined)."""
    box = _bbox(mask)
    if box is None:
        return None
    height, width = mask.shape
    x0, y0, x1, y1 = box
    margin = max(4, round(0.3 * max(x1 - x0, y1 - y0)))
    crop = (slice(max(0, y0 - margin), min(height, y1 + margin)), slice(max(0, x0 - margin), min(width, x1 + margin)))
    labels = np.where(mask[crop], cv2.GC_FGD, cv2.GC_BGD).astype(np.uint8)
    if labels.min() == labels.max() or np.count_nonzero(labels == cv2.GC_BGD) < 10 or mask.sum() < 10:
        return None
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # the GMMs start from k-means++ on OpenCV's global RNG: deterministic masks
    cv2.grabCut(np.ascontiguousarray(image[crop]), labels, None, bgd_model, fgd_model, 0, cv2.GC_INIT_WITH_MASK)
    return bgd_model, fgd_model


@dataclass
class _ObjectState:
    mask: np.ndarray  # bool, processing resolution
    box_tracker: object | None
    box_center: tuple[float, float] | None
    box_kind: str | None  # which OpenCV tracker ``box_tracker`` is (None: the object is too small for one)
    shape: np.ndarray  # last mask seen at (close to) full size
    shape_area: float
    shape_offset: np.ndarray  # accumulated motion since ``shape`` was stored, px
    colour_models: tuple[np.ndarray, np.ndarray] | None
    areas: deque
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))


@dataclass(frozen=True)
class OpenCVTrackerOptions(OptionSet):
    box_tracker: str = option(
        "csrt",
        "OpenCV box tracker giving each object's motion (none: flow only; auto: KCF on live steps at most 0.15 s "
        "apart, CSRT on strided and backward ones)",
        choices=BOX_TRACKERS,
    )
    flow_preset: str = option("fast", "DIS optical flow preset", choices=tuple(FLOW_PRESETS))
    max_side: int = option(320, "processing resolution: longer image side in pixels", low=32)
    graph_cut: bool = option(True, "refine with the frozen-colour-model GrabCut (false: flow warp only)")
    fb_threshold: float = option(
        1.0,
        "forward-backward flow error (px at processing resolution) under which a pixel's flow is reliable (> 0)",
        low=0.0,
    )
    lost_tracker_term: float = option(
        0.3, "tracker term of the confidence when the box tracker reports failure", low=0.0, high=1.0
    )
    area_window: int = option(5, "frames in the area-stability median", low=1)
    shape_decay: float = option(
        0.98,
        "per-step decay of the remembered full-view area, so a shrinking object's shape memory is renewed (> 0)",
        low=0.0,
        high=1.0,
    )
    csrt_template_size: int = option(200, "CSRT's learning resolution (px)", low=32, high=1000)
    # Measured (benchmarks/tracking_lite.py, bench_multi_target.py --replay 2): CSRT with 9 scales and without
    # its colour segmentation costs 18 ms a step on vtest.avi's pedestrians instead of 46 ms, for the same J&F
    # with the detector's evidence (0.853) and 1 of 226 TRACKING frames confidently wrong either way.
    csrt_segmentation: bool = option(False, "CSRT's colour segmentation (OpenCV's default: on; 2x the cost)")
    csrt_scales: int = option(9, "scales CSRT searches per step (OpenCV's default: 33)", low=1, high=99)

    def check(self) -> None:
        # The two open bounds the declared ranges cannot say.
        if self.fb_threshold == 0.0 or self.shape_decay == 0.0:
            raise ConfigError("fb_threshold must be > 0 and shape_decay in (0, 1]")


@dataclass
class _StepFlow:
    map_x: np.ndarray
    map_y: np.ndarray
    back: np.ndarray  # new frame -> previous frame, px
    reliable: np.ndarray  # bool: forward-backward consistent
    static: np.ndarray  # bool: reliable and (almost) not moving


@dataclass
class _Prepared:
    frame_shape: tuple[int, int]
    small: np.ndarray  # RGB at processing resolution
    gray: np.ndarray
    small_bgr: np.ndarray


class SharedFrameWork:
    """Per-frame work that every session of one tracker does identically, computed once: the frame at processing
    resolution (decode, resize, colour conversions) and the dense flow between two frames.

    Several targets are tracked by one session each, and live they all step the same frame pair, so without this
    the DIS flow (the largest cost of a step) was computed once per target. Entries are keyed by ``Frame.uid``
    (unique within the process) and the processing shape, and only a few recent ones are kept. Cached arrays are
    shared between sessions and must not be written to. Thread-safe; a thread that misses a key another thread is
    computing waits for that result (targets are stepped side by side, so they used to compute the same flow
    twice)."""

    def __init__(self, capacity: int = 6) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._prepared: OrderedDict[tuple, _Prepared] = OrderedDict()
        self._flows: OrderedDict[tuple, _StepFlow] = OrderedDict()
        self._computing: dict[tuple, threading.Event] = {}
        self.flow_hits = 0
        self.flow_misses = 0
        self.prepare_hits = 0

    def once(self, table: OrderedDict, key: tuple, compute):
        """(the value of ``key`` in ``table``, whether it was there): computed by ``compute()`` by the first thread
        that misses it; the others wait for it. A failing ``compute`` raises in its thread only: a waiter then
        computes the value itself."""
        with self._lock:
            value = table.get(key)
            if value is not None:
                table.move_to_end(key)
                return value, True
            computing = self._computing.get(key)
            if computing is None:
                computing = self._computing[key] = threading.Event()
                mine = True
            else:
                mine = False
        if not mine:
            computing.wait()
            with self._lock:
                value = table.get(key)
            return (value, True) if value is not None else (compute(), False)
        try:
            value = compute()
            with self._lock:
                table[key] = value
                while len(table) > self.capacity:
                    table.popitem(last=False)
        finally:
            with self._lock:
                del self._computing[key]
            computing.set()
        return value, False

    def clear(self) -> None:
        with self._lock:
            self._prepared.clear()
            self._flows.clear()


class OpenCVTrackerSession(TrackerSession):
    """One pass of the "opencv" tracker (see the module docstring). Sessions of one ``OpenCVTracker`` share its
    ``SharedFrameWork``; a session made on its own gets a private one."""

    def __init__(self, options: OpenCVTrackerOptions, shared: SharedFrameWork | None = None) -> None:
        self.options = options
        self._shared = shared if shared is not None else SharedFrameWork()
        self._flow = cv2.DISOpticalFlow_create(FLOW_PRESETS[options.flow_preset])
        self._objects: dict[str, _ObjectState] = {}
        self._prev_gray: np.ndarray | None = None
        self._prev_uid: int | None = None
        self._prev_bgr: np.ndarray | None = None  # the previous frame at processing resolution (shared: read only)
        self._prev_stamp: float | None = None
        self._frame_shape: tuple[int, int] | None = None
        self._proc_shape: tuple[int, int] | None = None
        self._grid: tuple[np.ndarray, np.ndarray] | None = None
        self._closed = False

    # --- resolution handling -------------------------------------------------------------------------------
    def _prepare_frame(self, frame: Frame) -> _Prepared:
        """The frame at processing resolution, from the shared cache when another session prepared it."""

        def prepare() -> _Prepared:
            image = frame.image  # decoded once
            small, gray = self._prepare(image)
            return _Prepared(image.shape[:2], small, gray, cv2.cvtColor(small, cv2.COLOR_RGB2BGR))

        prepared, hit = self._shared.once(self._shared._prepared, (frame.uid, self.options.max_side), prepare)
        if hit:
            self._shared.prepare_hits += 1
            self._check_shape(prepared.frame_shape)
        return prepared

    def _check_shape(self, shape: tuple[int, int]) -> None:
        if self._frame_shape is None:
            self._frame_shape = shape
            scale = min(1.0, self.options.max_side / max(shape))
            self._proc_shape = (max(8, round(shape[0] * scale)), max(8, round(shape[1] * scale)))
            ys, xs = np.mgrid[0 : self._proc_shape[0], 0 : self._proc_shape[1]].astype(np.float32)
            self._grid = (xs, ys)
        elif shape != self._frame_shape:
            raise ValueError(f"frame size changed within a tracker session: {shape} after {self._frame_shape}")

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"tracker input must be an RGB uint8 HxWx3 image, got {getattr(image, 'shape', None)}")
        shape = image.shape[:2]
        self._check_shape(shape)
        height, width = self._proc_shape
        small = image if (height, width) == shape else cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(small), cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)

    def _to_proc(self, mask: np.ndarray) -> np.ndarray:
        if mask.shape != self._frame_shape:
            raise ValueError(f"seed mask shape {mask.shape} != frame shape {self._frame_shape}")
        if mask.shape == self._proc_shape:
            return mask.copy()
        height, width = self._proc_shape
        return cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) >= 0.5

    def _to_frame(self, mask: np.ndarray) -> np.ndarray:
        if mask.shape == self._frame_shape:
            return mask.copy()
        height, width = self._frame_shape
        return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)

    # --- seeding ---------------------------------------------------------------------------------------------
    def _new_box_tracker(self, kind: str, image_bgr: np.ndarray, mask: np.ndarray):
        """(box tracker of ``kind`` initialised on the box of ``mask`` in ``image_bgr``, the box centre), or
        (None, None) when the mask is empty or its box smaller than 4 px on a side."""
        box = _bbox(mask)
        if box is None or kind == "none":
            return None, None
        x0, y0, x1, y1 = box
        if x1 - x0 < 4 or y1 - y0 < 4:
            return None, None
        box_tracker = make_box_tracker(kind, self.options)
        box_tracker.init(image_bgr, (x0, y0, x1 - x0, y1 - y0))
        return box_tracker, ((x0 + x1) / 2, (y0 + y1) / 2)

    def _step_box_kind(self, frame: Frame) -> str:
        """The box tracker for a step from the previous frame to ``frame`` (see ``AUTO_KCF_MAX_STEP_S``)."""
        if self.options.box_tracker != "auto":
            return self.options.box_tracker
        if self._prev_stamp is None:
            return "csrt"
        gap = frame.stamp - self._prev_stamp
        return "kcf" if 0.0 < gap <= AUTO_KCF_MAX_STEP_S else "csrt"

    def _switch_box_tracker(self, state: _ObjectState, kind: str) -> None:
        """Replace the object's box tracker by one of ``kind``, initialised on the previous frame with the
        previous mask's box, so this step's update measures the motion since then (the first step after a seed
        makes the first one). Kept as it is when the previous mask gives no box (the other kind still tracks
        better than none)."""
        box_tracker, center = self._new_box_tracker(kind, self._prev_bgr, state.mask)
        if box_tracker is not None:
            state.box_tracker, state.box_center, state.box_kind = box_tracker, center, kind

    def _seed(self, small: np.ndarray, small_bgr: np.ndarray, mask: np.ndarray) -> _ObjectState:
        kind = self.options.box_tracker
        # "auto" makes the box tracker at the first step, once the step tells which kind (from this frame).
        box_tracker, center = (None, None) if kind == "auto" else self._new_box_tracker(kind, small_bgr, mask)
        area = int(mask.sum())
        state = _ObjectState(
            mask=mask,
            box_tracker=box_tracker,
            box_center=center,
            box_kind=kind if box_tracker is not None else None,
            shape=mask.copy(),
            shape_area=float(area),
            shape_offset=np.zeros(2),
            colour_models=_seed_colour_models(small, mask) if self.options.graph_cut else None,
            areas=deque([area], maxlen=self.options.area_window),
        )
        return state

    # --- one step --------------------------------------------------------------------------------------------
    def step(self, frame: Frame, new_masks: Mapping[str, np.ndarray] | None = None) -> dict[str, TrackedMask]:
        if self._closed:
            raise RuntimeError("step on a closed tracker session")
        prepared = self._prepare_frame(frame)
        small, gray, small_bgr = prepared.small, prepared.gray, prepared.small_bgr
        seeds = checked_seed_masks(new_masks or {}, *self._frame_shape)
        out: dict[str, TrackedMask] = {}
        carried = [obj_id for obj_id in self._objects if obj_id not in seeds]
        if carried:
            kind = self._step_box_kind(frame)
            flow = self._step_flow(frame.uid, gray)
            for obj_id in carried:
                state = self._objects[obj_id]
                if self.options.box_tracker == "auto" and state.box_kind != kind:
                    self._switch_box_tracker(state, kind)
                mask, confidence = self._advance(state, small, small_bgr, flow)
                out[obj_id] = TrackedMask(self._to_frame(mask), confidence)
        for obj_id, seed in seeds.items():
            self._objects[obj_id] = self._seed(small, small_bgr, self._to_proc(seed))
            out[obj_id] = TrackedMask(seed.copy(), 1.0)
        self._prev_gray, self._prev_uid = gray, frame.uid
        self._prev_bgr, self._prev_stamp = small_bgr, frame.stamp
        return out

    def _step_flow(self, uid: int, gray: np.ndarray) -> _StepFlow:
        """The flow from the previous frame to frame ``uid``; shared with the other sessions stepping that pair."""
        key = (self._prev_uid, uid, self._proc_shape, self.options.flow_preset, self.options.fb_threshold)
        flow, hit = self._shared.once(self._shared._flows, key, lambda: self._compute_flow(gray))
        if hit:
            self._shared.flow_hits += 1
        else:
            self._shared.flow_misses += 1
        return flow

    def _compute_flow(self, gray: np.ndarray) -> _StepFlow:
        back = self._flow.calc(gray, self._prev_gray, None)
        forward = self._flow.calc(self._prev_gray, gray, None)
        map_x = self._grid[0] + back[..., 0]
        map_y = self._grid[1] + back[..., 1]
        forward_at_source = cv2.remap(forward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        reliable = np.linalg.norm(back + forward_at_source, axis=2) < self.options.fb_threshold
        static = reliable & (np.linalg.norm(back, axis=2) < 0.5)
        return _StepFlow(map_x, map_y, back, reliable, static)

    def _motion(self, state: _ObjectState, small_bgr: np.ndarray, warped: np.ndarray, flow: _StepFlow):
        """(motion of the object this step in px, box tracker success)."""
        if state.box_tracker is not None:
            ok, rect = state.box_tracker.update(small_bgr)
            if ok:
                center = (rect[0] + rect[2] / 2, rect[1] + rect[3] / 2)
                motion = np.array([center[0] - state.box_center[0], center[1] - state.box_center[1]], float)
                state.box_center = center
                return motion, True
        motion = self._flow_motion(warped, flow)
        if motion is None:
            motion = state.velocity.copy()  # nothing visible to measure: assume constant velocity
        if state.box_center is not None:
            # Keep the reference centre in step, so the box tracker's next success is not counted twice.
            state.box_center = (state.box_center[0] + motion[0], state.box_center[1] + motion[1])
        return motion, state.box_tracker is None

    @staticmethod
    def _flow_motion(warped: np.ndarray, flow: _StepFlow) -> np.ndarray | None:
        """Robust median of the reliable flow over the warped mask; None with fewer than 10 pixels."""
        selected = warped & flow.reliable
        if np.count_nonzero(selected) < 10:
            selected = warped
        if np.count_nonzero(selected) < 10:
            return None
        motion = -flow.back[selected]
        estimate = np.median(motion, axis=0)
        # Second pass over the pixels that agree with the first estimate: drops occluder or background pixels.
        agree = np.linalg.norm(motion - estimate, axis=1) < max(1.5, 0.5 * float(np.linalg.norm(estimate)))
        if np.count_nonzero(agree) >= 10:
            estimate = np.median(motion[agree], axis=0)
        return estimate.astype(float)

    def _advance(self, state: _ObjectState, small, small_bgr, flow: _StepFlow) -> tuple[np.ndarray, float]:
        opts = self.options
        warped = cv2.remap(state.mask.astype(np.float32), flow.map_x, flow.map_y, cv2.INTER_LINEAR) >= 0.5
        motion, tracker_ok = self._motion(state, small_bgr, warped, flow)
        state.velocity = motion
        state.shape_offset += motion
        prior = _shift(state.shape, round(state.shape_offset[0]), round(state.shape_offset[1]))
        mask = self._graph_cut(state, small, warped, prior, flow, float(np.linalg.norm(motion)))
        state.mask = mask
        area = int(mask.sum())
        state.shape_area *= opts.shape_decay
        if area >= 0.9 * state.shape_area:
            state.shape, state.shape_area, state.shape_offset = mask.copy(), float(area), np.zeros(2)
        if area == 0:
            state.areas.append(0)
            return mask, 0.0
        reference = max(1.0, float(np.median(state.areas)))
        state.areas.append(area)
        ratio = area / reference
        area_term = min(ratio, 1.0 / ratio)
        flow_term = float(np.mean(flow.reliable[warped])) if warped.any() else 0.0
        tracker_term = 1.0 if tracker_ok else opts.lost_tracker_term
        confidence = (tracker_term * area_term * flow_term) ** (1.0 / 3.0)
        return mask, float(min(1.0, max(0.0, confidence)))

    def _graph_cut(self, state, small, warped, prior, flow: _StepFlow, speed: float) -> np.ndarray:
        region = warped | prior
        box = _bbox(region)
        if box is None:
            return region
        if state.colour_models is None:
            return warped if warped.any() else prior
        height, width = region.shape
        x0, y0, x1, y1 = box
        size = max(x1 - x0, y1 - y0)
        erode_px, dilate_px = max(1, round(0.04 * size)), max(2, round(0.08 * size))
        margin = dilate_px + 2
        crop = (
            slice(max(0, y0 - margin), min(height, y1 + margin)),
            slice(max(0, x0 - margin), min(width, x1 + margin)),
        )
        region_u8 = region[crop].astype(np.uint8)
        labels = np.full(region_u8.shape, cv2.GC_BGD, np.uint8)
        labels[cv2.dilate(region_u8, _disk(dilate_px)) > 0] = cv2.GC_PR_BGD
        labels[region_u8 > 0] = cv2.GC_PR_FGD
        labels[cv2.erode(warped[crop].astype(np.uint8), _disk(erode_px)) > 0] = cv2.GC_FGD
        still = flow.static[crop]
        warped_px = np.count_nonzero(warped)
        if speed > 2.0 and np.count_nonzero(still & warped[crop]) < STILL_OBJECT_FRACTION * warped_px:
            labels[still] = cv2.GC_BGD  # a still pixel cannot belong to an object that moved 2+ px
        if not np.any((labels == cv2.GC_PR_FGD) | (labels == cv2.GC_FGD)):
            return np.zeros_like(region)
        bgd_model, fgd_model = (model.copy() for model in state.colour_models)
        cv2.grabCut(np.ascontiguousarray(small[crop]), labels, None, bgd_model, fgd_model, 1, cv2.GC_EVAL_FREEZE_MODEL)
        mask = np.zeros_like(region)
        mask[crop] = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        return mask

    def close(self) -> None:
        self._objects.clear()
        self._prev_gray, self._prev_uid, self._prev_bgr, self._prev_stamp = None, None, None, None
        self._closed = True


class OpenCVTracker(Tracker):
    """Factory of ``OpenCVTrackerSession`` (see the module docstring); the options are ``OpenCVTrackerOptions``."""

    concurrent_sessions = True  # each session owns its OpenCV objects; the shared per-frame cache is locked

    Options = OpenCVTrackerOptions

    def __init__(self, options: OpenCVTrackerOptions | None = None, /, **values: Any) -> None:
        self.options = OpenCVTrackerOptions.build(options, values)
        for kind in {"none": (), "auto": ("kcf", "csrt")}.get(self.options.box_tracker, (self.options.box_tracker,)):
            make_box_tracker(kind)  # fail now, not on the first seed, when this OpenCV build lacks it
        self.shared = SharedFrameWork()  # per-frame work (resize, flow) shared by all this tracker's sessions

    def new_session(self) -> OpenCVTrackerSession:
        return OpenCVTrackerSession(self.options, self.shared)
