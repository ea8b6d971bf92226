"""Offline use of the pipeline: a whole clip and one instruction in, one mask per frame out.

Used by ``reasonvos segment`` / ``reasonvos eval`` and by quality measurements. Unlike the live engine, every
frame is visited (no time budgets) and the key frame may lie anywhere in the clip.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import PipelineConfig
from .pipeline import EVERY_FRAME, Acquisition, DriftMonitor, Pipeline, Propagated
from .registry import build_backend
from .types import Frame, TargetStatus

DEFAULT_BACKENDS: dict[str, dict[str, Any]] = {
    "sampler": {"name": "detector", "options": {}},
    "segmenter": {"name": "lite", "options": {}},
    "tracker": {"name": "opencv", "options": {}},
}
# Offline results must not depend on the machine's load: a backend option that puts a wall-clock budget on its
# work is off unless the caller sets it. The detector sampler's key-frame scan: with its live default of 0.6 s a
# loaded machine scanned fewer frames and chose another key frame.
UNBUDGETED_OPTIONS: dict[tuple[str, str], dict[str, Any]] = {("sampler", "detector"): {"max_scan_s": 0.0}}


@dataclass
class ClipSegmentation:
    masks: list[np.ndarray]  # one bool HxW mask per frame (all False where absent)
    key_index: int
    status: TargetStatus
    reason: str = ""
    score: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def resolve_backends(backends: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """What runs offline for ``{"sampler": {"name", "options"}, "segmenter": ..., "tracker": ...}``: roles left out
    use ``DEFAULT_BACKENDS`` (the lite CPU backends), and ``UNBUDGETED_OPTIONS`` apply unless set."""
    chosen = {role: {"name": spec["name"], "options": dict(spec["options"])} for role, spec in DEFAULT_BACKENDS.items()}
    for role, spec in (backends or {}).items():
        if role not in chosen:
            raise ValueError(f"unknown backend role {role!r}; expected sampler, segmenter, tracker")
        chosen[role] = {"name": spec.get("name", chosen[role]["name"]), "options": dict(spec.get("options", {}))}
    for role, spec in chosen.items():
        spec["options"] = {**UNBUDGETED_OPTIONS.get((role, spec["name"]), {}), **spec["options"]}
    return chosen


def build_pipeline(backends: Mapping[str, Any] | None = None, config: PipelineConfig | None = None) -> Pipeline:
    """Build the pipeline of ``resolve_backends(backends)``."""
    chosen = resolve_backends(backends)
    built = {role: build_backend(role, spec["name"], spec["options"]) for role, spec in chosen.items()}
    return Pipeline(built["sampler"], built["segmenter"], built["tracker"], config)


def segment_clip(
    frames_rgb: Sequence[np.ndarray],
    instruction: str,
    backends: Mapping[str, Any] | None = None,
    stamps: Sequence[float] | None = None,
    pipeline: Pipeline | None = None,
    fps: float = 30.0,
) -> ClipSegmentation:
    """Segment ``instruction``'s object on every frame of a clip (RGB uint8 frames, oldest first)."""
    if not frames_rgb:
        raise ValueError("segment_clip needs at least one frame")
    shape = frames_rgb[0].shape
    for i, image in enumerate(frames_rgb):
        if image.shape != shape or image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"frame {i} is {image.shape} {image.dtype}; expected {shape} uint8 like frame 0")
    if pipeline is None:
        pipeline = build_pipeline(backends)
    stamps = list(stamps) if stamps is not None else [i / fps for i in range(len(frames_rgb))]
    frames = [Frame(i, stamps[i], image=image) for i, image in enumerate(frames_rgb)]
    masks = [np.zeros(shape[:2], bool) for _ in frames]
    # Like the live node, stop trusting a pass once drift detection declares the object lost (e.g. it left the
    # view and the tracker clings to the border): the rest of that pass stays empty.
    monitors: dict[str, DriftMonitor] = {}
    lost_passes: set[str] = set()
    acquisition = None
    start = time.perf_counter()
    # Offline: every frame is visited in both passes (no time budgets).
    for event in pipeline.acquire("clip", instruction, frames, budgets=EVERY_FRAME):
        if isinstance(event, Acquisition):
            acquisition = event
            if event.session is not None:
                event.session.close()  # no live tracking follows; free it before the backward pass
        elif isinstance(event, Propagated):
            tracked = event.tracked
            if event.pass_name == "key":
                for name in ("backward", "catchup"):
                    monitors[name] = DriftMonitor(pipeline.config, tracked.area if tracked is not None else 0)
            elif event.pass_name in lost_passes or monitors[event.pass_name].update(tracked) is not None:
                lost_passes.add(event.pass_name)
                continue
            if tracked is not None:
                masks[event.frame.index] = tracked.mask
    timings = dict(acquisition.timings)
    timings["total_s"] = time.perf_counter() - start
    seg = acquisition.segmentation
    status = TargetStatus.TRACKING if seg.present else TargetStatus.NOT_PRESENT
    return ClipSegmentation(masks, acquisition.key_frame.index, status, seg.reason, float(seg.score), timings)
