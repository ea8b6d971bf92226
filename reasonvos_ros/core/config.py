"""The pipeline's tunables (ROS-free): every field is also a node parameter of the same name.

The fields' order, defaults, ranges and descriptions are what the node declares and what config/perception.yaml
and the README list (``ros.parameters`` derives its pipeline-policy entries from them).
"""

from __future__ import annotations

from dataclasses import dataclass

from .options import OptionSet, option
from .references import STRATEGIES


@dataclass(frozen=True)
class PipelineConfig(OptionSet):
    """Tunables of the orchestration (``core.pipeline``); an instance is checked when it is built."""

    reference_strategy: str = option(
        "global_local", "reference frames for the segmenter: " + ", ".join(STRATEGIES), choices=STRATEGIES
    )
    num_references: int = option(11, "number of reference frames (VISA release: 11)", low=0, high=64)
    backward_pass: bool = option(
        True,
        "propagate a new key-frame mask backward over the stored past (results on '~/results_history'); it runs "
        "after live tracking has resumed; after a loss only the frames since the target's last live mask are "
        "revisited; false turns it off",
    )
    # Wall-clock budgets of the two propagation passes: a frame stride is chosen so each pass fits its budget at
    # the measured tracker speed (0 = no budget: visit every frame, as offline evaluation does).
    backward_budget_s: float = option(
        2.0,
        "time budget of the backward pass over the stored past; frames are skipped to fit (0 = visit all; "
        "'backward_pass: false' turns the pass off)",
        low=0.0,
        high=600.0,
    )
    catchup_budget_s: float = option(
        1.0,
        "time budget of the forward catch-up from the key frame to the newest frame; frames are skipped to fit "
        "(0 = visit all)",
        low=0.0,
        high=600.0,
    )
    history_cpu_share: float = option(
        0.5,
        "while a target is tracked live, the backward pass pauses after each step so it uses at most this share "
        "of one core (its time budget still holds: it skips more frames); live tracking gets the rest (1 = no "
        "pause)",
        low=0.05,
        high=1.0,
    )
    # Lost/drift detection (see pipeline.DriftMonitor).
    lost_min_confidence: float = option(
        0.35, "tracker confidence under which a frame counts as suspicious", low=0.0, high=1.0
    )
    lost_min_area_ratio: float = option(
        0.15, "mask area (relative to the key-frame mask) under which a frame counts as suspicious", low=0.0, high=1.0
    )
    lost_max_area_ratio: float = option(
        6.0, "mask area (relative to the key-frame mask) over which a frame counts as suspicious", low=1.0, high=1000.0
    )
    lost_border_area_ratio: float = option(
        0.35,
        "a mask touching the image border and smaller than this (relative to the key-frame mask) counts as "
        "suspicious: the object is leaving the view",
        low=0.0,
        high=1.0,
    )
    # Independent evidence during live tracking (KeyframeSegmenter.verify), on the same frame for every target.
    redetect_interval_s: float = option(
        0.4,
        "seconds of camera time between independent checks of live tracks (lite: the detector re-run and "
        "associated with each mask by box overlap and colour; a contradicted mask is LOST, a drifted one "
        "re-seeded); 0 = never",
        low=0.0,
        high=60.0,
    )
    lost_patience: int = option(3, "consecutive suspicious frames that declare a target lost", low=1, high=1000)
    min_mask_area_px: int = option(16, "key-frame masks smaller than this count as not present", low=0, high=10_000_000)
    # Re-acquisition pacing.
    reacquire_interval_s: float = option(
        1.0, "delay before re-running the key-frame segmentation of a lost target", low=0.0, high=3600.0
    )
    not_present_retry_s: float = option(
        3.0, "delay between searches for a target that was not present", low=0.0, high=3600.0
    )
