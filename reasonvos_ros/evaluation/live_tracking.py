"""Replay of the live tracking policy on a clip with ground truth, frame by frame and deterministic (no threads).

``replay_live`` does what the live engine does for one target, but processes every frame in order and takes no
wall-clock time into account (an acquisition is instantaneous here; in the node frames arrive meanwhile): the
instruction is resolved on the frames seen so far (``Pipeline.acquire`` with the history deferred and not run),
the forward session is stepped on every following frame, ``TrackGuard`` decides TRACKING or LOST with the
independent evidence gathered every ``redetect_interval_s`` (``Pipeline.verify``; a correction re-seeds the
session), and a lost or not-present target is re-acquired after ``reacquire_frames`` / ``retry_frames`` frames.

``score_live`` compares the result with the ground truth: J&F over the frames after the instruction (a frame
not reported as TRACKING counts as an empty mask), the fraction of frames reported TRACKING with IoU > 0.5,
the TRACKING frames whose mask has IoU < 0.1 with the truth (confidently wrong), and the score's calibration.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.pipeline import Pipeline, TrackGuard, redetect_due, until_handover
from ..core.types import Frame, TargetStatus, TrackedMask
from .metrics import boundary_f_measure


@dataclass
class LiveFrame:
    """The reported result on one frame: status, mask (TRACKING only), the published score and the tracker's
    own confidence (what the node published as the score before evidence was used)."""

    status: TargetStatus
    mask: np.ndarray | None
    score: float
    tracker_confidence: float
    reason: str = ""


def replay_live(
    pipeline: Pipeline,
    frames: Sequence[Frame],
    instruction: str,
    start: int,
    window_frames: int = 100,
    reacquire_frames: int = 5,
    retry_frames: int = 10,
    target_id: str = "t",
) -> list[LiveFrame]:
    """Results for ``frames[start:]``: the instruction arrives when ``frames[start]`` is the newest frame."""
    if not 0 <= start < len(frames):
        raise ValueError(f"start {start} outside a clip of {len(frames)} frames")
    out: list[LiveFrame] = []
    session, guard, wait, last_redetect = None, None, 0, None
    status, reason = TargetStatus.SEARCHING, ""
    try:
        for position in range(start, len(frames)):
            frame = frames[position]
            if session is None and wait <= 0:
                window = list(frames[max(0, position - window_frames + 1) : position + 1])
                acquisition = until_handover(pipeline.acquire(target_id, instruction, window))
                if acquisition.session is None:
                    status, reason, wait = TargetStatus.NOT_PRESENT, acquisition.segmentation.reason, retry_frames
                    out.append(LiveFrame(status, None, 0.0, 0.0, reason))
                    continue
                session = acquisition.session
                guard = TrackGuard(
                    pipeline.config, acquisition.seed_area, acquisition.segmentation, acquisition.key_frame.stamp
                )
                mask = acquisition.last_mask
                status, reason = TargetStatus.TRACKING, ""
                score = float(np.sqrt(max(acquisition.segmentation.score, 0.0) * guard.support))
                shown = mask.mask if mask is not None and mask.area > 0 else None
                out.append(LiveFrame(status, shown, score, acquisition.segmentation.score))
                continue
            if session is None:
                wait -= 1
                out.append(LiveFrame(status, None, 0.0, 0.0, reason))
                continue
            tracked = pipeline.step_session(session, frame, target_id)
            due = redetect_due(pipeline.config, frame.stamp, last_redetect) and tracked is not None and tracked.area
            if due:
                last_redetect = frame.stamp
            evidence = pipeline.check_track(frame, tracked, guard, bool(due))
            if evidence is not None and evidence.correction is not None:
                session.close()
                session = pipeline.reseed(target_id, frame, evidence.correction)
                tracked = TrackedMask(evidence.correction, tracked.confidence if tracked is not None else 0.0)
            confidence = tracked.confidence if tracked is not None else 0.0
            verdict = guard.update(tracked, evidence, frame.stamp)
            if verdict.reason is not None:
                if not verdict.hold:
                    session.close()
                    session, status, reason, wait = None, TargetStatus.LOST, verdict.reason, reacquire_frames
                out.append(LiveFrame(TargetStatus.LOST, None, 0.0, confidence, verdict.reason))
                continue
            shown = tracked.mask if tracked is not None and tracked.area > 0 else None
            out.append(LiveFrame(TargetStatus.TRACKING, shown, verdict.score, confidence))
    finally:
        if session is not None:
            session.close()
    return out


def _iou(prediction: np.ndarray | None, truth: np.ndarray) -> float:
    predicted = prediction if prediction is not None else np.zeros_like(truth)
    union = np.count_nonzero(predicted | truth)
    return 1.0 if union == 0 else np.count_nonzero(predicted & truth) / union


def score_live(results: Sequence[LiveFrame], truths: Sequence[np.ndarray], bins: int = 5) -> dict:
    """Metrics of ``results`` against ``truths`` (the ground truth of the same frames, bool masks)."""
    if len(results) != len(truths):
        raise ValueError(f"{len(results)} results for {len(truths)} ground-truth masks")
    ious, boundary, tracking, good, wrong = [], [], 0, 0, 0
    pairs = []  # (score, tracker confidence, IoU) of TRACKING frames with a mask
    for result, truth in zip(results, truths):
        shown = result.mask if result.status == TargetStatus.TRACKING else None
        iou = _iou(shown, truth)
        ious.append(iou)
        boundary.append(boundary_f_measure(truth, shown if shown is not None else np.zeros_like(truth)))
        if result.status == TargetStatus.TRACKING and shown is not None:
            tracking += 1
            good += iou > 0.5
            wrong += iou < 0.1
            pairs.append((result.score, result.tracker_confidence, iou))
    j, f = float(np.mean(ious)), float(np.mean(boundary))
    edges = np.linspace(0.0, 1.0, bins + 1)

    def calibration(column: int) -> list[tuple[float, float, int, float]]:
        rows = []
        for low, high in itertools.pairwise(edges):
            chosen = [p[2] for p in pairs if low <= p[column] < high or (high == 1.0 and p[column] == 1.0)]
            if chosen:
                rows.append((float(low), float(high), len(chosen), float(np.mean(chosen))))
        return rows

    scores = np.array([p[0] for p in pairs]) if pairs else np.zeros(0)
    truth_iou = np.array([p[2] for p in pairs]) if pairs else np.zeros(0)
    correlation = float(np.corrcoef(scores, truth_iou)[0, 1]) if len(pairs) > 2 and scores.std() > 0 else float("nan")
    return {
        "frames": len(results),
        "J": j,
        "F": f,
        "J&F": (j + f) / 2,
        "tracking_frames": tracking,
        "tracking_iou_over_0.5": good / len(results) if results else 0.0,
        "tracking_iou_under_0.1": wrong,
        "calibration_score": calibration(0),
        "calibration_tracker_confidence": calibration(1),
        "score_iou_correlation": correlation,
    }
