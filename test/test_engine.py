"""The live engine with scripted backends: instruction semantics, multi-target, loss, faults (no ROS)."""

import threading
import time

import numpy as np
import pytest
from scenes import square_scene

from reasonvos_ros.backends.scripted import ScriptedSampler, ScriptedSegmenter, ScriptedTracker
from reasonvos_ros.core.config import PipelineConfig
from reasonvos_ros.core.engine import LiveEngine, validate_instruction
from reasonvos_ros.core.pipeline import Pipeline
from reasonvos_ros.core.types import Evidence, TargetStatus, TrackedMask
from reasonvos_ros.core.window import RollingWindow


class Harness:
    def __init__(self, segmenter_delay=0.0, tracker_delay=0.0, max_targets=4, tracker=None, **config):
        self.segmenter = ScriptedSegmenter(delay_s=segmenter_delay)
        self.tracker = tracker or ScriptedTracker(delay_s=tracker_delay)
        config.setdefault("reacquire_interval_s", 0.0)
        self.pipeline = Pipeline(ScriptedSampler(), self.segmenter, self.tracker, PipelineConfig(**config))
        self.window = RollingWindow(max_duration_s=5.0, storage="png")
        self.live: list = []
        self.past: list = []
        self.order: list = []  # (live, reason) of every result in the order it was reported
        self.sequence: list = []  # (live, target id, frame index) of every result in the order it was reported
        self.events: list = []
        self.cond = threading.Condition()
        self.engine = LiveEngine(self.pipeline, self.window, self.on_results, max_targets, self.on_event)
        self.engine.start()
        self.t = 0

    def on_results(self, frame, results, live):
        with self.cond:
            (self.live if live else self.past).append((frame.index, {r.target_id: r for r in results}))
            self.order.extend((live, r.status) for r in results)
            self.sequence.extend((live, r.target_id, frame.index) for r in results)
            self.cond.notify_all()

    def on_event(self, level, text):
        self.events.append((level, text))

    def feed(self, images, period=0.01):
        for img in images:
            self.window.add(img, self.t / 30.0)
            self.t += 1
            self.engine.notify_frame()
            time.sleep(period)

    def wait_for(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("timed out waiting for engine results")
                self.cond.wait(remaining)

    def wait_status(self, target_id, status, min_frame=-1):
        """Wait until the newest live result of ``target_id`` (on frame >= ``min_frame``) has ``status``."""
        self.wait_for(
            lambda: (r := self.latest(target_id)) is not None and r.status == status and self.live[-1][0] >= min_frame
        )
        return self.latest(target_id)

    def latest(self, target_id):
        for _, results in reversed(self.live):
            if target_id in results:
                return results[target_id]
        return None

    def close(self):
        self.engine.stop()


@pytest.fixture
def harness_factory():
    made = []

    def make(**kwargs):
        made.append(Harness(**kwargs))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_instruction_validation():
    assert validate_instruction("  the red\tcup \x07 ") == "the red cup"
    for bad, msg in (("", "empty"), ("  \n ", "empty"), ("x" * 5000, "limit")):
        with pytest.raises(ValueError, match=msg):
            validate_instruction(bad)


def test_no_instruction_means_no_inference(harness_factory):
    h = harness_factory()
    images, _ = square_scene(10)
    h.feed(images)
    time.sleep(0.2)
    assert not h.live and not h.segmenter.calls and not h.tracker.sessions


def test_tracks_and_publishes_masks_for_newest_frames(harness_factory):
    h = harness_factory()
    images, masks = square_scene(40)
    h.feed(images[:5])
    h.engine.set_instruction("cup", "the red one")
    h.feed(images[5:])
    h.wait_status("cup", TargetStatus.TRACKING, min_frame=39)
    idx, results = h.live[-1]
    assert np.array_equal(results["cup"].mask, masks["red"][idx])
    assert results["cup"].keyframe_stamp is not None
    assert h.past, "backward/catch-up results are reported as past results"


def test_first_live_mask_comes_before_the_history(harness_factory):
    h = harness_factory(tracker_delay=0.02, backward_budget_s=0)  # visit every past frame: 30 x 20 ms
    images, _ = square_scene(60)
    h.feed(images[:30], period=0.0)
    h.engine.set_instruction("cup", "the red one")
    h.feed(images[30:], period=0.03)
    h.wait_for(lambda: len(h.past) >= 30)
    first_live = h.order.index((True, TargetStatus.TRACKING))
    history = [position for position, (live, _) in enumerate(h.order) if not live]
    assert len(history) >= 30
    assert first_live < history[-1], "live tracking had to wait for the backward pass"


def test_backward_pass_off_means_no_history(harness_factory):
    h = harness_factory(backward_pass=False)
    images, _ = square_scene(40)
    h.feed(images[:20], period=0.0)
    h.engine.set_instruction("cup", "the red one")
    h.feed(images[20:])
    h.wait_status("cup", TargetStatus.TRACKING, min_frame=39)
    assert len(h.tracker.sessions) == 1  # only the forward session


class _OverlapTracker(ScriptedTracker):
    """Counts how many of its sessions are inside ``step`` at once (and which thread stepped what)."""

    def __init__(self, concurrent_sessions, delay_s):
        super().__init__(delay_s=delay_s)
        self.concurrent_sessions = concurrent_sessions
        self.inside = 0
        self.most_inside = 0
        self.closed_while_stepping = 0
        self.count_lock = threading.Lock()

    def new_session(self):
        session = super().new_session()
        step, close = session.step, session.close

        def counted_step(frame, new_masks=None):
            with self.count_lock:
                self.inside += 1
                self.most_inside = max(self.most_inside, self.inside)
            try:
                return step(frame, new_masks)
            finally:
                with self.count_lock:
                    self.inside -= 1
                    session.stepping = False

        def checked_close():
            if getattr(session, "stepping", False):
                self.closed_while_stepping += 1
            close()

        def mark_and_step(frame, new_masks=None):
            session.stepping = True
            return counted_step(frame, new_masks)

        session.step, session.close = mark_and_step, checked_close
        return session


@pytest.mark.parametrize("concurrent", [True, False])
def test_independent_sessions_let_history_run_beside_live_tracking(harness_factory, concurrent):
    """A backend whose sessions are independent is locked per session: the backward pass of one target and the
    live steps of another run at the same time. Otherwise every step waits for the one tracker lock."""
    tracker = _OverlapTracker(concurrent, delay_s=0.02)
    h = harness_factory(tracker=tracker, backward_budget_s=0)  # the history visits all 30 past frames: 0.6 s
    images, _ = square_scene(90)
    h.feed(images[:30], period=0.0)
    h.engine.set_instruction("cup", "the red one")
    h.feed(images[30:35], period=0.03)
    h.engine.set_instruction("other", "the blue one")  # its backward pass overlaps "cup"'s live steps
    h.feed(images[35:], period=0.03)
    h.wait_for(lambda: len({index for index, _ in h.past}) >= 30)
    h.engine.reset("cup")  # closes a live session: never while it is being stepped
    h.feed(images[60:70], period=0.03)
    assert (tracker.most_inside >= 2) if concurrent else (tracker.most_inside == 1)
    assert tracker.closed_while_stepping == 0


@pytest.mark.parametrize("concurrent", [True, False])
def test_targets_of_one_frame_are_stepped_side_by_side(harness_factory, concurrent):
    """Independent sessions: the targets of one frame are stepped at the same time, with the same masks as one
    after the other (each result is its own object's exact mask)."""
    tracker = _OverlapTracker(concurrent, delay_s=0.03)
    h = harness_factory(tracker=tracker, backward_pass=False)
    images, masks = square_scene(60, objects={"red": (10, 20, 1, 0, 20), "blue": (90, 60, -1, 0, 20)})
    h.feed(images[:5], period=0.0)
    h.engine.set_instruction("r", "the red one")
    h.engine.set_instruction("b", "the blue one")
    h.feed(images[5:30], period=0.04)
    h.wait_for(lambda: any(len(results) == 2 and all(r.status == TargetStatus.TRACKING for r in results.values())
                           for _, results in h.live))  # fmt: skip
    with tracker.count_lock:
        tracker.most_inside = 0  # from here on only live steps run (both acquisitions are done)
    h.feed(images[30:], period=0.04)
    both = [(index, results) for index, results in h.live if len(results) == 2]
    compared = 0
    for index, results in both:
        for target_id, colour in (("r", "red"), ("b", "blue")):
            if results[target_id].status == TargetStatus.TRACKING:
                np.testing.assert_array_equal(results[target_id].mask, masks[colour][index])
                compared += 1
    assert compared >= 10
    assert (tracker.most_inside >= 2) if concurrent else (tracker.most_inside == 1)


class _ContradictingSegmenter(ScriptedSegmenter):
    """Its independent check contradicts every tracked mask (e.g. the detector no longer sees the object); it
    notes the newest frame of ``window`` when each check returns."""

    def __init__(self, window):
        super().__init__()
        self.window = window
        self.checked = []
        self.newest_when_returned = []

    def verify(self, frame, mask, segmentation, predicted_box=None):
        self.checked.append(frame.index)
        evidence = Evidence(0.0, "no red thing detected at the mask")
        self.newest_when_returned.append(self.window.newest().index)
        return evidence


def test_contradicted_track_is_lost_not_tracking(harness_factory):
    h = harness_factory(redetect_interval_s=0.2, reacquire_interval_s=60.0)  # no re-acquisition in this test
    h.pipeline.segmenter = segmenter = _ContradictingSegmenter(h.window)
    images, _ = square_scene(40)
    h.feed(images[:5])
    h.engine.set_instruction("cup", "the red one")
    h.feed(images[5:], period=0.03)
    h.wait_for(
        lambda: segmenter.checked and any(r.get("cup") and r["cup"].status == TargetStatus.LOST for _, r in h.live)
    )
    lost = next(r["cup"] for _, r in h.live if r.get("cup") and r["cup"].status == TargetStatus.LOST)
    assert "no red thing detected" in lost.reason and lost.mask is None
    # Checks run beside live tracking (it never waits for the detector): a frame processed while the first check
    # ran may still go out TRACKING on the key frame's evidence, but none after that check came back (two frames
    # of margin for the hand-over of its result): the contradicted mask is not published as tracked any more.
    after = segmenter.newest_when_returned[0] + 2
    with h.cond:
        late = [results["cup"] for index, results in h.live if index > after and "cup" in results]
    assert late and all(result.status != TargetStatus.TRACKING for result in late)


def test_new_instruction_replaces_and_cancels_in_flight(harness_factory):
    h = harness_factory(segmenter_delay=0.4)
    images, masks = square_scene(30, objects={"red": (5, 5, 2, 0, 20), "blue": (80, 60, -1, 0, 20)})
    h.feed(images[:3])
    h.engine.set_instruction("default", "the red one")
    time.sleep(0.1)  # the red acquisition is now inside the (slow) segmenter
    h.engine.set_instruction("default", "the blue one")
    h.feed(images[3:], period=0.03)
    h.wait_status("default", TargetStatus.TRACKING)
    result = h.latest("default")
    assert result.instruction == "the blue one"
    idx = h.live[-1][0]
    assert np.array_equal(h.live[-1][1]["default"].mask, masks["blue"][idx])
    assert h.engine.stats.acquisitions_cancelled >= 1
    # No result of the superseded instruction is published after the replacement completed.
    assert all(r.instruction == "the blue one" for _, rs in h.past[-3:] for r in rs.values())


def test_a_pause_during_the_segmentation_stops_the_acquisition_before_any_tracking(harness_factory):
    h = harness_factory(segmenter_delay=0.4)
    images, _ = square_scene(30)
    h.feed(images[:3])
    h.engine.set_instruction("r", "the red one")
    h.wait_for(lambda: h.segmenter.calls, timeout=5.0)  # the acquisition is inside the (slow) segmenter
    h.engine.set_enabled(False)
    time.sleep(0.6)  # the segmenter returns meanwhile: its acquisition is stopped there
    assert not h.tracker.sessions and not h.past
    assert all(results["r"].status == TargetStatus.SEARCHING for _, results in h.live)
    assert h.engine.stats.acquisitions_cancelled == 1 and h.engine.stats.acquisitions == 0
    h.engine.set_enabled(True)  # it runs again on resume
    h.feed(images[3:], period=0.05)  # live frames keep coming after its (slow) segmentation
    h.wait_status("r", TargetStatus.TRACKING)
    assert h.engine.stats.acquisitions == 1


def test_a_reset_during_the_history_closes_every_session_and_stops_its_results(harness_factory):
    h = harness_factory(tracker_delay=0.02, backward_budget_s=0)  # the history visits all 30 past frames: 0.6 s
    images, _ = square_scene(60)
    h.feed(images[:30], period=0.0)
    h.engine.set_instruction("cup", "the red one")
    h.wait_for(lambda: any(index < 20 for index, _ in h.past), timeout=10.0)  # the backward pass is under way
    assert h.engine.reset("cup")
    time.sleep(0.05)  # a hand-over to on_results that had passed its check before the reset may still land
    past_after_reset = len(h.past)
    time.sleep(0.3)  # the rest of the pass would take ~0.4 s
    assert len(h.past) == past_after_reset and min(index for index, _ in h.past) > 0
    assert len(h.tracker.sessions) == 2 and all(session.closed for session in h.tracker.sessions)
    assert h.engine.stats.acquisitions == 1


def test_two_targets_reset_and_max_targets(harness_factory):
    h = harness_factory(max_targets=2)
    images, masks = square_scene(60, objects={"red": (5, 5, 1, 0, 20), "blue": (100, 60, -1, 0, 20)})
    h.feed(images[:3])
    h.engine.set_instruction("a", "red")
    h.engine.set_instruction("b", "blue")
    with pytest.raises(ValueError, match="max_targets"):
        h.engine.set_instruction("c", "green")
    h.feed(images[3:30])
    h.wait_for(
        lambda: (
            len(h.live)
            and all(r.status == TargetStatus.TRACKING for r in h.live[-1][1].values())
            and len(h.live[-1][1]) == 2
        )
    )
    idx, results = h.live[-1]
    assert np.array_equal(results["a"].mask, masks["red"][idx])
    assert np.array_equal(results["b"].mask, masks["blue"][idx])
    assert h.engine.reset("a") and not h.engine.reset("nope")
    h.feed(images[30:40])
    h.wait_for(lambda: h.live[-1][0] == 39)
    assert set(h.live[-1][1]) == {"b"}
    assert h.engine.reset(None) and not h.engine.targets()


def test_not_present_status_with_empty_mask(harness_factory):
    h = harness_factory()
    images, _ = square_scene(20)
    h.feed(images[:2])
    h.engine.set_instruction("x", "the green one")
    h.feed(images[2:])
    h.wait_status("x", TargetStatus.NOT_PRESENT)
    r = h.latest("x")
    assert r.mask is None and "no pixel" in r.reason


def test_lost_target_is_reacquired_when_it_comes_back(harness_factory):
    h = harness_factory(lost_patience=2, not_present_retry_s=0.1)
    images, _ = square_scene(60, objects={"red": (10, 20, 1, 1, 24)}, visible={"red": [*range(0, 20), *range(35, 60)]})
    h.feed(images[:5])
    h.engine.set_instruction("r", "red")
    h.feed(images[5:30], period=0.02)
    h.wait_for(lambda: any(rs["r"].status == TargetStatus.LOST for _, rs in h.live))
    lost = next(rs["r"] for _, rs in h.live if rs["r"].status == TargetStatus.LOST)
    assert "vanished" in lost.reason or "left" in lost.reason
    assert lost.mask is None
    h.feed(images[30:], period=0.02)
    h.wait_status("r", TargetStatus.TRACKING, min_frame=40)
    assert h.engine.stats.lost_events >= 1 and h.engine.stats.acquisitions >= 2


def test_reacquisition_history_covers_only_the_gap_since_the_loss(harness_factory):
    """After a loss, the new acquisition's backward pass revisits only frames after the last live TRACKING one."""
    h = harness_factory(lost_patience=2, not_present_retry_s=0.1, backward_budget_s=0)  # visit every past frame
    images, _ = square_scene(60, objects={"red": (10, 20, 1, 1, 24)}, visible={"red": [*range(0, 20), *range(35, 60)]})
    h.feed(images[:5])
    h.engine.set_instruction("r", "red")
    h.feed(images[5:30], period=0.02)
    h.wait_for(lambda: any(rs["r"].status == TargetStatus.LOST for _, rs in h.live))
    with h.cond:
        before = len(h.past)
        last_live = max(i for i, rs in h.live if rs["r"].status == TargetStatus.TRACKING and rs["r"].mask is not None)
    h.feed(images[30:], period=0.02)
    h.wait_status("r", TargetStatus.TRACKING, min_frame=40)
    h.wait_for(lambda: any(index == last_live + 1 for index, _ in h.past[before:]))  # the pass reached the gap's start
    revisited = [index for index, _ in h.past[before:]]
    assert min(revisited) == last_live + 1, (last_live, sorted(revisited))


def test_a_waiting_acquisition_goes_before_a_history_pass_which_then_resumes(harness_factory):
    """A target waiting for its acquisition used to wait for the whole backward pass of the target acquired
    before it (seconds per lost target with four targets); the pass now yields to it and finishes afterwards."""
    h = harness_factory(tracker_delay=0.02, backward_budget_s=0)  # the history visits all 30 past frames: 0.6 s
    images, _ = square_scene(70, objects={"red": (5, 5, 1, 0, 20), "blue": (100, 60, -1, 0, 20)})
    h.feed(images[:30], period=0.0)
    h.engine.set_instruction("a", "red")
    h.wait_for(lambda: any(live is False and target == "a" for live, target, _ in h.sequence))
    h.engine.set_instruction("b", "blue")  # queued while a's history pass runs
    h.feed(images[30:], period=0.02)
    h.wait_status("b", TargetStatus.TRACKING)
    h.wait_for(lambda: any(not live and target == "a" and index == 0 for live, target, index in h.sequence))
    with h.cond:
        sequence = list(h.sequence)
    history_of_a = [n for n, (live, target, _) in enumerate(sequence) if not live and target == "a"]
    b_live = next(n for n, (live, target, _) in enumerate(sequence) if live and target == "b")
    assert history_of_a[0] < b_live < history_of_a[-1], "b waited for a's whole backward pass"
    visited = {index for live, target, index in sequence if not live and target == "a"}
    assert set(range(0, 29)) <= visited, "a's backward pass did not finish after b's acquisition"
    assert h.engine.stats.histories_dropped == 0


def test_backend_fault_sets_error_and_next_instruction_recovers(harness_factory):
    h = harness_factory()
    images, _ = square_scene(40, objects={"red": (5, 5, 1, 0, 20), "blue": (100, 60, -1, 0, 20)})
    h.feed(images[:3])
    h.engine.set_instruction("ok", "blue")
    h.engine.set_instruction("bad", "red oom")
    h.feed(images[3:15])
    h.wait_status("bad", TargetStatus.ERROR)
    assert "out of memory" in h.latest("bad").reason
    assert h.latest("ok").status == TargetStatus.TRACKING  # the other target is unaffected
    h.engine.set_instruction("bad", "red")
    h.feed(images[15:])
    h.wait_status("bad", TargetStatus.TRACKING)
    assert any(level == "error" for level, _ in h.events)


def test_slow_tracker_skips_to_newest_frame(harness_factory):
    h = harness_factory(tracker_delay=0.05)
    images, _ = square_scene(60)
    h.feed(images[:3])
    h.engine.set_instruction("r", "red")
    h.feed(images[3:], period=0.005)
    h.wait_for(lambda: h.live and h.live[-1][0] == 59)
    assert h.engine.stats.frames_skipped > 0
    processed = [i for i, _ in h.live]
    assert processed == sorted(processed)  # never goes back to older frames


def test_disable_pauses_processing(harness_factory):
    h = harness_factory()
    images, _ = square_scene(30)
    h.feed(images[:3])
    h.engine.set_enabled(False)
    h.engine.set_instruction("r", "red")
    h.feed(images[3:10])
    time.sleep(0.2)
    assert not h.live and not h.segmenter.calls
    h.engine.set_enabled(True)
    h.feed(images[10:])
    h.wait_status("r", TargetStatus.TRACKING)


def test_tracker_figures_count_only_frames_where_a_tracker_ran(harness_factory):
    """tracker_rate_hz used to read 63,000-99,000 Hz and track_step_ms 0.0: frames with nobody to track were
    averaged in. A tracker step of ~40 ms fed at ~25 Hz must read about 40 ms and at most ~25 Hz."""
    h = harness_factory(tracker_delay=0.04)
    images, _ = square_scene(40)
    h.feed(images[:5])
    h.engine.set_instruction("cup", "the red one")
    h.feed(images[5:], period=0.04)
    h.wait_status("cup", TargetStatus.TRACKING, min_frame=39)
    stats = h.engine.stats
    assert 0.035 <= stats.track_step_s < 0.5, stats.track_step_s
    assert 0.5 < stats.track_rate_hz <= 1 / 0.035, stats.track_rate_hz


class _ForgetfulTracker(ScriptedTracker):
    """A perfect scripted tracker except that a session seeded before frame ``forget_from`` loses its object
    (empty masks) from that frame on; a session seeded on a later frame tracks normally."""

    def __init__(self, forget_from: int) -> None:
        super().__init__()
        self.forget_from = forget_from

    def new_session(self):
        tracker = self
        session = super().new_session()
        step = session.step

        def forgetful_step(frame, new_masks=None):
            out = step(frame, new_masks)
            if new_masks:
                session.seeded_at = frame.index
            if getattr(session, "seeded_at", 0) < tracker.forget_from <= frame.index:
                return {obj_id: TrackedMask(np.zeros_like(m.mask), 0.0) for obj_id, m in out.items()}
            return out

        session.step = forgetful_step
        return session


class _RefindingScriptedSegmenter(ScriptedSegmenter):
    """Re-finds the target by its colour (or, with ``finds`` False, never finds it)."""

    def __init__(self, finds: bool) -> None:
        super().__init__()
        self.finds, self.refinds = finds, []

    def refind(self, frame, expected_box, segmentation, predicted_box=None):
        from reasonvos_ros.backends.scripted import colour_mask

        self.refinds.append(frame.index)
        mask = colour_mask(frame.image, 0)  # red
        return Evidence(0.8, "scripted re-find", mask) if self.finds and mask.any() else None


@pytest.mark.parametrize("finds", [True, False])
def test_a_track_about_to_be_lost_is_refound_where_it_was_instead_of_reacquired(harness_factory, finds):
    h = harness_factory(tracker=_ForgetfulTracker(forget_from=20), lost_patience=2, reacquire_interval_s=60.0)
    h.pipeline.segmenter = segmenter = _RefindingScriptedSegmenter(finds)
    images, masks = square_scene(45)
    h.feed(images[:5])
    h.engine.set_instruction("r", "the red one")
    h.feed(images[5:], period=0.03)
    h.wait_for(lambda: h.live and h.live[-1][0] == 44)
    h.wait_for(lambda: segmenter.refinds)
    with h.cond:
        live = [(index, results["r"]) for index, results in h.live if "r" in results]
    after = [result for index, result in live if index >= 20]
    if finds:
        # Held (not TRACKING, no mask) while the re-find ran, then TRACKING again on the re-seeded session: no loss,
        # no second acquisition, and the masks after it are the object's.
        assert h.engine.stats.lost_events == 0 and h.engine.stats.acquisitions == 1
        assert h.engine.stats.track_corrections >= 1
        held = [r for r in after if r.status != TargetStatus.TRACKING]
        assert held and all(r.mask is None for r in held) and "looking for the target" in held[-1].reason
        assert after[-1].status == TargetStatus.TRACKING
        index, last = live[-1]
        np.testing.assert_array_equal(last.mask, masks["red"][index])
    else:
        # Not found: the track is lost, as without a re-find.
        assert h.engine.stats.lost_events == 1 and after[-1].status == TargetStatus.LOST
        assert "mask vanished" in after[-1].reason and len(segmenter.refinds) == 1
