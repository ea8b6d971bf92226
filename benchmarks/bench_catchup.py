"""Catch-up after a key frame in the past: how much camera time the forward pass covers per second.

The key frame is the OLDEST frame of a 10 s window of real vtest.avi frames at 30 fps (the worst case: the whole
window must be replayed). With ``catchup_budget_s`` = 0 every frame is tracked; with a budget the pipeline picks a
stride so the pass fits the budget at the measured tracker speed. A pass reaches live rate when it covers camera
time faster than the camera produces it (covered fps > 30).

Run: source tools/env.sh && python benchmarks/bench_catchup.py [--frames 300] [--side 384]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run against the checkout


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--side", type=int, default=384)
    args = parser.parse_args()
    from reasonvos_ros.core.pipeline import Pipeline, PipelineConfig, complete
    from reasonvos_ros.core.registry import build_backend
    from reasonvos_ros.core.types import Frame
    from reasonvos_ros.data.media import media_path

    cap = cv2.VideoCapture(str(media_path("vtest.avi")))
    frames = []
    while len(frames) < args.frames:
        ok, bgr = cap.read()
        if not ok:
            break
        h, w = bgr.shape[:2]
        scale = args.side / max(h, w)
        rgb = cv2.cvtColor(cv2.resize(bgr, (round(w * scale), round(h * scale))), cv2.COLOR_BGR2RGB)
        frames.append(Frame(len(frames), len(frames) / 30.0, image=rgb))
    sampler = build_backend("sampler", "uniform", {"position": 0.0})
    segmenter = build_backend("segmenter", "lite")
    tracker = build_backend("tracker", "opencv")
    print(
        f"{len(frames)} frames ({len(frames) / 30:.1f} s at 30 fps), {frames[0].image.shape[1]}x"
        f"{frames[0].image.shape[0]}, key frame = oldest, tracker = opencv"
    )
    print(f"{'budget s':>8} {'stride':>6} {'tracked':>7} {'pass s':>7} {'covered fps':>11} {'live?':>5}")
    for budget in (0.0, 2.0, 1.0, 0.5):
        pipeline = Pipeline(sampler, segmenter, tracker, PipelineConfig(catchup_budget_s=budget, backward_budget_s=0))
        pipeline.step_timer.add(0.03)  # a measured value carries over in the node; start from a typical one
        start = time.perf_counter()
        acquisition = complete(pipeline.acquire("t", "the person walking", frames))
        if acquisition.session is None:
            print(f"segmenter found nothing: {acquisition.segmentation.reason}")
            return 1
        acquisition.session.close()
        c, t = acquisition.counts, acquisition.timings
        fps = t.get("catchup_covered_fps", 0.0)
        print(
            f"{budget:8.1f} {c['catchup_covered'] // max(1, c['catchup_frames']):6d} {c['catchup_frames']:7d} {t['catchup_s']:7.2f} {fps:11.1f} "
            f"{'yes' if fps > 30 else 'no':>5}   (whole acquisition {time.perf_counter() - start:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
