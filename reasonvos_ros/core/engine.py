"""The live engine: instructions + a rolling window in, per-frame target results out (ROS-free).

Three worker threads keep ingest free of inference: the *acquisition* worker resolves instructions (sampler,
segmenter, catch-up, then the backward pass), one target at a time in instruction order, an acquisition waiting
in the queue before any backward pass not yet through (that pass resumes afterwards, and while a target is
tracked live it uses at most ``history_cpu_share`` of a core); the *tracking* worker steps every tracked target on
the newest frame, skipping frames it had no time for (the newest frame always wins), runs drift detection and
emits one result set per processed frame; the *evidence* worker runs the independent checks of the live tracks
(every ``redetect_interval_s``, all targets on the same frame) beside it, and the tracking worker applies each
check on the next frame it processes after the check returned. A new instruction for a target replaces the old
one: the acquisition in flight is dropped at its next step (a model call already running is not interrupted).
Backend exceptions set that target to ERROR with the reason; other targets continue; a new instruction retries.

Pausing (``set_enabled(False)``) and stopping are synchronous for consumers: once they return, no result is
emitted and no target changes state until processing resumes. Workers are never duplicated: a worker still
inside a model call when ``stop`` gave up waiting is taken back by the next ``start`` instead of a new one.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from .errors import BackendFailure, ConfigError
from .interfaces import TrackerSession
from .pipeline import (
    Acquisition,
    AcquisitionEvent,
    FrameResult,
    Pipeline,
    Propagated,
    Segmented,
    TrackGuard,
    redetect_due,
)
from .types import Evidence, Frame, TargetStatus, TrackedMask, Understanding
from .window import RollingWindow

MAX_INSTRUCTION_CHARS = 2000
MAX_TARGET_ID_CHARS = 128


def validate_instruction(text: str) -> str:
    """Normalise an instruction or raise ValueError with a reason fit for a log line."""
    if not isinstance(text, str):
        raise ValueError(f"instruction must be text, got {type(text).__name__}")
    cleaned = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    if not cleaned:
        raise ValueError("instruction is empty")
    if len(cleaned) > MAX_INSTRUCTION_CHARS:
        raise ValueError(f"instruction has {len(cleaned)} characters; the limit is {MAX_INSTRUCTION_CHARS}")
    return cleaned


def validate_target_id(target_id: str) -> str:
    """Strip a target id ("" means "default") or raise ValueError: ids name topics and log lines."""
    if not isinstance(target_id, str):
        raise ValueError(f"target id must be text, got {type(target_id).__name__}")
    target_id = target_id.strip() or "default"
    if len(target_id) > MAX_TARGET_ID_CHARS:
        raise ValueError(f"target id has {len(target_id)} characters; the limit is {MAX_TARGET_ID_CHARS}")
    if not target_id.isprintable():
        raise ValueError(f"target id {target_id!r} contains control characters")
    return target_id


@dataclass
class TargetState:
    """One target: its instruction, what the node reports for it and the live tracker session.

    The engine changes it only through the transition methods below, always with its lock held. A transition that
    takes the tracker session away returns it: the engine closes it with ``LiveEngine._close_sessions`` once the
    lock is released (the one place where the engine closes sessions)."""

    target_id: str
    instruction: str
    status: TargetStatus = TargetStatus.SEARCHING
    reason: str = "waiting for the key-frame segmentation"
    generation: int = 0
    score: float = 0.0
    session: TrackerSession | None = None
    last_index: int = -1  # sequence number of the last frame the forward session stepped
    last_mask: TrackedMask | None = None
    monitor: TrackGuard | None = None  # drift + independent evidence: may the track be reported as TRACKING
    holding: bool = False  # LOST but the session is kept and stepped: the last check did not confirm the mask
    keyframe_stamp: float | None = None
    keyframe: Frame | None = None  # the key frame itself (its meta carries the exact source stamp)
    understanding: Understanding | None = None  # what the last key-frame segmentation understood
    retry_at: float = 0.0  # monotonic time of the next automatic re-acquisition (LOST / NOT_PRESENT)
    queued: bool = False
    acquisitions: int = 0
    # Stamp of the newest live frame reported TRACKING with a mask: a re-acquisition's backward pass stops there
    # (the frames before have results; revisiting the whole window after every loss kept the acquisition worker
    # busy for seconds while the other lost targets waited for it).
    live_until: float | None = None

    # ---- transitions ------------------------------------------------------------------------------------------
    def superseded(self) -> TrackerSession | None:
        """A new instruction, a reset or a new timeline replaces this state: an acquisition in flight for it is
        stale from now on."""
        self.generation = -1
        return self._release_session()

    def queue(self) -> bool:
        """Ask for an acquisition; False when one is already queued."""
        if self.queued:
            return False
        self.queued = True
        return True

    def acquiring(self) -> None:
        """The acquisition worker took it from the queue (the reported status stays until the hand-over)."""
        self.queued = False

    def not_present(self, acquisition: Acquisition, retry_at: float) -> None:
        self._acquired(acquisition)
        self.status = TargetStatus.NOT_PRESENT
        self.reason = acquisition.segmentation.reason or "the segmenter found no such object in the window"
        self.score = float(acquisition.segmentation.score)
        self.retry_at = retry_at
        self.last_mask = None

    def tracking(self, acquisition: Acquisition, monitor: TrackGuard) -> None:
        """The acquisition's forward session goes live."""
        self._acquired(acquisition)
        self.session = acquisition.session
        self.last_index = acquisition.last_frame.index
        self.status = TargetStatus.TRACKING
        self.holding = False
        self.reason = ""
        self.score = float(acquisition.segmentation.score)
        self.monitor = monitor
        last = acquisition.last_mask
        self.last_mask = last if last is not None and last.area > 0 else None

    def reseeded(self, session: TrackerSession) -> TrackerSession | None:
        """Independent evidence corrected the track: ``session`` replaces the current one (returned)."""
        old, self.session = self.session, session
        return old

    def tracked(self, frame_index: int, tracked: TrackedMask | None, score: float | None) -> None:
        """A live step the evidence supports (``score`` None: keep the previous score)."""
        self.last_index = frame_index
        self.holding = False
        self.status, self.reason = TargetStatus.TRACKING, ""
        self.last_mask = tracked if tracked is not None and tracked.area > 0 else None
        if score is not None:
            self.score = score

    def unconfirmed(self, frame_index: int, reason: str) -> None:
        """Reported LOST without a mask, but the session is kept and stepped until the next check."""
        self.last_index = frame_index
        self.holding = True
        self.status, self.reason, self.last_mask, self.score = TargetStatus.LOST, reason, None, 0.0

    def lost(self, frame_index: int, reason: str, retry_at: float) -> TrackerSession | None:
        """The track cannot be trusted any more: re-acquire at ``retry_at``."""
        self.last_index = frame_index
        self.holding = False
        self.status, self.reason, self.last_mask = TargetStatus.LOST, reason, None
        self.retry_at = retry_at
        return self._release_session()

    def failed(self, reason: str) -> TrackerSession | None:
        """A backend failed for this target; a new instruction retries."""
        self.status, self.reason, self.last_mask = TargetStatus.ERROR, reason, None
        return self._release_session()

    def shown_live(self, stamp: float) -> None:
        """A live frame at ``stamp`` was reported TRACKING with a mask."""
        self.live_until = stamp if self.live_until is None else max(self.live_until, stamp)

    def _acquired(self, acquisition: Acquisition) -> None:
        self.acquisitions += 1
        self.keyframe_stamp = acquisition.key_frame.stamp
        self.keyframe = acquisition.key_frame
        self.understanding = acquisition.segmentation.understanding

    def _release_session(self) -> TrackerSession | None:
        session, self.session = self.session, None
        return session


@dataclass
class _Worker:
    """One worker thread and its own stop request (so a late worker of an earlier run can be told apart)."""

    role: str
    thread: threading.Thread | None = None
    stop: bool = False
    exited: bool = False  # set (under the engine lock) when the loop decided to return


@dataclass
class EngineStats:
    frames_processed: int = 0
    frames_skipped: int = 0
    acquisitions: int = 0
    acquisitions_cancelled: int = 0
    errors: int = 0
    lost_events: int = 0
    instructions_repeated: int = 0  # identical instructions for a target already following them (ignored)
    timelines: int = 0  # new timelines started by a camera that changed resolution
    redetections: int = 0  # frames on which live tracks were checked against independent evidence
    track_corrections: int = 0  # tracks re-seeded by that evidence
    histories_dropped: int = 0  # backward passes given up for a newer acquisition of their target
    last_timings: dict[str, float] = field(default_factory=dict)
    last_counts: dict[str, int] = field(default_factory=dict)
    track_step_s: float = 0.0  # mean duration of one target's tracker step, over frames where a tracker ran
    track_rate_hz: float = 0.0  # live frames per second on which a tracker ran (last TRACK_RATE_WINDOW_S)


@dataclass
class _Check:
    """Independent evidence about one target's live track, gathered by the evidence worker on ``frame``: the
    regular check when ``due``, a re-find when the track was about to be lost (``refind``), or both in one go.

    ``session`` is the live session when the check was asked for: the result applies only while it is still the
    target's session (a loss, a re-acquisition or a new instruction meanwhile makes it stale). ``reseeded``: a new
    session seeded with the evidence's correction on ``frame`` (the next live step carries it to the newest
    frame)."""

    state: TargetState
    generation: int
    session: TrackerSession
    guard: TrackGuard
    frame: Frame
    tracked: TrackedMask | None
    due: bool
    refind: bool
    evidence: Evidence | None = None
    reseeded: TrackerSession | None = None
    failure: Exception | None = None


@dataclass
class _History:
    """An acquisition whose forward session went live and whose backward pass is still to run."""

    state: TargetState
    generation: int
    events: Events
    past: _PastResults
    acquisition: Acquisition


@dataclass
class _PastResults:
    """Turns an acquisition's masks into results on past frames, labelled with its key frame once segmented."""

    target_id: str
    instruction: str
    key: Segmented | None = None

    def result_of(self, event: AcquisitionEvent) -> FrameResult | None:
        """The result an event carries (None for the events that carry none)."""
        if isinstance(event, Segmented):
            self.key = event
        if not isinstance(event, Propagated):
            return None
        tracked = event.tracked
        mask = tracked.mask if tracked is not None and tracked.area > 0 else None
        key = self.key
        return FrameResult(
            self.target_id,
            self.instruction,
            event.frame,
            TargetStatus.TRACKING if mask is not None else TargetStatus.LOST,
            "" if mask is not None else f"empty mask ({event.pass_name})",
            tracked.confidence if tracked is not None else 0.0,
            mask,
            key.key_frame.stamp if key is not None else None,
            key.segmentation.understanding if key is not None else None,
            key.key_frame if key is not None else None,
        )


TRACK_RATE_WINDOW_S = 5.0
Events = Generator[AcquisitionEvent, None, None]  # an acquisition in progress (``Pipeline.acquire``)
ResultsCallback = Callable[[Frame, list[FrameResult], bool], None]


class LiveEngine:
    """Owns the targets and the three workers. ``on_results(frame, results, live)`` is called from the workers:
    ``live`` True for the newest frame, False for results computed on past frames (backward pass, catch-up)."""

    def __init__(
        self,
        pipeline: Pipeline,
        window: RollingWindow,
        on_results: ResultsCallback,
        max_targets: int = 4,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        if max_targets < 1:
            raise ConfigError(f"max_targets must be >= 1, got {max_targets}")
        self.pipeline = pipeline
        self.window = window
        self.on_results = on_results
        self.on_event = on_event or (lambda level, text: None)
        self.max_targets = max_targets
        self.stats = EngineStats()
        self.enabled = True
        self._targets: dict[str, TargetState] = {}
        self._queue: deque[str] = deque()
        self._lock = threading.RLock()
        self._tracker_lock = threading.Lock()  # tracker sessions are stepped by one thread at a time
        # A backend whose sessions are independent (Tracker.concurrent_sessions) is locked per session instead:
        # an acquisition's catch-up and backward pass, on sessions no one else sees yet, then run beside live
        # tracking instead of taking turns with it (they used to take half of live tracking's time on 2 cores).
        self._concurrent_sessions = bool(getattr(pipeline.tracker, "concurrent_sessions", False))
        self._session_locks: weakref.WeakKeyDictionary[TrackerSession, threading.Lock] = weakref.WeakKeyDictionary()
        self._session_locks_guard = threading.Lock()
        # With independent sessions, the targets of one frame are stepped side by side: the tracking worker steps
        # one, a small pool the others (OpenCV releases the GIL). Created on first use, shut down by ``stop``.
        self._step_pool: ThreadPoolExecutor | None = None
        self._step_pool_size = max(1, min(3, (os.cpu_count() or 2) - 1))
        self._wake_acquire = threading.Condition(self._lock)
        self._wake_track = threading.Condition(self._lock)
        self._last_processed = -1
        self._tracked_frame_times: deque[float] = deque()  # when a tracker ran on a live frame (monotonic)
        self._last_redetect: float | None = None  # camera stamp of the last independent check of the tracks
        # Independent checks run on their own worker, so live tracking never waits for the detector (it took
        # half of the tracking worker's time with four targets): asked for on one frame, applied on a later one.
        self._checks_wanted: list[_Check] = []
        self._checks_done: dict[str, _Check] = {}
        self._check_in_flight = False
        self._wake_evidence = threading.Condition(self._lock)
        self._running = False
        self._workers: dict[str, _Worker] = {}
        self._generation = 0
        # Held while results are handed to ``on_results``: pause/stop take it after flipping their flag, so no
        # result is emitted once they return. Never taken with ``_lock`` held.
        self._emit_lock = threading.Lock()

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the workers (acquisition, tracking, evidence). A worker of an earlier run that is still inside a
        model call (``stop`` gave up waiting for it) is taken back instead of starting a second one of its kind."""
        with self._lock:
            if self._running:
                return
            self._running = True
            self._last_processed = -1
            roles = (("acquire", self._acquire_loop), ("track", self._track_loop), ("evidence", self._evidence_loop))
            for role, loop in roles:
                worker = self._workers.get(role)
                if worker is not None and worker.thread.is_alive() and not worker.exited:
                    worker.stop = False  # it carries on with this run once its call returns
                    continue
                worker = _Worker(role)
                # Daemon: a worker inside a model call must not block the process exit (the node leaves with
                # os._exit after an orderly shutdown, so no worker runs while the interpreter finalizes).
                worker.thread = threading.Thread(target=loop, args=(worker,), name=f"reasonvos-{role}", daemon=True)
                self._workers[role] = worker
                worker.thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the workers, waiting at most ``timeout`` seconds in all. A model call in progress cannot be
        interrupted: a worker inside one finishes it, drops its result and exits (or is taken back by the next
        ``start``). When this returns, no result is emitted any more and every target is forgotten."""
        with self._lock:
            self._running = False
            self._generation += 1
            for worker in self._workers.values():
                worker.stop = True
            self._wake_acquire.notify_all()
            self._wake_track.notify_all()
            self._wake_evidence.notify_all()
        deadline = time.monotonic() + timeout
        for worker in list(self._workers.values()):
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        # Wait for a hand-over to on_results in progress (bounded: a consumer stuck in a publish is not waited for).
        if self._emit_lock.acquire(timeout=max(0.05, deadline - time.monotonic())):
            self._emit_lock.release()
        with self._lock:
            pool, self._step_pool = self._step_pool, None
        if pool is not None:
            pool.shutdown(wait=False)  # its threads finish the step they are in (if any) and exit
        with self._lock:
            done, self._checks_done = self._checks_done, {}
        self._close_sessions([check.reseeded for check in done.values()])
        self.reset(None)

    def worker_threads(self) -> list[threading.Thread]:
        """The worker threads still alive (also one left inside a model call by ``stop``)."""
        with self._lock:
            return [w.thread for w in self._workers.values() if w.thread.is_alive()]

    # ---- inputs -------------------------------------------------------------------------------------
    def notify_frame(self) -> None:
        """Call after adding a frame to the window: wakes the workers (never blocks on inference)."""
        with self._lock:
            self._wake_track.notify_all()
            if self._queue or any(self._retry_due(t, time.monotonic()) for t in self._targets.values()):
                self._wake_acquire.notify_all()

    def set_instruction(self, target_id: str, text: str) -> TargetState:
        """Replace ``target_id``'s instruction; raises ValueError for bad text or when max_targets is reached.

        The same instruction again for a target already following it (searching, tracking or lost) changes
        nothing and returns the existing state: a bag replayed in a loop re-sends it and must not cancel the
        acquisition in progress each time. After an ERROR or NOT_PRESENT it retries at once."""
        text = validate_instruction(text)
        target_id = validate_target_id(target_id)
        with self._lock:
            current = self._targets.get(target_id)
            if (
                current is not None
                and current.instruction == text
                and current.status in (TargetStatus.SEARCHING, TargetStatus.TRACKING, TargetStatus.LOST)
            ):
                self.stats.instructions_repeated += 1
                return current
            if target_id not in self._targets and len(self._targets) >= self.max_targets:
                raise ValueError(
                    f"cannot add target {target_id!r}: max_targets={self.max_targets} reached "
                    f"({', '.join(sorted(self._targets))}); reset one first"
                )
            old = self._targets.get(target_id)
            dropped = old.superseded() if old is not None else None
            self._generation += 1
            waiting = "waiting for the first camera frame" if len(self.window) == 0 else TargetState.reason
            state = TargetState(target_id, text, reason=waiting, generation=self._generation)
            self._targets[target_id] = state
            self._enqueue(state)
        self._close_sessions([dropped])
        return state

    def reset(self, target_id: str | None) -> bool:
        """Forget one target (or all with None); False when the id is unknown."""
        with self._lock:
            ids = list(self._targets) if target_id is None else [target_id]
            if target_id is not None and target_id not in self._targets:
                return False
            dropped = []
            for tid in ids:
                dropped.append(self._targets.pop(tid).superseded())
                if tid in self._queue:
                    self._queue.remove(tid)
            self._generation += 1
        self._close_sessions(dropped)
        return True

    def set_enabled(self, enabled: bool) -> None:
        """Pause (False) or resume processing. Pausing is synchronous: when it returns no result is emitted
        and no target changes state; an acquisition in flight is dropped at its next step and runs again on
        resume."""
        with self._lock:
            self.enabled = bool(enabled)
            self._wake_acquire.notify_all()
            self._wake_track.notify_all()
        if not enabled and self._emit_lock.acquire(timeout=5.0):  # wait for a hand-over in progress
            self._emit_lock.release()

    def new_timeline(self, reason: str) -> None:
        """The frames so far belong to another timeline (e.g. the camera changed resolution and the window was
        cleared): every target starts over with its instruction, re-acquiring on the next frames."""
        dropped = []
        with self._lock:
            self.stats.timelines += 1
            for state in list(self._targets.values()):
                dropped.append(state.superseded())
                self._generation += 1
                fresh = TargetState(
                    state.target_id, state.instruction, reason=f"{reason}; re-acquiring", generation=self._generation
                )
                if state.target_id in self._queue:
                    self._queue.remove(state.target_id)
                self._targets[state.target_id] = fresh
                self._enqueue(fresh)
            self._last_processed = -1
        self._close_sessions(dropped)

    def targets(self) -> dict[str, TargetState]:
        with self._lock:
            return dict(self._targets)

    # ---- internals ------------------------------------------------------------------------------------
    def _close_sessions(self, sessions: list[TrackerSession | None]) -> None:
        """Close tracker sessions the engine no longer needs: the only place where it closes them. Called without
        ``_lock`` (a step lock is never taken under ``_lock``: a step may be slow, and ``_lock`` must stay free);
        each one under its step lock, so that a step in progress on another thread ends first."""
        for session in sessions:
            if session is not None:
                with self._step_lock(session):
                    session.close()

    def _step_lock(self, session: TrackerSession) -> threading.Lock:
        """What to hold while stepping or closing a live ``session``: the tracker lock, or the session's own lock
        with a backend whose sessions are independent."""
        if not self._concurrent_sessions:
            return self._tracker_lock
        with self._session_locks_guard:
            lock = self._session_locks.get(session)
            if lock is None:
                lock = self._session_locks[session] = threading.Lock()
            return lock

    def _private_session_lock(self) -> AbstractContextManager:
        """What to hold while stepping a session only the calling thread knows (an acquisition's passes, a
        re-seeded session not yet handed over): nothing with independent sessions, else the tracker lock."""
        return nullcontext() if self._concurrent_sessions else self._tracker_lock

    def _enqueue(self, state: TargetState) -> None:
        if state.queue():
            self._queue.append(state.target_id)
        self._wake_acquire.notify_all()

    @staticmethod
    def _retry_due(state: TargetState, now: float) -> bool:
        return (
            state.status in (TargetStatus.LOST, TargetStatus.NOT_PRESENT)
            and not state.holding
            and not state.queued
            and now >= state.retry_at
        )

    def _is_current(self, state: TargetState, generation: int) -> bool:
        with self._lock:
            return self._running and self._targets.get(state.target_id) is state and state.generation == generation

    def _may_change(self, state: TargetState, generation: int) -> bool:
        """Current and not paused: a result may be emitted / the state may change. Call with ``_lock`` held."""
        return self.enabled and self._is_current(state, generation)

    def _emit(self, frame: Frame, results: list[FrameResult], live: bool, check: Callable[[], bool]) -> bool:
        """Hand results to ``on_results`` unless ``check()`` (evaluated under the locks) says they are stale."""
        with self._emit_lock:
            with self._lock:
                if not check():
                    return False
            self.on_results(frame, results, live)
            return True

    def _acquire_loop(self, worker: _Worker) -> None:
        # Backward passes not yet through, oldest first, at most one per target. Only this thread touches them:
        # an acquisition waiting in the queue goes before them (a lost target used to wait seconds for other
        # targets' history passes), and they resume when no acquisition is waiting.
        histories: deque[_History] = deque()
        try:
            while True:
                for stale in [h for h in histories if not self._may_change(h.state, h.generation)]:
                    # Its target was replaced, reset or paused: the pass would stop at its next step anyway, and
                    # kept here it would hold a window snapshot for as long as acquisitions keep coming.
                    histories.remove(stale)
                    stale.events.close()
                with self._lock:
                    state = None
                    while not worker.stop:
                        now = time.monotonic()
                        for candidate in self._targets.values():
                            if self._retry_due(candidate, now):
                                self._enqueue(candidate)
                        if self.enabled and self._queue and len(self.window) > 0:
                            state = self._targets.get(self._queue.popleft())
                            if state is not None:
                                state.acquiring()
                                break
                            continue
                        if histories:
                            break
                        self._wake_acquire.wait(timeout=0.2)
                    if worker.stop:
                        worker.exited = True
                        return
                    if state is not None:
                        generation = state.generation
                        instruction = state.instruction
                if state is None:
                    history = histories.popleft()
                    if not self._continue_history(history):
                        histories.appendleft(history)  # an acquisition is waiting: it goes first
                    continue
                history = self._run_acquisition(state, generation, instruction, self.window.snapshot())
                if history is not None:
                    for older in [h for h in histories if h.state is state]:
                        # A newer acquisition of the same target: its history replaces the one not yet through.
                        histories.remove(older)
                        older.events.close()
                        with self._lock:
                            self.stats.histories_dropped += 1
                    histories.append(history)
        finally:
            for history in histories:
                history.events.close()

    def _pause_for_live_tracking(self, seconds: float) -> bool:
        """Leave the CPU to live tracking for ``seconds`` when a target is tracked live (the backward pass is
        best-effort; on two cores it used to take one whole core from live tracking). True when an acquisition
        became due meanwhile: it goes first."""
        with self._lock:
            if not any(t.status == TargetStatus.TRACKING for t in self._targets.values()):
                return False
            deadline = time.monotonic() + min(seconds, 1.0)
            while self._running and (left := deadline - time.monotonic()) > 0:
                self._wake_acquire.wait(timeout=left)
                if self._acquisition_waiting():
                    return True
        return False

    def _acquisition_waiting(self) -> bool:
        with self._lock:
            now = time.monotonic()
            due = bool(self._queue) or any(self._retry_due(t, now) for t in self._targets.values())
            return self.enabled and due and len(self.window) > 0

    def _run_acquisition(
        self, state: TargetState, generation: int, instruction: str, frames: list[Frame]
    ) -> _History | None:
        """One acquisition up to its hand-over: its results on past frames go out as they come and its forward
        session goes live. Returns its backward pass (the history) when there is one to run, for
        ``_continue_history``. It is stopped by closing its events (which closes the tracker sessions it still
        owns) as soon as the target is superseded, reset or paused."""
        past = _PastResults(state.target_id, instruction)
        try:
            events = self.pipeline.acquire(
                state.target_id,
                instruction,
                frames,
                step_lock=self._private_session_lock(),
                history_after=state.live_until,
            )
        except Exception as exc:
            self._fail(state, generation, exc)
            return None
        history = None
        try:
            acquisition = self._until_live(state, generation, events, past)
            if acquisition is not None:
                history = _History(state, generation, events, past, acquisition)
                return history
        finally:
            if history is None:
                events.close()
        return None

    def _until_live(
        self, state: TargetState, generation: int, events: Events, past: _PastResults
    ) -> Acquisition | None:
        """Follow the acquisition up to its hand-over; returns it when its forward session went live."""
        try:
            for event in events:
                if isinstance(event, Acquisition):
                    return self._hand_over(state, generation, event)
                self._emit_past(state, generation, past, event)
                if not self._may_change(state, generation):  # superseded, reset or paused: stop before the next step
                    break
        except Exception as exc:  # any backend failure becomes this target's ERROR
            self._fail(state, generation, exc)
            return None
        self._cancelled(state, generation)
        return None

    def _hand_over(self, state: TargetState, generation: int, acquisition: Acquisition) -> Acquisition | None:
        """Apply the acquisition's outcome to ``state``: TRACKING with its forward session, or NOT_PRESENT."""
        with self._lock:
            current = self._may_change(state, generation)
            if current:
                self.stats.acquisitions += 1
                self.stats.last_timings = dict(acquisition.timings)
                self.stats.last_counts = dict(acquisition.counts)
                if acquisition.session is None:
                    state.not_present(acquisition, time.monotonic() + self.pipeline.config.not_present_retry_s)
                else:
                    guard = TrackGuard(
                        self.pipeline.config,
                        acquisition.seed_area,
                        acquisition.segmentation,
                        acquisition.key_frame.stamp,
                    )
                    state.tracking(acquisition, guard)
                    self._wake_track.notify_all()
        if not current:
            self._close_sessions([acquisition.session])
            self._cancelled(state, generation)
            return None
        return acquisition if acquisition.session is not None else None

    def _continue_history(self, history: _History) -> bool:
        """Run ``history``'s backward pass (its results go to the history output) until it is through -- True --
        or an acquisition is waiting -- False: it is resumed later. A failure there is logged and does not touch
        the live target."""
        state, generation = history.state, history.generation
        share = self.pipeline.config.history_cpu_share
        try:
            started = time.perf_counter()
            for event in history.events:
                self._emit_past(state, generation, history.past, event)
                if not self._may_change(state, generation):
                    break
                if self._acquisition_waiting():
                    return False
                if share < 1.0 and self._pause_for_live_tracking((time.perf_counter() - started) * (1 / share - 1)):
                    return False
                started = time.perf_counter()
            else:
                with self._lock:
                    if self._is_current(state, generation):
                        self.stats.last_timings = dict(history.acquisition.timings)
                        self.stats.last_counts = dict(history.acquisition.counts)
        except Exception as exc:
            self.on_event("warn", f"target {state.target_id!r}: backward pass failed: {_describe_failure(exc)}")
        history.events.close()
        return True

    def _emit_past(self, state: TargetState, generation: int, past: _PastResults, event: AcquisitionEvent) -> None:
        result = past.result_of(event)
        if result is not None:
            self._emit(result.frame, [result], False, lambda: self._may_change(state, generation))

    def _cancelled(self, state: TargetState, generation: int) -> None:
        """An acquisition was dropped before it went live; one dropped because of a pause runs again on resume
        (its target keeps its status)."""
        with self._lock:
            self.stats.acquisitions_cancelled += 1
            if self._is_current(state, generation) and not self.enabled:
                self._enqueue(state)

    def _fail(self, state: TargetState, generation: int, exc: BaseException) -> None:
        reason = _describe_failure(exc)
        self.on_event("error", f"target {state.target_id!r}: {reason}")
        stale = None
        with self._lock:
            self.stats.errors += 1
            if self._may_change(state, generation):
                stale = state.failed(reason)
        self._close_sessions([stale])

    def _track_loop(self, worker: _Worker) -> None:
        while True:
            with self._lock:
                while not worker.stop:
                    newest = self.window.newest()
                    if self.enabled and self._targets and newest is not None and newest.index > self._last_processed:
                        break
                    self._wake_track.wait(timeout=0.2)
                if worker.stop:
                    worker.exited = True
                    return
                if self._last_processed >= 0 and newest.index > self._last_processed + 1:
                    self.stats.frames_skipped += newest.index - self._last_processed - 1
                self._last_processed = newest.index
                states = list(self._targets.values())
            self._track_frame(newest, states)

    def _track_frame(self, frame: Frame, states: list[TargetState]) -> None:
        results = []
        steps, step_time = 0, 0.0
        checks = self._apply_checks()
        with self._lock:  # every target is checked on the same frame: the detector's per-frame cache serves them all
            check_due = not self._check_in_flight and redetect_due(
                self.pipeline.config, frame.stamp, self._last_redetect
            )
        ordered = sorted(states, key=lambda s: s.target_id)
        snapshots = []
        for state in ordered:
            with self._lock:
                generation = state.generation
                session = state.session if state.status == TargetStatus.TRACKING or state.holding else None
                needs_step = session is not None and frame.index > state.last_index
                snapshots.append((state, generation, session if needs_step else None, state.monitor))
        stepped = self._step_sessions(frame, [(state, session) for state, _, session, _ in snapshots if session])
        jobs = []  # for the evidence worker: the tracks to check on this frame, and those about to be lost
        for state, generation, session, guard in snapshots:
            if session is not None:
                try:
                    tracked, failure, duration = stepped[state.target_id]
                    if failure is not None:
                        raise failure
                    steps += 1
                    step_time += duration
                    check = checks.get(state.target_id)
                    if check is not None and check.failure is not None:
                        raise check.failure
                    evidence = check.evidence if check is not None else None
                    evidence_stamp = check.frame.stamp if check is not None else frame.stamp
                    corrected = evidence is not None and evidence.correction is not None
                    if check is not None and check.refind and not corrected:
                        guard.refind_failed()
                    # The track is about to be lost on this frame: the target is looked for where it was last seen
                    # (on the evidence worker) while the track is held, instead of losing it and waiting for a
                    # re-acquisition.
                    refind = (
                        guard is not None
                        and self.pipeline.can_refind
                        and not corrected
                        and not guard.refinding
                        and guard.may_refind()
                        and guard.monitor.would_lose(tracked)
                    )
                    if refind:
                        guard.refind_asked(frame.stamp)
                    due = check_due and tracked is not None and tracked.area > 0
                    if guard is not None and (due or refind):
                        jobs.append(_Check(state, generation, session, guard, frame, tracked, due, refind))
                except Exception as exc:  # a tracker or check failure only affects this target
                    with self._lock:
                        # A new instruction or a reset may have closed this session under us: not a failure.
                        superseded = not self._is_current(state, generation) or state.session is not session
                    if not superseded:
                        self._fail(state, generation, exc)
                else:
                    self._after_step(state, generation, frame, tracked, evidence, evidence_stamp)
            with self._lock:
                if not self._is_current(state, generation):
                    continue
                if state.status == TargetStatus.TRACKING and state.last_index != frame.index:
                    # An acquisition finished while this frame was being processed: its mask belongs to another
                    # frame (it went out as a catch-up result); the next frame carries the target live.
                    continue
                mask = state.last_mask.mask if state.status == TargetStatus.TRACKING and state.last_mask else None
                reason = state.reason
                if state.status == TargetStatus.TRACKING and mask is None:
                    reason = "not visible on this frame (occluded?); still tracking"
                if mask is not None:
                    state.shown_live(frame.stamp)
                results.append(
                    FrameResult(
                        state.target_id,
                        state.instruction,
                        frame,
                        state.status,
                        reason,
                        state.score,
                        mask,
                        state.keyframe_stamp,
                        state.understanding,
                        state.keyframe,
                    )
                )
        with self._lock:
            if any(job.due for job in jobs):
                self._last_redetect = frame.stamp
                self.stats.redetections += 1
                self._check_in_flight = True
            if jobs:
                self._checks_wanted.extend(jobs)
                self._wake_evidence.notify_all()
            self.stats.frames_processed += 1
            # Only frames on which a tracker actually ran count: the others cost microseconds and used to turn the
            # figures into 60,000-100,000 Hz and 0.0 ms.
            now = time.monotonic()
            if steps:
                self.stats.track_step_s = step_time / steps
                self._tracked_frame_times.append(now)
            while self._tracked_frame_times and now - self._tracked_frame_times[0] > TRACK_RATE_WINDOW_S:
                self._tracked_frame_times.popleft()
            times = self._tracked_frame_times
            self.stats.track_rate_hz = (len(times) - 1) / (now - times[0]) if len(times) > 1 else 0.0
        if results:
            try:
                self._emit(frame, results, True, lambda: self._running and self.enabled)
            except Exception as exc:  # a failing consumer must not stop tracking for every target
                self.on_event(
                    "error", f"publishing the results of frame {frame.index} failed: {_describe_failure(exc)}"
                )

    def _apply_checks(self) -> dict[str, _Check]:
        """Take the evidence worker's finished checks: those still about the target's live session are returned
        by target id, with their corrected session swapped in; the stale ones' sessions are closed."""
        stale: list[TrackerSession | None] = []
        current = {}
        with self._lock:
            done, self._checks_done = self._checks_done, {}
            for target_id, check in done.items():
                state = check.state
                live = state.status == TargetStatus.TRACKING or state.holding
                if self._may_change(state, check.generation) and live and state.session is check.session:
                    if check.reseeded is not None:
                        stale.append(state.reseeded(check.reseeded))
                        self.stats.track_corrections += 1
                    current[target_id] = check
                else:
                    stale.append(check.reseeded)
                    if check.refind:
                        check.guard.refind_failed()
        self._close_sessions(stale)
        return current

    def _evidence_loop(self, worker: _Worker) -> None:
        """Runs the independent checks asked for by the tracking worker (``Pipeline.check_track`` on the frame
        they were asked on, and the re-seeding of a corrected track), one frame's checks at a time."""
        while True:
            with self._lock:
                while not worker.stop and not self._checks_wanted:
                    self._wake_evidence.wait(timeout=0.2)
                if worker.stop:
                    worker.exited = True
                    self._check_in_flight = False
                    return
                checks, self._checks_wanted = self._checks_wanted, []
            for check in checks:
                if not self._may_change(check.state, check.generation):
                    continue
                try:
                    check.evidence = self.pipeline.check_track(
                        check.frame, check.tracked, check.guard, check.due, check.refind
                    )
                    if check.evidence is not None and check.evidence.correction is not None:
                        with self._private_session_lock():
                            check.reseeded = self.pipeline.reseed(
                                check.state.target_id, check.frame, check.evidence.correction
                            )
                except Exception as exc:  # reported on the target by the tracking worker
                    check.failure = exc
            stale = []
            with self._lock:
                self._check_in_flight = any(check.due for check in self._checks_wanted)
                for check in checks:
                    if not self._running:
                        stale.append(check.reseeded)
                        continue
                    older = self._checks_done.get(check.state.target_id)
                    if older is not None:
                        stale.append(older.reseeded)
                    self._checks_done[check.state.target_id] = check
                self._wake_track.notify_all()
            self._close_sessions(stale)

    def _step_sessions(
        self, frame: Frame, jobs: list[tuple[TargetState, TrackerSession]]
    ) -> dict[str, tuple[TrackedMask | None, Exception | None, float]]:
        """Step every (target, session) of ``jobs`` on ``frame``: target id -> (mask, exception, seconds). One
        after the other, or side by side when the tracker's sessions are independent (each under its own lock)."""

        def step(state: TargetState, session: TrackerSession):
            start = time.perf_counter()
            try:
                with self._step_lock(session):
                    tracked = self.pipeline.step_session(session, frame, state.target_id)
            except Exception as exc:
                return None, exc, 0.0
            return tracked, None, time.perf_counter() - start

        futures = {}
        if self._concurrent_sessions and len(jobs) > 1:
            with self._lock:
                if self._step_pool is None and self._running:
                    self._step_pool = ThreadPoolExecutor(self._step_pool_size, thread_name_prefix="rvos-step")
                pool = self._step_pool
            # This thread steps its share too: with one pool thread (two cores) it used to step one target while
            # the pool stepped the three others one after the other.
            mine = -(-len(jobs) // (self._step_pool_size + 1))
            for state, session in jobs[mine:] if pool is not None else ():
                try:
                    futures[state.target_id] = pool.submit(step, state, session)
                except RuntimeError:  # the pool was shut down by ``stop`` meanwhile: step here
                    break
        out = {state.target_id: step(state, session) for state, session in jobs if state.target_id not in futures}
        out.update({target_id: future.result() for target_id, future in futures.items()})
        return out

    def _after_step(
        self,
        state: TargetState,
        generation: int,
        frame: Frame,
        tracked: TrackedMask | None,
        evidence: Evidence | None = None,
        evidence_stamp: float | None = None,
    ) -> None:
        """Apply one live step (and the evidence about it, gathered on the frame at ``evidence_stamp``)."""
        stale: list[TrackerSession | None] = []
        with self._lock:
            if self._may_change(state, generation):  # else superseded, reset or paused: no state change
                verdict = (
                    state.monitor.update(tracked, evidence, frame.stamp, evidence_stamp) if state.monitor else None
                )
                if verdict is None or verdict.reason is None:
                    state.tracked(
                        frame.index, tracked, verdict.score if tracked is not None and verdict is not None else None
                    )
                elif verdict.hold:
                    state.unconfirmed(frame.index, verdict.reason)
                else:
                    self.stats.lost_events += 1
                    self.on_event(
                        "warn", f"target {state.target_id!r} lost: {verdict.reason}; re-running key-frame segmentation"
                    )
                    retry_at = time.monotonic() + self.pipeline.config.reacquire_interval_s
                    stale.append(state.lost(frame.index, verdict.reason, retry_at))
        self._close_sessions(stale)


def _describe_failure(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "out of memory" in text.lower() or isinstance(exc, MemoryError):
        return f"out of memory in a backend ({name}: {text})"
    if isinstance(exc, BackendFailure):
        return text
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    location = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    return f"{name}: {text}{location}"
