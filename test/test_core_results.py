"""The node's outputs built without ROS (core/results.py): per-target results with 3D points, the label image,
the overlay, and the diagnostics values. Expected numbers are worked out by hand from the inputs."""

from __future__ import annotations

import numpy as np
import pytest

from reasonvos_ros.core.engine import EngineStats, TargetState
from reasonvos_ros.core.geometry import Intrinsics
from reasonvos_ros.core.ingest import FrameDepth, FrameMeta, IngestStats
from reasonvos_ros.core.pipeline import FrameResult
from reasonvos_ros.core.results import DiagnosticLevel, diagnostics, frame_output
from reasonvos_ros.core.types import Frame, TargetStatus, Understanding
from reasonvos_ros.core.window import WindowStats

HEIGHT, WIDTH = 20, 30


def frame(index: int = 7, header: object = "header-7") -> Frame:
    return Frame(index, index / 30, image=np.zeros((HEIGHT, WIDTH, 3), np.uint8), meta=FrameMeta(header))


def rectangle(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[rows, cols] = True
    return mask


def tracking(target_id: str, mask: np.ndarray | None, on: Frame, **extra) -> FrameResult:
    return FrameResult(target_id, f"the {target_id}", on, TargetStatus.TRACKING, "", 0.8, mask, **extra)


def test_3d_point_of_the_interior_point_on_a_known_depth_plane():
    # A 7x9 rectangle (rows 2..8, columns 4..12): its interior point is the centre, pixel (x 8, y 5).
    mask = rectangle(slice(2, 9), slice(4, 13))
    depth = np.full((HEIGHT, WIDTH), 5.0, np.float32)  # the background, farther away
    depth[mask] = 2.0  # the object lies on the plane z = 2 m
    intrinsics = Intrinsics(fx=100.0, fy=120.0, cx=3.0, cy=6.0)
    f = frame()
    out = frame_output(
        f, [tracking("cup", mask, f)], True, FrameDepth(depth, intrinsics), depth_erode_px=3, label_image=False
    )
    target = out.targets[0]
    assert target.bbox == (4, 2, 9, 7) and target.point == (8.0, 5.0)
    # X = (u - cx) z / fx = (8 - 3) * 2 / 100, Y = (v - cy) z / fy = (5 - 6) * 2 / 120, Z = 2.
    assert target.point_3d == pytest.approx((0.1, -1 / 60, 2.0))
    assert out.header == "header-7" and out.live and out.labels is None


def test_no_3d_point_without_depth_intrinsics_or_valid_depth():
    mask = rectangle(slice(2, 9), slice(4, 13))
    f = frame()
    plane = np.full((HEIGHT, WIDTH), 2.0, np.float32)
    intrinsics = Intrinsics(100.0, 100.0, 15.0, 10.0)
    cases = [
        None,
        FrameDepth(plane, None),  # camera info was unusable
        FrameDepth(np.full((HEIGHT, WIDTH), np.nan, np.float32), intrinsics),  # no valid depth on the mask
    ]
    for depth in cases:
        out = frame_output(f, [tracking("cup", mask, f)], True, depth, depth_erode_px=3, label_image=False)
        assert out.targets[0].point_3d is None
    searching = FrameResult("cup", "the cup", f, TargetStatus.SEARCHING, "waiting", 0.0)
    out = frame_output(f, [searching], True, FrameDepth(plane, intrinsics), depth_erode_px=3, label_image=False)
    target = out.targets[0]
    assert (target.mask, target.bbox, target.point, target.point_3d) == (None, None, None, None)
    assert target.status is TargetStatus.SEARCHING and target.reason == "waiting"


def test_label_image_numbers_targets_by_position_later_ones_on_top():
    f = frame()
    first = rectangle(slice(0, 10), slice(0, 10))
    second = rectangle(slice(5, 15), slice(5, 15))
    results = [
        tracking("a", first, f),
        FrameResult("b", "the b", f, TargetStatus.LOST, "lost", 0.1),  # no mask: label 2 is never drawn
        tracking("c", second, f),
    ]
    labels = frame_output(f, results, True, None, depth_erode_px=3, label_image=True).labels
    assert labels.dtype == np.uint8 and labels.shape == (HEIGHT, WIDTH)
    assert labels[2, 2] == 1 and labels[7, 7] == 3 and labels[12, 12] == 3 and labels[18, 25] == 0
    assert set(np.unique(labels)) == {0, 1, 3}
    assert np.count_nonzero(labels == 1) == 100 - 25
    history = frame_output(f, results, False, None, depth_erode_px=3, label_image=True)
    assert history.labels is None and not history.live and len(history.targets) == 3


def test_understanding_keyframe_and_overlay():
    key = frame(3, "header-3")
    f = frame()
    understood = Understanding("bottle opener", "'the thing to open beer' names the tool", 0.75)
    mask = rectangle(slice(2, 9), slice(4, 13))
    results = [
        tracking("opener", mask, f, keyframe_stamp=0.1, understanding=understood, keyframe=key),
        tracking("plain", None, f, keyframe_stamp=0.2, keyframe=Frame(3, 0.2, image=key.image)),
    ]
    out = frame_output(f, results, True, None, depth_erode_px=3, label_image=False)
    opener, plain = out.targets
    assert opener.keyframe_header == "header-3" and opener.understanding == understood
    assert plain.keyframe_header is None and plain.keyframe_stamp == 0.2 and plain.understanding is None
    assert opener.score == 0.8 and isinstance(opener.score, float)
    first, second = out.overlay
    assert (first.target_id, first.status, first.bbox, first.point) == ("opener", "TRACKING", (4, 2, 9, 7), (8.0, 5.0))
    assert (first.target_phrase, first.understanding_confidence, first.instruction) == (
        "bottle opener",
        0.75,
        "the opener",
    )
    assert (second.target_phrase, second.understanding_confidence, second.mask) == ("", None, None)


def report(**overrides):
    stats = EngineStats(frames_processed=40, frames_skipped=2, acquisitions=3, errors=1, timelines=1)
    stats.last_timings = {"segment_s": 0.25, "fps": 3.0}
    stats.last_counts = {"references": 6}
    values = {
        "engine": stats,
        "targets": {},
        "engine_threads": 2,
        # 2 s of a 10 s window; 3 MiB of 4 MiB: the memory bound is the fuller one (0.75).
        "window": WindowStats(frames=60, bytes=3 * 1024 * 1024, duration_s=2.0, evicted_total=0, resets_total=0),
        "window_duration_s": 10.0,
        "window_max_mb": 4.0,
        "ingest": IngestStats(frames_received=64, time_jumps=2, input_rate_hz=29.96, ingest_s_median=0.0012),
        "rejections": {},
        "callback_failures": {},
        "instructions_repeated": 5,
        "instructions_lost": 0,
        "publish_s_median": None,
        **overrides,
    }
    return diagnostics(**values)


def test_diagnostics_counters():
    ok = report()
    assert ok.level is DiagnosticLevel.OK and ok.message == "0 target(s)"
    v = ok.values
    assert (v["input_rate_hz"], v["frames_received"], v["time_jumps_back"]) == ("30.0", "64", "2")
    assert (v["frames_processed"], v["frames_skipped_by_tracker"], v["backend_errors"]) == ("40", "2", "1")
    assert (v["window_frames"], v["window_seconds"], v["window_mb"], v["window_fill"]) == ("60", "2.00", "3.15", "0.75")
    assert (v["latency_segment_ms"], v["fps"], v["last_references"]) == ("250.0", "3.0", "6")
    assert (v["instructions_repeated"], v["timelines_by_resolution"], v["engine_threads"]) == ("5", "1", "2")
    assert v["ingest_ms_median"] == "1.20" and "publish_ms_median" not in v
    assert v["frames_rejected"] == "0" and v["callback_errors"] == "0"

    warn = report(
        rejections={"image": 3, "depth": 1},
        callback_failures={"image:RuntimeError": 2},
        publish_s_median=0.0005,
    )
    assert warn.level is DiagnosticLevel.WARN and warn.message == "4 inputs rejected so far"
    w = warn.values
    assert (w["frames_rejected"], w["rejected_image"], w["rejected_depth"]) == ("4", "3", "1")
    assert (w["callback_errors"], w["callback_errors[image:RuntimeError]"]) == ("2", "2")
    assert w["publish_ms_median"] == "0.50"


def test_diagnostics_per_target_and_an_error_outranks_rejections():
    cup = TargetState("cup", "the red cup", status=TargetStatus.TRACKING, reason="")
    cup.understanding = Understanding("red cup", "colour and object", 0.9)
    arm = TargetState("arm", "the arm", status=TargetStatus.ERROR, reason="CUDA out of memory")
    out = report(targets={"cup": cup, "arm": arm}, rejections={"image": 1})
    assert out.level is DiagnosticLevel.ERROR and out.message == "a target reports a backend error"
    assert out.values["target[cup]"] == "TRACKING"
    assert out.values["target[arm]"] == "ERROR: CUDA out of memory"
    assert out.values["understood[cup]"] == "red cup (0.90): colour and object"
    assert "understood[arm]" not in out.values
