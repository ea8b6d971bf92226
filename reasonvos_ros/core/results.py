"""The live node's complete outputs, built without ROS: per-frame target results and the diagnostics values.

:func:`frame_output` turns the engine's :class:`~.pipeline.FrameResult` list for one frame into everything the
node publishes for it (per target: mask, box, interior point, 3D point, status, what was understood, key frame;
the label image; what the debug overlay draws). :func:`diagnostics` gathers the engine, window, ingest and
rejection counters into the key/value pairs and the level of the node's diagnostic status. The node only
translates these dataclasses into messages.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .engine import EngineStats, TargetState
from .geometry import deproject, robust_depth
from .ingest import FrameDepth, FrameMeta, IngestStats
from .overlay import OverlayTarget
from .pipeline import FrameResult
from .types import Frame, TargetStatus, Understanding
from .window import WindowStats

__all__ = ["DiagnosticLevel", "DiagnosticsReport", "FrameOutput", "TargetOutput", "diagnostics", "frame_output"]


@dataclass(frozen=True)
class TargetOutput:
    """One target's result on one frame, as published (``~/results``, ``~/point/<id>``)."""

    target_id: str
    instruction: str
    status: TargetStatus
    reason: str
    score: float
    mask: np.ndarray | None  # HxW bool; None when the target has no mask on this frame
    bbox: tuple[int, int, int, int] | None  # x, y, width, height of the mask
    point: tuple[float, float] | None  # interior point of the mask (x right, y down)
    point_3d: tuple[float, float, float] | None  # the interior point in the camera optical frame, metres
    understanding: Understanding | None
    # The key frame: its source header when it came through the ingest (the exact stamp, integers untouched),
    # else only its stamp in seconds (None before the first key frame).
    keyframe_header: Any
    keyframe_stamp: float | None


@dataclass(frozen=True)
class FrameOutput:
    """Everything published for one frame's results."""

    frame: Frame
    header: Any  # the source header of the frame (the caller's opaque object), None if it had none
    live: bool  # False: results computed on a past frame (``~/results_history``)
    targets: list[TargetOutput]
    labels: np.ndarray | None  # HxW uint8: 0 background, i + 1 where target i's mask is (live frames only)
    overlay: list[OverlayTarget]  # what the debug image draws


def frame_output(
    frame: Frame,
    results: Sequence[FrameResult],
    live: bool,
    depth: FrameDepth | None,
    *,
    depth_erode_px: int,
    label_image: bool,
) -> FrameOutput:
    """The outputs for ``results`` on ``frame``. ``depth`` (the frame's, if kept) gives 3D points; a label image
    is made for live frames when ``label_image`` is set (a later target overwrites an earlier one's pixels)."""
    labels = np.zeros(frame.image.shape[:2], np.uint8) if live and label_image else None
    targets, overlay = [], []
    for position, result in enumerate(results):
        target = _target_output(result, depth, depth_erode_px)
        targets.append(target)
        if labels is not None and result.mask is not None:
            labels[result.mask] = position + 1
        phrase = target.understanding.target_phrase if target.understanding is not None else ""
        overlay.append(
            OverlayTarget(
                target.target_id,
                target.mask,
                target.bbox,
                target.point,
                target.status.name,
                target.score,
                target.instruction,
                phrase,
                float(target.understanding.confidence) if phrase else None,
            )
        )
    header = frame.meta.header if isinstance(frame.meta, FrameMeta) else None
    return FrameOutput(frame, header, live, targets, labels, overlay)


def _target_output(result: FrameResult, depth: FrameDepth | None, depth_erode_px: int) -> TargetOutput:
    point_3d = None
    if result.mask is not None and depth is not None and depth.intrinsics is not None:
        z = robust_depth(result.mask, depth.depth_m, erode_px=depth_erode_px)
        if z is not None:
            x, y = result.point
            point_3d = deproject(x, y, z, depth.intrinsics)
    key_meta = result.keyframe.meta if result.keyframe is not None else None
    return TargetOutput(
        target_id=result.target_id,
        instruction=result.instruction,
        status=result.status,
        reason=result.reason,
        score=float(result.score),
        mask=result.mask,
        bbox=result.bbox,
        point=result.point,
        point_3d=point_3d,
        understanding=result.understanding,
        keyframe_header=key_meta.header if isinstance(key_meta, FrameMeta) else None,
        keyframe_stamp=result.keyframe_stamp,
    )


class DiagnosticLevel(enum.IntEnum):
    """Values match diagnostic_msgs/DiagnosticStatus."""

    OK = 0
    WARN = 1
    ERROR = 2


@dataclass(frozen=True)
class DiagnosticsReport:
    level: DiagnosticLevel
    message: str
    values: dict[str, str]  # in the order they are published


def diagnostics(
    *,
    engine: EngineStats,
    targets: Mapping[str, TargetState],
    engine_threads: int,
    window: WindowStats,
    window_duration_s: float,
    window_max_mb: float,
    ingest: IngestStats,
    rejections: Mapping[str, int],
    callback_failures: Mapping[str, int],
    instructions_repeated: int,
    instructions_lost: int,
    publish_s_median: float | None,
) -> DiagnosticsReport:
    """The diagnostic status of the node: counters of every stage, per-target state and what was understood.
    ``rejections`` / ``callback_failures`` are the counts per category / kind; ``window_max_mb`` is in MiB."""
    rejected = sum(rejections.values())
    fill = max(window.duration_s / window_duration_s, window.bytes / (window_max_mb * 1024 * 1024))
    values = {
        "input_rate_hz": f"{ingest.input_rate_hz:.1f}",
        "frames_received": str(ingest.frames_received),
        "frames_rejected": str(rejected),
        "time_jumps_back": str(ingest.time_jumps),
        "frames_skipped_by_tracker": str(engine.frames_skipped),
        "frames_processed": str(engine.frames_processed),
        "window_frames": str(window.frames),
        "window_seconds": f"{window.duration_s:.2f}",
        "window_mb": f"{window.bytes / 1e6:.2f}",
        "window_fill": f"{fill:.2f}",
        "tracker_rate_hz": f"{engine.track_rate_hz:.1f}",
        "track_step_ms": f"{engine.track_step_s * 1e3:.1f}",
        "acquisitions": str(engine.acquisitions),
        "acquisitions_cancelled": str(engine.acquisitions_cancelled),
        "lost_events": str(engine.lost_events),
        "redetections": str(engine.redetections),
        "track_corrections": str(engine.track_corrections),
        "backend_errors": str(engine.errors),
        "instructions_repeated": str(instructions_repeated),
        "instructions_lost": str(instructions_lost),
        "timelines_by_resolution": str(engine.timelines),
        "callback_errors": str(sum(callback_failures.values())),
        "engine_threads": str(engine_threads),
    }
    for name, seconds in engine.last_timings.items():  # names ending in _s are durations, shown in ms
        if name.endswith("_s"):
            values[f"latency_{name[:-2]}_ms"] = f"{seconds * 1e3:.1f}"
        else:
            values[name] = f"{seconds:.1f}"
    for name, count in engine.last_counts.items():
        values[f"last_{name}"] = str(count)
    for category, count in sorted(rejections.items()):
        values[f"rejected_{category}"] = str(count)
    for kind, count in sorted(callback_failures.items()):
        values[f"callback_errors[{kind}]"] = str(count)
    if ingest.ingest_s_median is not None:
        values["ingest_ms_median"] = f"{ingest.ingest_s_median * 1e3:.2f}"
    if publish_s_median is not None:
        values["publish_ms_median"] = f"{publish_s_median * 1e3:.2f}"
    for target_id, state in sorted(targets.items()):
        values[f"target[{target_id}]"] = f"{state.status.name}: {state.reason}" if state.reason else state.status.name
        if state.understanding is not None:
            understood = state.understanding
            values[f"understood[{target_id}]"] = (
                f"{understood.target_phrase} ({understood.confidence:.2f}): {understood.explanation}"
            )
    level, message = DiagnosticLevel.OK, f"{len(targets)} target(s)"
    if any(state.status is TargetStatus.ERROR for state in targets.values()):
        level, message = DiagnosticLevel.ERROR, "a target reports a backend error"
    elif rejected:
        level, message = DiagnosticLevel.WARN, f"{rejected} inputs rejected so far"
    return DiagnosticsReport(level, message, values)
