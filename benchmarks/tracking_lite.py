"""Live tracking quality of the lite backends on composited clips with exact ground truth, before/after evidence.

Clips (reasonvos_ros.data.composite: real cut-outs pasted over real vtest.avi frames along known paths):
  person_walk       a person cut-out walking across tree.avi (no other people: "the person" is unambiguous)
  person_cross      a second person (same cut-out, larger) enters and crosses in front of the target
  dog_cross         the same with two dogs
  dog_leave_return  the dog leaves the view on the right and comes back
  dog_occluded      the dog passes behind a pillar
The live policy is replayed frame by frame (reasonvos_ros.evaluation.live_tracking.replay_live): "before" is
drift detection on the tracker's own evidence only (redetect_interval_s = 0, the score is the tracker's
confidence, as the node published it before); "after" adds the detector re-check every 0.4 s of camera time
(association by box IoU + colour, contradicted masks LOST, drifted tracks re-seeded) and the evidence-based score.
Prints J&F, the fraction of frames TRACKING with IoU > 0.5, the TRACKING frames with IoU < 0.1 (confidently
wrong) and the calibration of the score (mean true IoU per score bin).

Run: source tools/env.sh && python benchmarks/tracking_lite.py [--clips person_cross dog_cross]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run against the checkout

FPS = 10.0
CLIPS = {
    "person_walk": ("the person", {"n_frames": 60, "cutout": "person", "path": ((0.12, 0.55), (0.88, 0.6)),
                                   "scale": (0.6, 0.5), "occluder_x": None, "background": "tree.avi"}),
    "person_cross": ("the person", (
        {"n_frames": 60, "cutout": "person", "path": ((0.2, 0.55), (0.8, 0.55)), "scale": 0.55, "occluder_x": None,
         "background": "tree.avi"},
        {"cutout": "person", "path": ((1.25, 0.6), (-0.25, 0.6)), "scale": 0.6},
    )),
    "dog_cross": ("the dog", (
        {"n_frames": 60, "cutout": "dog", "path": ((0.2, 0.6), (0.8, 0.6)), "scale": 0.4, "occluder_x": None},
        {"cutout": "dog", "path": ((1.3, 0.65), (-0.3, 0.65)), "scale": 0.45},
    )),
    "dog_leave_return": ("the dog", {"n_frames": 60, "cutout": "dog", "path": ((0.3, 0.6), (1.45, 0.6), (0.5, 0.6)),
                                     "scale": 0.45, "occluder_x": None}),
    "dog_occluded": ("the dog", {"n_frames": 40, "cutout": "dog", "path": ((0.2, 0.6), (0.8, 0.6)), "occluder_x": 0.5}),
}  # fmt: skip
START = 3  # the instruction arrives when this frame is the newest


def make_clip(name: str):
    """(instruction, frames as pipeline Frames, ground-truth masks of the target)."""
    from reasonvos_ros.core.types import Frame
    from reasonvos_ros.data.composite import make_composite_clip, make_two_object_clip

    instruction, spec = CLIPS[name]
    if isinstance(spec, tuple):
        frames, truth, _, _, _ = make_two_object_clip(*spec)
    else:
        clip = make_composite_clip(**spec)
        frames, truth = clip.frames, clip.masks
    return instruction, [Frame(i, i / FPS, image=image) for i, image in enumerate(frames)], truth


def run(name: str, redetect_interval_s: float, backends) -> dict:
    from reasonvos_ros.core.pipeline import Pipeline, PipelineConfig
    from reasonvos_ros.evaluation.live_tracking import replay_live, score_live

    instruction, frames, truth = make_clip(name)
    sampler, segmenter, tracker = backends
    segmenter.release()
    config = replace(PipelineConfig(), redetect_interval_s=redetect_interval_s)
    pipeline = Pipeline(sampler, segmenter, tracker, config)
    start = time.perf_counter()
    results = replay_live(pipeline, frames, instruction, START)
    elapsed = time.perf_counter() - start
    if redetect_interval_s <= 0:  # what the node published as the score before: the tracker's confidence
        for result in results:
            result.score = result.tracker_confidence
    metrics = score_live(results, truth[START:])
    metrics["seconds"] = elapsed
    metrics["statuses"] = {s.name: sum(r.status == s for r in results) for s in {r.status for r in results}}
    return metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="*", default=list(CLIPS))
    parser.add_argument("--interval", type=float, default=0.4, help="redetect_interval_s of the 'after' runs")
    parser.add_argument(
        "--tracker-options", default="{}", help='JSON options of the opencv tracker, e.g. \'{"box_tracker": "kcf"}\''
    )
    args = parser.parse_args()
    import json

    from reasonvos_ros.core.registry import build_backend

    backends = (
        build_backend("sampler", "detector"),
        build_backend("segmenter", "lite"),
        build_backend("tracker", "opencv", json.loads(args.tracker_options)),
    )
    pooled: dict[str, list] = {"before": [], "after": []}
    print(f"{'clip':17} {'mode':6} {'J&F':>6} {'TRACK&IoU>.5':>12} {'TRACK&IoU<.1':>12} {'corr':>5}  statuses")
    for name in args.clips:
        for mode, interval in (("before", 0.0), ("after", args.interval)):
            m = run(name, interval, backends)
            pooled[mode].append(m)
            print(
                f"{name:17} {mode:6} {m['J&F']:6.3f} {m['tracking_iou_over_0.5']:12.2f} "
                f"{m['tracking_iou_under_0.1']:6d}/{m['tracking_frames']:<5d} {m['score_iou_correlation']:5.2f}  "
                f"{m['statuses']}  ({m['seconds']:.1f} s)"
            )
    for mode, rows in pooled.items():
        frames = sum(r["frames"] for r in rows)
        wrong = sum(r["tracking_iou_under_0.1"] for r in rows)
        tracking = sum(r["tracking_frames"] for r in rows)
        jf = sum(r["J&F"] * r["frames"] for r in rows) / frames
        good = sum(r["tracking_iou_over_0.5"] * r["frames"] for r in rows) / frames
        print(
            f"ALL {mode:6}: J&F {jf:.3f}, TRACKING with IoU>0.5 {good:.2f} of frames, TRACKING with IoU<0.1 "
            f"{wrong} of {tracking} TRACKING frames ({frames} frames)"
        )
        bins: dict[tuple, list] = {}
        key = "calibration_score"
        for r in rows:
            for low, high, count, mean in r[key]:
                bins.setdefault((low, high), []).append((count, mean))
        table = ", ".join(
            f"[{low:.1f},{high:.1f}): {sum(c for c, _ in v)} frames IoU {sum(c * m for c, m in v) / sum(c for c, _ in v):.2f}"
            for (low, high), v in sorted(bins.items())
        )
        print(f"  score calibration ({'tracker confidence' if mode == 'before' else 'evidence score'}): {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
