"""Sampler -> segmenter -> tracker orchestration for one target over a window of frames (ROS-free).

``Pipeline.acquire`` resolves an instruction on a window as a generator of events, which its caller iterates and
stops by closing it (``events.close()``), like SAM 2's ``propagate_in_video``: the sampler picks the key frame
(``KeyFrameChosen``), the segmenter masks the object on it with reference frames chosen by the configured strategy
(``Segmented``), one tracker session propagates the mask forward from the key frame to the newest frame (the
"catch-up", ``Propagated`` results) and is handed over to the caller for live tracking (the ``Acquisition``
event), then another session propagates it backward over the stored past (more ``Propagated`` results). Both
passes are the same routine (``Pipeline.propagate``) run in either ``Direction``. The first live mask therefore
never waits for the past; a caller that wants no history closes the events after the hand-over. Closing them at
any point closes every tracker session the acquisition still owns. ``DriftMonitor`` decides when a track has become
unreliable and the key-frame segmentation must be re-run.
"""

from __future__ import annotations

import enum
import functools
import math
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from .config import PipelineConfig
from .errors import BackendFailure
from .geometry import interior_point, mask_bbox
from .interfaces import FrameSampler, KeyframeSegmenter, Tracker, TrackerSession
from .references import select_references
from .types import Evidence, Frame, Segmentation, TargetStatus, TrackedMask, Understanding


@dataclass
class FrameResult:
    """One target's result on one frame (what the node turns into a TargetResult message)."""

    target_id: str
    instruction: str
    frame: Frame
    status: TargetStatus
    reason: str = ""
    score: float = 0.0
    mask: np.ndarray | None = None  # bool HxW when status is TRACKING
    keyframe_stamp: float | None = None
    understanding: Understanding | None = None  # what the segmenter understood (None before the first key frame)
    keyframe: Frame | None = None  # the key frame (its ``meta`` carries the exact source stamp)

    # Cached: the node reads them for the message, the 3D point and the debug overlay.
    @functools.cached_property
    def bbox(self) -> tuple[int, int, int, int] | None:
        return mask_bbox(self.mask) if self.mask is not None else None

    @functools.cached_property
    def point(self) -> tuple[float, float] | None:
        return interior_point(self.mask) if self.mask is not None else None


@dataclass
class Acquisition:
    """The hand-over of an acquisition (one event of ``Pipeline.acquire``): the key-frame segmentation and, when
    the object is present on the newest frame, the forward session, which from then on belongs to the caller."""

    key_frame: Frame
    segmentation: Segmentation
    session: TrackerSession | None  # forward session positioned at ``last_frame`` (None when not present)
    last_frame: Frame
    seed_area: int
    last_mask: TrackedMask | None = None  # the forward session's mask on ``last_frame``
    # Filled as the acquisition goes: the backward pass, which follows the hand-over, adds its own entries.
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyFrameChosen:
    """Event: the sampler chose the key frame; the segmenter runs next (closing the events here skips it)."""

    key_frame: Frame
    references: list[int]


@dataclass(frozen=True)
class Segmented:
    """Event: the key frame is segmented (the object found or not); every later result belongs to it."""

    key_frame: Frame
    segmentation: Segmentation


@dataclass(frozen=True)
class Propagated:
    """Event: one mask of the acquisition, ``pass_name`` "key" (the seed on the key frame), "catchup" (forward
    pass) or "backward"."""

    frame: Frame
    tracked: TrackedMask | None
    pass_name: str


AcquisitionEvent = KeyFrameChosen | Segmented | Propagated | Acquisition


class Direction(enum.Enum):
    """A propagation pass from the key frame; the value names its results and its timings/counts entries."""

    FORWARD = "catchup"  # the key frame to the newest frame, for live tracking to continue from
    BACKWARD = "backward"  # the key frame to the oldest stored frame (the history)

    def frames(self, window: Sequence[Frame], key: int) -> list[Frame]:
        """The frames this pass visits after the key frame, in the order it visits them."""
        return list(window[key + 1 :]) if self is Direction.FORWARD else list(window[:key])[::-1]


@dataclass(frozen=True)
class PassBudgets:
    """Wall-clock budgets of the two passes: the frame stride of each pass is planned so that it fits (0 = no
    budget, every frame is visited, as offline evaluation does). ``backward`` False: no backward pass at all."""

    catchup_s: float
    backward_s: float
    backward: bool = True

    @classmethod
    def of(cls, config: PipelineConfig) -> PassBudgets:
        return cls(config.catchup_budget_s, config.backward_budget_s, config.backward_pass)


EVERY_FRAME = PassBudgets(catchup_s=0.0, backward_s=0.0)


def complete(events: Iterable[AcquisitionEvent]) -> Acquisition:
    """Run an acquisition to its end (or go through its recorded events) and return its hand-over."""
    handover = None
    for event in events:
        if isinstance(event, Acquisition):
            handover = event
    if handover is None:
        raise ValueError("the events contain no Acquisition hand-over")
    return handover


def until_handover(events: Generator[AcquisitionEvent, None, None]) -> Acquisition:
    """Run an acquisition up to its hand-over and stop it there (no backward pass); the caller owns the session."""
    try:
        for event in events:
            if isinstance(event, Acquisition):
                return event
    finally:
        events.close()
    raise ValueError("the acquisition ended without a hand-over")


class StepTimer:
    """Exponential moving average of a tracker's step time, used to size the propagation strides."""

    def __init__(self, initial_s: float = 0.05, alpha: float = 0.3) -> None:
        self.value = initial_s
        self.alpha = alpha
        self.measured = False

    def add(self, seconds: float) -> None:
        self.value = seconds if not self.measured else (1 - self.alpha) * self.value + self.alpha * seconds
        self.measured = True


def stride_for_budget(num_frames: int, step_s: float, budget_s: float) -> int:
    """Frame stride so that visiting ``num_frames`` frames at ``step_s`` each fits in ``budget_s``.

    A budget of 0 means "no budget": every frame is visited.
    """
    if num_frames <= 0 or budget_s <= 0:
        return 1
    affordable = max(1, int(budget_s / max(step_s, 1e-6)))
    return max(1, math.ceil(num_frames / affordable))


def budgeted(frames: Sequence[Frame], budget_s: float, timer: StepTimer) -> Iterator[Frame]:
    """Frames to visit so that the pass fits ``budget_s`` (0 = all), always ending on the last frame.

    The stride is re-planned before every step from the time left and the measured step time, so a wrong first
    estimate of the tracker's speed is corrected as the pass goes; when the budget is spent the pass jumps
    straight to the last frame.
    """
    start = time.perf_counter()
    position, last = -1, len(frames) - 1
    while position < last:
        remaining = last - position
        if budget_s <= 0:
            stride = 1
        else:
            left = budget_s - (time.perf_counter() - start)
            stride = remaining if left <= 0 else stride_for_budget(remaining, timer.value, left)
        position = min(last, position + stride)
        yield frames[position]


def _checked_evidence(method: str, evidence: Evidence | None, frame: Frame) -> Evidence | None:
    """Reject a segmenter's ``verify`` / ``refind`` output that would silently corrupt a track."""
    if evidence is None:
        return None
    if not isinstance(evidence, Evidence) or not np.isfinite(evidence.support):
        raise BackendFailure(f"segmenter {method} returned {evidence!r}, not an Evidence with a finite support")
    if evidence.correction is not None:
        correction = np.asarray(evidence.correction)
        if correction.shape != frame.image.shape[:2]:
            raise BackendFailure(f"{method} correction shape {correction.shape} != frame {frame.image.shape[:2]}")
        evidence.correction = correction.astype(bool, copy=False)
    evidence.support = float(min(max(evidence.support, 0.0), 1.0))
    return evidence


def check_segmentation(seg: Segmentation, frame: Frame) -> Segmentation:
    """Reject backend output that would silently publish wrong masks."""
    expected = frame.image.shape[:2]
    if not isinstance(seg, Segmentation):
        raise BackendFailure(f"segmenter returned {type(seg).__name__}, not a Segmentation")
    if not np.isfinite(seg.score):
        raise BackendFailure("segmenter returned a non-finite score (NaN/Inf)")
    mask = np.asarray(seg.mask)
    if mask.shape != expected:
        raise BackendFailure(f"segmenter mask shape {mask.shape} != key frame shape {expected}")
    seg.mask = mask.astype(bool, copy=False)
    return seg


def not_present(seg: Segmentation, reason: str) -> Segmentation:
    """``seg`` turned into "not present" for ``reason``; what the segmenter understood is kept."""
    return Segmentation(np.zeros_like(seg.mask), seg.score, False, reason, seg.details, seg.understanding)


def check_tracked(obj_id: str, tracked: TrackedMask, frame: Frame) -> TrackedMask:
    expected = frame.image.shape[:2]
    mask = np.asarray(tracked.mask)
    if mask.shape != expected:
        raise BackendFailure(f"tracker mask for {obj_id!r} has shape {mask.shape}, frame is {expected}")
    if not np.isfinite(tracked.confidence):
        raise BackendFailure(f"tracker returned a non-finite confidence for {obj_id!r}")
    return TrackedMask(mask.astype(bool, copy=False), float(min(max(tracked.confidence, 0.0), 1.0)))


class Pipeline:
    """The three backends plus the orchestration policy; shared by the live engine and offline tools."""

    def __init__(
        self,
        sampler: FrameSampler,
        segmenter: KeyframeSegmenter,
        tracker: Tracker,
        config: PipelineConfig | None = None,
    ) -> None:
        self.sampler = sampler
        self.segmenter = segmenter
        self.tracker = tracker
        self.config = config or PipelineConfig()
        self.config.validate()
        self.step_timer = StepTimer()

    def step_session(
        self, session: TrackerSession, frame: Frame, obj_id: str, seed: np.ndarray | None = None
    ) -> TrackedMask | None:
        start = time.perf_counter()
        out = session.step(frame, {obj_id: seed} if seed is not None else None)
        if seed is None:
            self.step_timer.add(time.perf_counter() - start)
        tracked = out.get(obj_id)
        return None if tracked is None else check_tracked(obj_id, tracked, frame)

    def reseed(self, obj_id: str, frame: Frame, mask: np.ndarray) -> TrackerSession:
        """A new forward session with ``obj_id`` seeded with ``mask`` on ``frame`` (a corrected track)."""
        session = self.tracker.new_session()
        try:
            self.step_session(session, frame, obj_id, mask)
        except BaseException:
            session.close()
            raise
        return session

    def verify(self, frame: Frame, mask: np.ndarray, segmentation: Segmentation, predicted_box=None) -> Evidence | None:
        """The segmenter's independent check of a tracked mask (None when it has none); see ``TrackGuard``."""
        return _checked_evidence("verify", self.segmenter.verify(frame, mask, segmentation, predicted_box), frame)

    def check_track(
        self, frame: Frame, tracked: TrackedMask | None, guard: TrackGuard, due: bool, refind: bool = False
    ) -> Evidence | None:
        """The independent evidence about one live step: the regular check of the tracked mask when ``due``
        (``verify``); then, unless that check corrected the track, ``refind`` when the check contradicts the mask,
        when the tracker's own output is about to lose the target (``DriftMonitor.would_lose``: the last of
        ``lost_patience`` suspicious frames) or when the caller says so (``refind``: it found the track about to be
        lost when it asked). An evidence with a ``correction`` re-seeds the track; None when there is nothing to
        say."""
        evidence = None
        if due and tracked is not None and tracked.area > 0:
            evidence = self.verify(frame, tracked.mask, guard.segmentation, guard.predicted_box(frame.stamp))
        if evidence is not None and evidence.correction is not None:
            return evidence
        contradicted = evidence is not None and evidence.support <= 0.0
        if refind or contradicted or guard.monitor.would_lose(tracked):
            found = self.refind(frame, guard)
            if found is not None:
                return found
        return evidence

    @property
    def can_refind(self) -> bool:
        """Whether the segmenter implements ``KeyframeSegmenter.refind``."""
        return type(self.segmenter).refind is not KeyframeSegmenter.refind

    def refind(self, frame: Frame, guard: TrackGuard) -> Evidence | None:
        """The target looked for on ``frame`` where it was last seen (``KeyframeSegmenter.refind``), for a track
        about to be lost: an evidence with the ``correction`` to re-seed it with, or None (not found, no such
        search, or ``TrackGuard.MAX_REFINDS`` re-finds in a row without a supporting check already)."""
        if not guard.may_refind():
            return None
        expected = guard.expected_box(frame.stamp)
        if expected is None:
            return None
        found = self.segmenter.refind(frame, expected, guard.segmentation, guard.predicted_box(frame.stamp))
        found = _checked_evidence("refind", found, frame)
        if found is None or found.correction is None:
            return None
        guard.refound()
        return found

    def acquire(
        self,
        target_id: str,
        instruction: str,
        frames: Sequence[Frame],
        budgets: PassBudgets | None = None,
        step_lock: AbstractContextManager | None = None,
        history_after: float | None = None,
    ) -> Generator[AcquisitionEvent, None, None]:
        """Resolve ``instruction`` on ``frames`` (oldest first) as a generator of events, in this order:
        ``KeyFrameChosen``; ``Segmented``; when the object is present, ``Propagated`` on the key frame ("key") and on
        the forward pass to the newest frame ("catchup"); the ``Acquisition`` hand-over (exactly one; its session,
        if any, is the caller's from then on); then, when the object was found on the key frame and the backward
        pass is on, the ``Propagated`` results of the backward pass, newest to oldest ("backward").

        The caller stops the acquisition by closing the generator (``events.close()``): nothing is computed or
        yielded after that, and the tracker sessions the acquisition still owns are closed. ``budgets``: the
        passes' time budgets (default: the configured ones). ``step_lock`` is held while a session is stepped or
        closed, one step at a time (not during the sampler and segmenter, which may take seconds, nor while the
        caller handles an event), so live tracking of other targets interleaves with the passes.
        ``history_after``: the backward pass stops at frames stamped at or before it (a re-acquisition: those
        frames already have this target's live results, only the gap since the loss is revisited).
        """
        if not frames:
            raise ValueError("cannot acquire on an empty window")
        budgets = budgets if budgets is not None else PassBudgets.of(self.config)
        lock = step_lock if step_lock is not None else nullcontext()
        return self._acquisition(target_id, instruction, list(frames), budgets, lock, history_after)

    def _acquisition(
        self,
        target_id: str,
        instruction: str,
        frames: list[Frame],
        budgets: PassBudgets,
        step_lock: AbstractContextManager,
        history_after: float | None,
    ) -> Generator[AcquisitionEvent, None, None]:
        cfg = self.config
        timings: dict[str, float] = {}
        counts: dict[str, int] = {}
        start = time.perf_counter()
        choice = self.sampler.sample(frames, instruction)
        timings["sampler_s"] = time.perf_counter() - start
        if not 0 <= choice.key < len(frames):
            raise BackendFailure(f"sampler chose frame {choice.key} outside a window of {len(frames)} frames")
        references = list(choice.references) or select_references(
            cfg.reference_strategy, len(frames), choice.key, cfg.num_references
        )
        key_frame = frames[choice.key]
        yield KeyFrameChosen(key_frame, references)

        start = time.perf_counter()
        seg = check_segmentation(self.segmenter.segment(frames, choice.key, references, instruction), key_frame)
        timings["segmenter_s"] = time.perf_counter() - start
        counts["key_position"] = choice.key
        seed_area = int(seg.mask.sum())
        if seg.present and seed_area < cfg.min_mask_area_px:
            seg = not_present(seg, f"mask of {seed_area} px is too small")
        yield Segmented(key_frame, seg)
        if not seg.present:
            yield Acquisition(key_frame, seg, None, frames[-1], 0, None, timings, counts)
            return
        yield Propagated(key_frame, TrackedMask(seg.mask, float(seg.score)), "key")

        def run_pass(
            session: TrackerSession, direction: Direction, visits: list[Frame], budget_s: float
        ) -> Iterator[Propagated]:
            """One pass from this key frame (the same routine both ways)."""
            return self.propagate(
                session, target_id, key_frame, seg.mask, direction, visits, budget_s, step_lock, timings, counts
            )

        # The sessions this acquisition owns: closed here, whatever ends it, unless handed over to the caller.
        forward: TrackerSession | None = None
        backward: TrackerSession | None = None
        try:
            forward = self.tracker.new_session()
            last, last_mask = key_frame, TrackedMask(seg.mask, float(seg.score))
            ahead = Direction.FORWARD.frames(frames, choice.key)
            for event in run_pass(forward, Direction.FORWARD, ahead, budgets.catchup_s):
                last, last_mask = event.frame, event.tracked
                yield event
            elapsed = timings["catchup_s"]
            # Frames of camera time covered per second of tracking: the figure that must reach live rate.
            if elapsed > 0 and counts.get("catchup_covered"):
                timings["catchup_covered_fps"] = counts["catchup_covered"] / elapsed
            handover = Acquisition(key_frame, seg, forward, last, seed_area, last_mask, timings, counts)
            if last is not key_frame and cfg.redetect_interval_s > 0:
                # The key frame is in the past: check the caught-up mask on the newest frame before it goes live
                # (the object may have left since; a catch-up through its absence ends on background).
                shown = last_mask.mask if last_mask is not None and last_mask.area > 0 else np.zeros_like(seg.mask)
                evidence = (
                    self.verify(last, shown, seg) if shown.any() else Evidence(0.0, "the caught-up mask is empty")
                )
                if evidence is not None and (evidence.correction is not None or evidence.support <= 0.0):
                    with step_lock:
                        forward.close()
                    forward = None
                if evidence is not None and evidence.correction is not None:
                    with step_lock:
                        forward = self.reseed(target_id, last, evidence.correction)
                    handover.session = forward
                    handover.last_mask = TrackedMask(evidence.correction, float(evidence.support))
                elif evidence is not None and evidence.support <= 0.0:
                    reason = f"found on an earlier frame of the window, but not on the newest ({evidence.reason})"
                    handover = Acquisition(key_frame, not_present(seg, reason), None, last, 0, None, timings, counts)
            forward = None  # the caller's from here on (or already closed)
            yield handover

            past = Direction.BACKWARD.frames(frames, choice.key) if budgets.backward else []
            if history_after is not None:
                past = [frame for frame in past if frame.stamp > history_after]
            if past:
                backward = self.tracker.new_session()
                yield from run_pass(backward, Direction.BACKWARD, past, budgets.backward_s)
        finally:
            for session in (forward, backward):
                if session is not None:
                    with step_lock:
                        session.close()

    def propagate(
        self,
        session: TrackerSession,
        target_id: str,
        key_frame: Frame,
        seed: np.ndarray,
        direction: Direction,
        frames: Sequence[Frame],
        budget_s: float,
        step_lock: AbstractContextManager,
        timings: dict[str, float],
        counts: dict[str, int],
    ) -> Iterator[Propagated]:
        """One pass, either direction: seed ``session`` with ``seed`` on ``key_frame``, then step it through
        ``frames`` (in the order of the pass, see ``Direction.frames``) at the stride that fits ``budget_s`` (0 = every
        frame), always ending on the last one; yields each mask. ``step_lock`` is held per step, never across a
        yield. Once the pass is through, ``timings`` gets "<pass>_s" (its duration) and ``counts`` "<pass>_frames"
        (frames stepped) and "<pass>_covered" (frames the pass spans), <pass> being the direction's value."""
        start = time.perf_counter()
        with step_lock:
            self.step_session(session, key_frame, target_id, seed)
        visited = 0
        for frame in budgeted(frames, budget_s, self.step_timer):
            with step_lock:
                tracked = self.step_session(session, frame, target_id)
            visited += 1
            yield Propagated(frame, tracked, direction.value)
        counts[f"{direction.value}_frames"] = visited
        counts[f"{direction.value}_covered"] = len(frames)
        timings[f"{direction.value}_s"] = time.perf_counter() - start


class DriftMonitor:
    """Decides when a tracked mask can no longer be trusted.

    A frame is suspicious when the mask is empty (the object left the view or vanished), its area collapsed
    below ``lost_min_area_ratio`` of the key-frame area or exploded beyond ``lost_max_area_ratio`` (the tracker
    jumped to something else), a mask touching the image border has shrunk below ``lost_border_area_ratio`` (the
    object is leaving the view; trackers tend to cling to the border), or the tracker's confidence is under
    ``lost_min_confidence``. ``lost_patience``
    consecutive suspicious frames declare the target lost; an empty mask that touched the image border on the
    previous frame is reported as "left the view".
    """

    def __init__(self, config: PipelineConfig, seed_area: int) -> None:
        self.config = config
        self.seed_area = max(1, seed_area)
        self.strikes = 0
        self.touched_border = False

    def would_lose(self, tracked: TrackedMask | None) -> bool:
        """Whether ``update(tracked)`` would declare the target lost (no state change)."""
        return self.strikes + 1 >= self.config.lost_patience and self._suspicion(tracked)[0] is not None

    def update(self, tracked: TrackedMask | None) -> str | None:
        """Feed one tracked frame; returns the reason when the target is lost, else None."""
        reason, touched_border = self._suspicion(tracked)
        if touched_border is not None:
            self.touched_border = touched_border
        if reason is None:
            self.strikes = 0
            return None
        self.strikes += 1
        return reason if self.strikes >= self.config.lost_patience else None

    def _suspicion(self, tracked: TrackedMask | None) -> tuple[str | None, bool | None]:
        """(why ``tracked`` is suspicious or None, whether its mask touches the image border; None when empty)."""
        cfg = self.config
        if tracked is None or tracked.area < max(1, cfg.min_mask_area_px):
            return ("object left the view" if self.touched_border else "mask vanished"), None
        ratio = tracked.area / self.seed_area
        mask = tracked.mask
        touched_border = bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        if ratio < cfg.lost_min_area_ratio:
            return f"mask area collapsed to {ratio:.0%} of the key-frame area", touched_border
        if ratio > cfg.lost_max_area_ratio:
            return f"mask area grew to {ratio:.1f}x the key-frame area", touched_border
        if touched_border and ratio < cfg.lost_border_area_ratio:
            return f"object leaving the view ({ratio:.0%} of the key-frame area left, at the border)", touched_border
        if tracked.confidence < cfg.lost_min_confidence:
            return f"tracker confidence {tracked.confidence:.2f} below {cfg.lost_min_confidence:.2f}", touched_border
        return None, touched_border


def _box_corners(mask: np.ndarray) -> np.ndarray | None:
    """(x0, y0, x1, y1) of the mask's pixels as floats, or None when empty."""
    box = mask_bbox(mask)
    return None if box is None else np.array([box[0], box[1], box[0] + box[2], box[1] + box[3]], float)


def redetect_due(config: PipelineConfig, stamp: float, last_stamp: float | None) -> bool:
    """Whether live tracking should gather independent evidence on the frame at ``stamp`` (every target on the
    same frame, so one detector pass serves them all); a stamp before the last one (new timeline) is due."""
    if config.redetect_interval_s <= 0:
        return False
    return last_stamp is None or stamp < last_stamp or stamp - last_stamp >= config.redetect_interval_s


class TrackGuard:
    """Whether a live track may be reported as TRACKING, and with which score (one per target).

    Two kinds of evidence: the tracker's own (``DriftMonitor``: empty mask, area collapse or explosion, leaving
    the view, low confidence for ``lost_patience`` frames) and, every ``redetect_interval_s``, an independent
    check (``Pipeline.verify``, e.g. the detector re-run and associated with the mask by box overlap and
    appearance). A mask that a check does not support (support 0) is never reported as TRACKING: the frame is
    reported LOST ("unconfirmed") while the track is kept until the next check, and a second check in a row
    without support loses it (re-acquisition). A check that returns a correction re-seeds the track. Before a
    track is lost, the target is looked for where it was last seen (``Pipeline.check_track``,
    ``KeyframeSegmenter.refind``); found, it is re-seeded instead (at most ``MAX_REFINDS`` times in a row).

    ``score`` is evidence-based: the geometric mean of the tracker's confidence and the support of the latest
    independent check (the key frame's detection score until the first check). Its calibration against the true
    IoU is measured by ``benchmarks/tracking_lite.py``.
    """

    #: Re-finds (``Pipeline.refind``) allowed in a row before a regular check supports the track again: a
    #: target that keeps being lost and re-found is not being tracked; it is re-acquired.
    MAX_REFINDS = 2
    #: How long after the target was last seen a re-find may look for it there (seconds of camera time).
    REFIND_WITHIN_S = 1.5
    #: How long a track about to be lost is held while a re-find runs elsewhere (the live engine's evidence
    #: worker), in seconds of camera time: its result normally comes back within a frame or two.
    REFIND_WAIT_S = 1.0

    def __init__(
        self, config: PipelineConfig, seed_area: int, segmentation: Segmentation, key_stamp: float | None = None
    ) -> None:
        self.monitor = DriftMonitor(config, seed_area)
        self.segmentation = segmentation
        self.support = float(min(max(segmentation.score, 0.0), 1.0))
        self.checks = 0
        self.corrections = 0
        self.refinds_in_a_row = 0
        self.unconfirmed = ""  # why the last check did not support the mask ("" when it did)
        # The live engine checks a track on its evidence worker while the tracking worker updates it.
        self._lock = threading.RLock()
        # Constant-velocity motion model of the target's box centre (its size is the last located one), from the
        # checks that located the target unambiguously.
        box = _box_corners(segmentation.mask)
        self._box = box
        self._stamp = key_stamp
        self._velocity = np.zeros(2)
        self._located = 0
        # Where the target was last reported TRACKING (box corners, camera stamp): where a re-find looks.
        self._seen_box, self._seen_stamp = box, key_stamp
        self._refind_asked: float | None = None  # stamp of the frame a re-find in flight was asked on

    @property
    def refinding(self) -> bool:
        with self._lock:
            return self._refind_asked is not None

    def refind_asked(self, stamp: float) -> None:
        """A re-find was asked for on the frame at ``stamp`` (and runs elsewhere): until it answers (a correction
        in ``update``, or ``refind_failed``), or for ``REFIND_WAIT_S``, the track is held instead of lost."""
        with self._lock:
            self._refind_asked = stamp

    def refind_failed(self) -> None:
        """The re-find in flight did not find the target (or its answer is stale): the next suspicious frame
        loses the track, and there is no other re-find until a check supports the track again."""
        with self._lock:
            self._refind_asked = None
            self.refinds_in_a_row = self.MAX_REFINDS

    def may_refind(self) -> bool:
        with self._lock:
            return self.refinds_in_a_row < self.MAX_REFINDS

    def refound(self) -> None:
        """A re-find located the target (``Pipeline.refind``)."""
        with self._lock:
            self.refinds_in_a_row += 1

    def expected_box(self, stamp: float) -> tuple[float, float, float, float] | None:
        """Where to look for the target at ``stamp`` after its track looks lost: the predicted box when the motion
        is known, else where it was last reported TRACKING (None when that is more than ``REFIND_WITHIN_S`` ago)."""
        with self._lock:
            predicted = self.predicted_box(stamp)
            if predicted is not None:
                return predicted
            if self._seen_box is None or self._seen_stamp is None:
                return None
            if not 0.0 <= stamp - self._seen_stamp <= self.REFIND_WITHIN_S:
                return None
            return tuple(float(v) for v in self._seen_box)

    def _seen(self, tracked: TrackedMask | None, stamp: float | None) -> None:
        if tracked is not None and stamp is not None:
            box = _box_corners(tracked.mask)
            if box is not None:
                self._seen_box, self._seen_stamp = box, stamp

    def predicted_box(self, stamp: float) -> tuple[float, float, float, float] | None:
        """Where the target's box should be at ``stamp`` (None until two checks have located the target, so the
        velocity is measured)."""
        with self._lock:
            if self._box is None or self._stamp is None or self._located < 2:
                return None
            dt = stamp - self._stamp
            if dt < 0 or dt > 3.0:  # a new timeline, or too long ago to extrapolate
                return None
            shift = np.tile(self._velocity * dt, 2)
            return tuple(float(v) for v in self._box + shift)

    def _locate(self, box, stamp: float) -> None:
        box = np.asarray(box, float)
        if self._box is not None and self._stamp is not None and stamp > self._stamp:
            centre = (box[:2] + box[2:]) / 2
            previous = (self._box[:2] + self._box[2:]) / 2
            measured = (centre - previous) / (stamp - self._stamp)
            # The first measurement spans the key frame's GrabCut box to a detector box: trust it half.
            weight = 0.5 if self._located else 0.3
            self._velocity = (1 - weight) * self._velocity + weight * measured
        self._box, self._stamp = box, stamp
        self._located += 1

    def update(
        self,
        tracked: TrackedMask | None,
        evidence: Evidence | None = None,
        stamp: float | None = None,
        evidence_stamp: float | None = None,
    ) -> Verdict:
        """Feed one tracked frame, with the frame's ``stamp``, and the independent evidence gathered on it or on
        an earlier frame (stamped ``evidence_stamp``; default: the same frame)."""
        with self._lock:
            return self._update(tracked, evidence, stamp, stamp if evidence_stamp is None else evidence_stamp)

    def _update(self, tracked, evidence, stamp, evidence_stamp) -> Verdict:
        if evidence is not None and evidence.box is not None and evidence_stamp is not None:
            self._locate(evidence.box, evidence_stamp)
        confidence = tracked.confidence if tracked is not None else 0.0
        if evidence is not None and evidence.correction is not None:
            self.checks += 1
            self.corrections += 1
            self.support = evidence.support
            self.monitor.strikes = 0
            self.unconfirmed = ""
            self._refind_asked = None
            self._seen(TrackedMask(evidence.correction, evidence.support), evidence_stamp)
            return Verdict(None, float(np.sqrt(max(confidence, evidence.support) * self.support)))
        reason = self.monitor.update(tracked)
        if reason is not None:
            asked = self._refind_asked
            if asked is not None and stamp is not None and 0.0 <= stamp - asked <= self.REFIND_WAIT_S:
                return Verdict(f"{reason}; looking for the target where it was last seen", 0.0, hold=True)
            self._refind_asked = None
            return Verdict(reason, 0.0)
        if evidence is not None:
            self.checks += 1
            self.support = evidence.support
            if evidence.support <= 0.0:
                if self.unconfirmed:  # the second check in a row that finds nothing: lost
                    return Verdict(f"the evidence does not support the mask: {evidence.reason}", 0.0)
                self.unconfirmed = evidence.reason
            else:
                self.unconfirmed = ""
                self.refinds_in_a_row = 0
        if self.unconfirmed:
            # Not reported as tracked (nothing supports the mask), but the track is kept until the next check:
            # a detector miss (occlusion, motion blur) must not cost a whole re-acquisition.
            return Verdict(f"unconfirmed: {self.unconfirmed}; re-checking", 0.0, hold=True)
        score = float(np.sqrt(confidence * self.support))
        if score < 0.5 * self.monitor.config.lost_min_confidence:
            # Too weak to publish as tracked; the drift monitor's patience decides whether the track is lost.
            return Verdict(f"score {score:.2f} on this frame is too low to report the mask; still tracking", 0.0, True)
        self._seen(tracked, stamp)
        return Verdict(None, score)


@dataclass
class Verdict:
    """``TrackGuard.update``'s decision for one frame: ``reason`` None means TRACKING with ``score``; otherwise the
    frame is not reported as tracked, and ``hold`` says whether the track is kept (unconfirmed, re-checked at the
    next check) or lost (re-acquire)."""

    reason: str | None
    score: float
    hold: bool = False
