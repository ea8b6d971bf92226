"""The ROS-free core: references, geometry, window, pipeline orchestration and drift detection."""

import time

import numpy as np
import pytest
from scenes import square_scene

from reasonvos_ros.backends.scripted import ScriptedSampler, ScriptedSegmenter, ScriptedTracker
from reasonvos_ros.core import references
from reasonvos_ros.core.config import PipelineConfig
from reasonvos_ros.core.errors import BackendFailure, ConfigError
from reasonvos_ros.core.geometry import Intrinsics, deproject, interior_point, mask_bbox, robust_depth
from reasonvos_ros.core.offline import segment_clip
from reasonvos_ros.core.pipeline import (
    Acquisition,
    Direction,
    DriftMonitor,
    KeyFrameChosen,
    PassBudgets,
    Pipeline,
    Propagated,
    Segmented,
    complete,
    stride_for_budget,
    until_handover,
)
from reasonvos_ros.core.types import Frame, TargetStatus, TrackedMask
from reasonvos_ros.core.window import RollingWindow


def make_frames(images, fps=30.0):
    return [Frame(i, i / fps, image=img) for i, img in enumerate(images)]


# ---- references ---------------------------------------------------------------------------------------
def test_uniform_stride_matches_released_rule():
    # T = 50: step = ceil(50 / 11) = 5, start at 23 % 5 = 3 -> 3, 8, ..., 48 (10 frames), includes the key.
    refs = references.select_references("uniform_stride", 50, 23, 11)
    assert refs == list(range(3, 50, 5))
    assert 23 in refs
    assert references.select_references("uniform_stride", 11, 4, 11) == list(range(11))


def test_local_references_are_consecutive_around_key_and_shifted_inside():
    assert references.select_references("local", 100, 50, 6) == [47, 48, 49, 51, 52, 53]
    assert references.select_references("local", 100, 0, 4) == [1, 2, 3, 4]
    assert references.select_references("local", 100, 99, 4) == [95, 96, 97, 98]


def test_global_references_span_the_window_without_key():
    refs = references.select_references("global", 120, 60, 11)
    assert len(refs) == 11 and 60 not in refs
    assert refs[0] < 12 and refs[-1] > 108


def test_global_local_mixes_both_and_small_windows_use_everything():
    refs = references.select_references("global_local", 200, 100, 10)
    assert len(refs) == 10 and 100 not in refs
    assert {98, 99, 101, 102} <= set(refs)  # the local half
    assert min(refs) < 40 and max(refs) > 160  # the global half
    assert references.select_references("global_local", 5, 2, 11) == [0, 1, 3, 4]


def test_reference_errors():
    with pytest.raises(ConfigError, match="unknown reference strategy"):
        references.select_references("random", 10, 1)
    with pytest.raises(ValueError, match="outside"):
        references.select_references("global", 10, 10)


# ---- geometry -------------------------------------------------------------------------------------------
def test_interior_point_lies_inside_concave_mask():
    # A "C" shape: its centroid falls in the empty middle.
    mask = np.zeros((100, 100), bool)
    mask[10:90, 10:30] = True
    mask[10:30, 10:90] = True
    mask[70:90, 10:90] = True
    ys, xs = np.nonzero(mask)
    assert not mask[int(ys.mean()), int(xs.mean())]
    x, y = interior_point(mask)
    assert mask[int(y), int(x)]
    assert mask_bbox(mask) == (10, 10, 80, 80)
    assert interior_point(np.zeros((5, 5), bool)) is None and mask_bbox(np.zeros((5, 5), bool)) is None


def test_robust_depth_ignores_invalid_values_and_rim():
    depth = np.full((60, 60), 3.0, np.float32)  # background
    mask = np.zeros((60, 60), bool)
    mask[20:40, 20:40] = True
    depth[mask] = 1.25
    depth[20, 20:40] = 3.0  # rim contaminated by background
    depth[30, 30] = np.nan
    depth[31, 31] = np.inf
    depth[32, 32] = 0.0
    assert robust_depth(mask, depth) == pytest.approx(1.25)
    assert robust_depth(mask, np.full((60, 60), np.nan, np.float32)) is None


def test_deprojection_and_intrinsics_validation():
    k = Intrinsics.from_camera_info_k([500, 0, 320, 0, 400, 240, 0, 0, 1])
    assert deproject(320 + 50, 240 - 40, 2.0, k) == pytest.approx((0.2, -0.2, 2.0))
    with pytest.raises(ValueError, match="positive"):
        Intrinsics(0.0, 400.0, 1, 1).validate()


# ---- window ---------------------------------------------------------------------------------------------
def test_window_bounds_by_duration_and_memory_and_resets_on_time_jump():
    frames, _ = square_scene(40, 120, 160)
    window = RollingWindow(max_duration_s=0.5, max_bytes=64 * 1024 * 1024)
    for i, img in enumerate(frames):
        window.add(img, i / 30.0)
    stats = window.stats()
    assert stats.duration_s <= 0.5 and stats.frames == 16  # frames 24..39
    snap = window.snapshot()
    assert [f.index for f in snap] == list(range(24, 40))
    assert np.abs(snap[0].image.astype(int) - frames[24].astype(int)).mean() < 4  # JPEG, decoded on access

    small = RollingWindow(max_duration_s=100, max_bytes=1024 * 1024)
    noise = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)  # incompressible
    for i in range(20):
        small.add(noise, float(i))
    assert small.stats().bytes <= 1024 * 1024 and len(small) < 20
    assert small.newest().index == 19  # the newest frame is never the one evicted

    window.add(frames[0], 0.0)  # time jumped back 1.3 s (bag loop)
    assert len(window) == 1 and window.stats().resets_total == 1


def test_window_rejects_bad_frames_and_config():
    window = RollingWindow()
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        window.add(np.zeros((10, 10), np.uint8), 0.0)
    with pytest.raises(ValueError, match="empty"):
        window.add(np.zeros((0, 10, 3), np.uint8), 0.0)
    with pytest.raises(ConfigError):
        RollingWindow(max_duration_s=0)


# ---- pipeline ---------------------------------------------------------------------------------------------
def scripted_pipeline(position="latest", **config):
    sampler, segmenter, tracker = ScriptedSampler(position=position), ScriptedSegmenter(), ScriptedTracker()
    return Pipeline(sampler, segmenter, tracker, PipelineConfig(**config)), sampler, segmenter, tracker


def test_acquire_yields_key_catchup_handover_then_backward():
    images, _ = square_scene(20)
    pipeline, _, segmenter, tracker = scripted_pipeline(0.5, backward_budget_s=0, catchup_budget_s=0)
    events = list(pipeline.acquire("t", "the red square", make_frames(images)))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["KeyFrameChosen", "Segmented"] + ["Propagated"] * 10 + ["Acquisition"] + ["Propagated"] * 10
    propagated = [(e.pass_name, e.frame.index) for e in events if isinstance(e, Propagated)]
    assert propagated == [
        ("key", 10),
        *(("catchup", i) for i in range(11, 20)),
        *(("backward", i) for i in range(9, -1, -1)),
    ]
    acq = complete(events)
    assert acq.key_frame.index == 10 and acq.segmentation.present
    forward, backward = tracker.sessions
    assert forward.visited == list(range(10, 20)) and not forward.closed  # handed over: the caller's to close
    assert backward.visited == [10, *range(9, -1, -1)] and backward.closed
    assert acq.session is forward and acq.last_frame.index == 19
    assert acq.counts["catchup_frames"] == 9 and acq.counts["backward_frames"] == 10
    assert {"sampler_s", "segmenter_s", "catchup_s", "backward_s"} <= set(acq.timings)
    # References come from the configured strategy (global_local, 11 by default) and exclude the key.
    _, refs, _ = segmenter.calls[0]
    assert len(refs) == 11 and 10 not in refs


def test_the_live_session_is_handed_over_before_any_past_frame_is_visited():
    images, _ = square_scene(20)
    pipeline, _, _, tracker = scripted_pipeline(0.5, backward_budget_s=0, catchup_budget_s=0)
    events = pipeline.acquire("t", "red", make_frames(images))
    handover = until_handover(events)
    assert handover.session is tracker.sessions[0] and len(tracker.sessions) == 1
    assert list(events) == []  # stopped at the hand-over: no backward pass
    assert "backward_s" not in handover.timings and not handover.session.closed


def test_backward_pass_can_be_turned_off():
    images, _ = square_scene(20)
    # Off in the configuration (budgets None: the configured ones), or off in budgets given explicitly.
    for configured_on, budgets in ((False, None), (True, PassBudgets(catchup_s=0.0, backward_s=0.0, backward=False))):
        pipeline, _, _, tracker = scripted_pipeline(0.5, backward_pass=configured_on, catchup_budget_s=0)
        events = list(pipeline.acquire("t", "red", make_frames(images), budgets=budgets))
        assert [e.pass_name for e in events if isinstance(e, Propagated)] == ["key"] + ["catchup"] * 9
        assert len(tracker.sessions) == 1 and complete(events).session is tracker.sessions[0]


def test_reacquisition_history_stops_at_the_last_live_frame():
    images, _ = square_scene(20)
    pipeline, _, _, tracker = scripted_pipeline(0.5, backward_budget_s=0, catchup_budget_s=0)
    frames = make_frames(images)
    events = list(pipeline.acquire("t", "red", frames, history_after=frames[6].stamp))
    assert [e.frame.index for e in events if isinstance(e, Propagated) and e.pass_name == "backward"] == [9, 8, 7]
    assert complete(events).counts["backward_covered"] == 3 and tracker.sessions[1].visited == [10, 9, 8, 7]


def test_closing_the_events_mid_pass_closes_the_sessions_and_stops_them():
    images, _ = square_scene(20)
    for pass_name in ("catchup", "backward"):
        pipeline, _, _, tracker = scripted_pipeline(0.5, backward_budget_s=0, catchup_budget_s=0)
        events = pipeline.acquire("t", "red", make_frames(images))
        handover = None
        for event in events:
            handover = event if isinstance(event, Acquisition) else handover
            if isinstance(event, Propagated) and event.pass_name == pass_name and event.frame.index in (13, 6):
                break
        steps = [list(session.visited) for session in tracker.sessions]
        events.close()
        assert list(events) == []  # nothing is yielded after close
        assert [session.visited for session in tracker.sessions] == steps  # nor computed
        if pass_name == "catchup":  # not handed over yet: the forward session is closed with the acquisition
            assert handover is None and len(tracker.sessions) == 1 and tracker.sessions[0].closed
            assert steps == [[10, 11, 12, 13]]
        else:  # the handed-over forward session is the caller's; the backward one is closed
            forward, backward = tracker.sessions
            assert handover.session is forward and not forward.closed and backward.closed
            assert steps[1] == [10, 9, 8, 7, 6]


def test_a_failing_step_closes_the_sessions_of_the_acquisition():
    images, _ = square_scene(20)
    pipeline, _, _, tracker = scripted_pipeline(0.5, backward_budget_s=0, catchup_budget_s=0)
    tracker.fail_after = 3  # the session's 4th step raises
    events = pipeline.acquire("t", "red", make_frames(images))
    with pytest.raises(BackendFailure, match="fault injection"):
        complete(events)
    assert len(tracker.sessions) == 1 and tracker.sessions[0].closed


def test_closing_during_key_frame_selection_skips_the_segmenter():
    images, _ = square_scene(10)
    pipeline, sampler, segmenter, tracker = scripted_pipeline()
    events = pipeline.acquire("t", "red", make_frames(images))
    chosen = next(events)
    assert isinstance(chosen, KeyFrameChosen) and chosen.key_frame.index == 9 and sampler.calls
    events.close()
    assert list(events) == [] and not segmenter.calls and not tracker.sessions


def test_closing_after_the_segmentation_opens_no_session():
    images, _ = square_scene(10)
    pipeline, _, segmenter, tracker = scripted_pipeline()
    events = pipeline.acquire("t", "red", make_frames(images))
    segmented = next(e for e in events if isinstance(e, Segmented))
    assert segmented.segmentation.present and len(segmenter.calls) == 1
    events.close()
    assert list(events) == [] and not tracker.sessions


def test_both_directions_are_the_same_budgeted_pass():
    """One routine for both passes: the same budget rule, given as arguments (the configured budgets are unused)."""
    images, _ = square_scene(21)
    frames = make_frames(images)
    ran_out = 1e-9  # spent before the first step: each pass jumps straight to its last frame
    cases = {
        PassBudgets(catchup_s=ran_out, backward_s=ran_out): ([10, 20], [10, 0]),
        PassBudgets(catchup_s=0.0, backward_s=0.0): ([*range(10, 21)], [*range(10, -1, -1)]),
        PassBudgets(catchup_s=ran_out, backward_s=0.0): ([10, 20], [*range(10, -1, -1)]),
        PassBudgets(catchup_s=0.0, backward_s=ran_out): ([*range(10, 21)], [10, 0]),
    }
    for budgets, (forward_visits, backward_visits) in cases.items():
        pipeline, _, _, tracker = scripted_pipeline(0.5, backward_budget_s=5.0, catchup_budget_s=5.0)
        acq = complete(pipeline.acquire("t", "red", frames, budgets=budgets))
        forward, backward = tracker.sessions
        assert (forward.visited, backward.visited) == (forward_visits, backward_visits), budgets
        for direction, visits in (("catchup", forward_visits), ("backward", backward_visits)):
            assert acq.counts[f"{direction}_frames"] == len(visits) - 1 and acq.counts[f"{direction}_covered"] == 10


def test_direction_orders_the_frames_of_each_pass():
    frames = make_frames(square_scene(6)[0])
    assert [f.index for f in Direction.FORWARD.frames(frames, 2)] == [3, 4, 5]
    assert [f.index for f in Direction.BACKWARD.frames(frames, 2)] == [1, 0]
    assert Direction.BACKWARD.frames(frames, 0) == [] and Direction.FORWARD.frames(frames, 5) == []


def test_catchup_skips_frames_to_fit_budget_and_ends_on_newest():
    assert stride_for_budget(100, 0.05, 1.0) == 5
    assert stride_for_budget(100, 0.05, 0.0) == 1
    images, _ = square_scene(61)
    pipeline, _, _, tracker = scripted_pipeline("first", catchup_budget_s=0.3)
    tracker.delay_s = 0.02
    pipeline.step_timer.add(0.002)  # a wrong (10x optimistic) first estimate: the pass must re-plan
    start = time.perf_counter()
    acq = complete(pipeline.acquire("t", "red", make_frames(images)))
    elapsed = time.perf_counter() - start
    forward = tracker.sessions[-1]
    assert acq.counts["catchup_covered"] == 60
    assert forward.visited[-1] == 60  # always ends on the newest frame
    assert forward.visited == sorted(forward.visited) and len(forward.visited) < 40
    assert elapsed < 0.3 + 0.2  # the budget plus at most a few steps of overshoot
    assert acq.timings["catchup_covered_fps"] > 60  # more camera frames covered per second than stepped


def test_budgeted_visits_everything_without_budget():
    from reasonvos_ros.core.pipeline import StepTimer, budgeted

    frames = make_frames(square_scene(7)[0])
    assert [f.index for f in budgeted(frames, 0.0, StepTimer())] == list(range(7))
    assert [f.index for f in budgeted(frames, 1e-9, StepTimer())][-1] == 6


def test_not_present_skips_tracking():
    images, _ = square_scene(10)
    pipeline, _, _, tracker = scripted_pipeline()
    events = list(pipeline.acquire("t", "the purple thing", make_frames(images)))
    assert [type(e).__name__ for e in events] == ["KeyFrameChosen", "Segmented", "Acquisition"]
    acq = complete(events)
    assert not acq.segmentation.present and acq.session is None and not tracker.sessions
    assert "no colour" in acq.segmentation.reason


def test_backend_output_is_validated():
    images, _ = square_scene(5)
    pipeline, *_ = scripted_pipeline()
    with pytest.raises(BackendFailure, match="non-finite score"):
        complete(pipeline.acquire("t", "red nan", make_frames(images)))
    with pytest.raises(ValueError, match="empty window"):
        pipeline.acquire("t", "red", [])  # at the call, not at the first step


def test_drift_monitor_reasons():
    cfg = PipelineConfig(lost_patience=2, lost_min_area_ratio=0.2, lost_min_confidence=0.3)
    mask = np.zeros((50, 50), bool)
    mask[10:30, 10:30] = True
    monitor = DriftMonitor(cfg, seed_area=400)
    assert monitor.update(TrackedMask(mask, 0.9)) is None
    tiny = np.zeros_like(mask)
    tiny[10:14, 10:14] = True
    assert monitor.update(TrackedMask(tiny, 0.9)) is None  # one strike only
    assert "collapsed" in monitor.update(TrackedMask(tiny, 0.9))
    monitor = DriftMonitor(cfg, seed_area=400)
    monitor.update(TrackedMask(mask, 0.1))
    assert "confidence" in monitor.update(TrackedMask(mask, 0.1))
    edge = np.zeros_like(mask)
    edge[10:30, 0:20] = True
    monitor = DriftMonitor(cfg, seed_area=400)
    monitor.update(TrackedMask(edge, 0.9))
    monitor.update(None)
    assert monitor.update(None) == "object left the view"


def test_segment_clip_offline_with_scripted_backends():
    images, masks = square_scene(15, objects={"red": (5, 5, 4, 2, 20), "blue": (100, 60, -2, 0, 16)})
    backends = {
        "sampler": {"name": "scripted", "options": {"position": 0.5}},
        "segmenter": {"name": "scripted"},
        "tracker": {"name": "scripted"},
    }
    result = segment_clip(images, "the blue square", backends)
    assert result.status == TargetStatus.TRACKING and result.key_index == 7
    for got, want in zip(result.masks, masks["blue"]):
        assert np.array_equal(got, want)
    absent = segment_clip(images, "the green square", backends)
    assert absent.status == TargetStatus.NOT_PRESENT and not any(m.any() for m in absent.masks)


def test_drift_monitor_declares_an_object_leaving_the_view_at_the_border():
    cfg = PipelineConfig(lost_patience=2, lost_border_area_ratio=0.35)
    monitor = DriftMonitor(cfg, seed_area=400)
    inside = np.zeros((50, 50), bool)
    inside[20:30, 20:30] = True  # 25% of the seed area, but not at the border: partial occlusion, keep tracking
    assert monitor.update(TrackedMask(inside, 0.9)) is None and monitor.update(TrackedMask(inside, 0.9)) is None
    at_border = np.zeros((50, 50), bool)
    at_border[20:30, 40:50] = True  # the same area clinging to the right border
    assert monitor.update(TrackedMask(at_border, 0.9)) is None
    assert "leaving the view" in monitor.update(TrackedMask(at_border, 0.9))


def test_segment_clip_leaves_the_callers_pipeline_configuration_alone():
    images, _ = square_scene(6, objects={"red": (5, 5, 4, 2, 20)})
    config = PipelineConfig(backward_budget_s=1.5, catchup_budget_s=0.5)
    pipeline = Pipeline(ScriptedSampler(position=0.5), ScriptedSegmenter(), ScriptedTracker(), config)
    segment_clip(images, "the red square", pipeline=pipeline)
    assert pipeline.config is config
    assert (config.backward_budget_s, config.catchup_budget_s) == (1.5, 0.5)


class _BrokenSegmenter(ScriptedSegmenter):
    """A backend whose constructor has a bug that raises TypeError (not a bad option)."""

    def __init__(self, options=None, /, **values) -> None:
        super().__init__(options, **values)
        len(None)  # the bug


def test_registry_separates_bad_options_from_constructor_bugs(monkeypatch):
    from reasonvos_ros.core import registry

    monkeypatch.setitem(registry.SEGMENTERS, "broken", f"{__name__}:_BrokenSegmenter")
    with pytest.raises(ConfigError, match=r"bad options for segmenter backend 'scripted'.*accepted options: delay_s"):
        registry.build_backend("segmenter", "scripted", {"dealy_s": 1})
    with pytest.raises(TypeError, match="has no len"):  # reported as the bug it is, with its own traceback
        registry.build_backend("segmenter", "broken", {"score": 0.5})
