"""Measured quality of the lite CPU pipeline on composited clips with exact ground truth (prints J, F, J&F).

Clips (reasonvos_ros.data.composite): a real cut-out (GrabCut from a real photo) moved over real vtest.avi
frames along a known path; clip "occluded" passes behind an occluding strip for part of the clip, clip "exit"
leaves the view at the end. The pipeline is the offline one (reasonvos_ros.core.offline.segment_clip: key frame by
the detector sampler, GrabCut mask, backward + forward OpenCV tracking over every frame).

Run: source tools/env.sh && python benchmarks/quality_lite.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run against the checkout

# name -> (instruction, make_composite_clip arguments)
CLIPS = {
    "occluded": ("the dog", {"n_frames": 30, "cutout": "dog", "path": ((0.2, 0.6), (0.8, 0.6)), "occluder_x": 0.5}),
    "exit": ("the dog", {"n_frames": 30, "cutout": "dog", "path": ((0.3, 0.6), (1.3, 0.6)), "occluder_x": None}),
}


def clip_scores(name: str) -> dict[str, float]:
    from reasonvos_ros.core.offline import segment_clip
    from reasonvos_ros.data.composite import make_composite_clip
    from reasonvos_ros.evaluation.metrics import boundary_f_measure, region_similarity

    instruction, kwargs = CLIPS[name]
    clip = make_composite_clip(**kwargs)
    start = time.perf_counter()
    result = segment_clip(clip.frames, instruction)
    elapsed = time.perf_counter() - start
    j = float(np.mean([region_similarity(gt, pred) for gt, pred in zip(clip.masks, result.masks)]))
    f = float(np.mean([boundary_f_measure(gt, pred) for gt, pred in zip(clip.masks, result.masks)]))
    return {"J": j, "F": f, "J&F": (j + f) / 2, "key": result.key_index, "seconds": elapsed, "frames": len(clip)}


def main() -> int:
    print(f"{'clip':10} {'frames':>6} {'key':>4} {'J':>6} {'F':>6} {'J&F':>6} {'time s':>7}")
    for name in CLIPS:
        s = clip_scores(name)
        print(
            f"{name:10} {s['frames']:6d} {s['key']:4d} {s['J']:6.3f} {s['F']:6.3f} {s['J&F']:6.3f} {s['seconds']:7.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
