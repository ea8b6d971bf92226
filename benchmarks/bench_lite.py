"""Speed and accuracy of the lite CPU backends on composited clips with exact ground truth.

Prints two tables: per-call timings (median over repeats) of the detector, the instruction matcher, GrabCut
and one tracker step, and the accuracy (mask IoU against the composite's ground truth) of the segmenter and
of the tracker forward/backward through occlusions, exits, scale changes and two objects.

    python benchmarks/bench_lite.py [--threads 1] [--repeats 15]

Timings depend on the machine's load (the load average is printed with them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reasonvos_ros.backends.lite.detector import shared_detector
from reasonvos_ros.backends.lite.segmenter import DetectorGrabCutSegmenter, grabcut_from_box
from reasonvos_ros.backends.lite.text_to_category import TextToCategory
from reasonvos_ros.backends.lite.tracker import OpenCVTracker
from reasonvos_ros.core.types import Frame
from reasonvos_ros.data.composite import make_composite_clip, make_two_object_clip, mask_iou


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (first network run, allocations)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def tracker_step_ms(clip, repeats: int, **options) -> float:
    """Median time of one step of one object, frames in order (the seed step excluded)."""
    frames = clip.as_frames()
    session = OpenCVTracker(**options).new_session()
    session.step(frames[0], {"obj": clip.masks[0]})
    times = []
    for frame in frames[1 : repeats + 1]:
        start = time.perf_counter()
        session.step(frame)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def track_ious(frames, masks, order, **options) -> np.ndarray:
    session = OpenCVTracker(**options).new_session()
    ious = []
    for step, position in enumerate(order):
        out = session.step(frames[position], {"obj": masks[position]} if step == 0 else None)
        if step:
            ious.append(mask_iou(out["obj"].mask, masks[position]))
    return np.array(ious)


def timing_table(repeats: int) -> list[tuple[str, float]]:
    rows = []
    small = make_composite_clip(n_frames=repeats + 2, size=(320, 240), occluder_x=None)
    large = make_composite_clip(n_frames=repeats + 2, size=(640, 480), occluder_x=None)
    detector = shared_detector()
    rows.append(("SSD detector, 320x240 frame", median_ms(lambda: detector.detect(small.frames[0]), repeats)))
    rows.append(("SSD detector, 640x480 frame", median_ms(lambda: detector.detect(large.frames[0]), repeats)))
    matcher = TextToCategory()
    texts = iter([f"the animal that barks {i}" for i in range(repeats + 1)])  # defeat the per-text cache
    rows.append(("instruction -> category (MiniLM)", median_ms(lambda: matcher.match(next(texts)), repeats)))
    for clip, label in ((small, "320x240"), (large, "640x480")):
        box = detector.detect(clip.frames[0]).best("dog")[0]
        rows.append(
            (
                f"GrabCut from box (default, 192 px crop), {label}",
                median_ms(lambda c=clip, b=box: grabcut_from_box(c.frames[0], b), repeats),
            )
        )
        rows.append(
            (
                f"GrabCut from box at full crop size, {label}",
                median_ms(
                    lambda c=clip, b=box: grabcut_from_box(c.frames[0], b, max_side=10_000), max(3, repeats // 3)
                ),
            )
        )
    segmenter = DetectorGrabCutSegmenter()
    frames = small.as_frames()
    segmenter.detector.detect_frame(frames[0])
    rows.append(
        (
            "lite segmenter, detections cached, 320x240",
            median_ms(lambda: segmenter.segment(frames, 0, [], "the dog"), repeats),
        )
    )
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in small.frames[:2]]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    rows.append(
        ("DIS flow (fast), 320x240, one direction", median_ms(lambda: dis.calc(gray[1], gray[0], None), repeats))
    )
    for box_tracker in ("csrt", "kcf", "none"):
        for clip, label in ((small, "320x240"), (large, "640x480")):
            rows.append(
                (
                    f"tracker step, 1 object, box_tracker={box_tracker}, {label}",
                    tracker_step_ms(clip, repeats, box_tracker=box_tracker),
                )
            )
    return rows


def accuracy_table() -> list[tuple[str, str]]:
    rows = []
    clip = make_composite_clip(n_frames=30, path=((0.15, 0.6), (0.85, 0.6)))
    segmenter = DetectorGrabCutSegmenter()
    frames = clip.as_frames()
    ious = []
    for position in range(len(clip)):
        if clip.occluded[position] or not clip.masks[position].any():
            continue
        seg = segmenter.segment(frames, position, [], "the dog")
        ious.append(mask_iou(seg.mask, clip.masks[position]) if seg.present else 0.0)
    rows.append(
        (
            "segmenter IoU, unoccluded frames of the 30-frame clip",
            f"mean {np.mean(ious):.3f}  min {np.min(ious):.3f}  ({len(ious)} frames)",
        )
    )
    found = [segmenter.segment(frames, p, [], "the dog").present for p in range(len(clip)) if clip.occluded[p]]
    rows.append(("segmenter finds the dog while the pillar hides part of it", f"{sum(found)}/{len(found)} frames"))

    scenarios = {
        "pillar occlusion, 30 frames": (clip, {}),
        "pillar occlusion, 40 frames": (make_composite_clip(n_frames=40, path=((0.15, 0.6), (0.85, 0.6))), {}),
        "wide occluder (full occlusion)": (
            make_composite_clip(n_frames=40, path=((0.15, 0.6), (0.85, 0.6)), occluder_width=0.25),
            {},
        ),
        "scale 0.35->0.6, no occluder": (
            make_composite_clip(
                n_frames=40, path=((0.3, 0.55), (0.6, 0.65)), scale=(0.35, 0.6), occluder_x=None, background_start=200
            ),
            {},
        ),
        "fast (12 px/frame) + pillar": (make_composite_clip(n_frames=20, path=((0.15, 0.6), (0.85, 0.5))), {}),
        "person cut-out + pillar": (
            make_composite_clip(
                n_frames=40, cutout="person", path=((0.2, 0.55), (0.8, 0.6)), scale=0.6, background_start=100
            ),
            {},
        ),
    }
    for name, (scenario, options) in scenarios.items():
        frames = scenario.as_frames()
        n = len(scenario)
        for label, order in (("fwd", list(range(n))), ("bwd", list(range(n))[::-1])):
            for box_tracker in ("csrt", "kcf"):
                ious = track_ious(frames, scenario.masks, order, box_tracker=box_tracker, **options)
                rows.append(
                    (f"tracker {label} [{box_tracker}] {name}", f"mean IoU {ious.mean():.3f}  min {ious.min():.3f}")
                )
        ious = track_ious(frames, scenario.masks, list(range(0, n, 3)))
        rows.append((f"tracker fwd stride 3 [csrt] {name}", f"mean IoU {ious.mean():.3f}  min {ious.min():.3f}"))

    two_frames, dog, person, _, _ = make_two_object_clip(
        {"n_frames": 16, "path": ((0.2, 0.62), (0.5, 0.62)), "occluder_x": None},
        {"cutout": "person", "path": ((0.8, 0.5), (0.6, 0.5)), "scale": 0.55},
    )
    frames = [Frame(i, i / 10, image=image) for i, image in enumerate(two_frames)]
    session = OpenCVTracker().new_session()
    session.step(frames[0], {"dog": dog[0], "person": person[0]})
    ious = {"dog": [], "person": []}
    for i in range(1, len(frames)):
        out = session.step(frames[i])
        ious["dog"].append(mask_iou(out["dog"].mask, dog[i]))
        ious["person"].append(mask_iou(out["person"].mask, person[i]))
    rows.append(
        (
            "tracker two objects (person passes in front of dog)",
            f"dog {np.mean(ious['dog']):.3f}  person {np.mean(ious['person']):.3f}",
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="OpenCV and torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    print(f"# lite backends, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'timing (median per call)':<62} {'ms':>8}")
    for name, value in timing_table(args.repeats):
        print(f"{name:<62} {value:8.1f}")
    if not args.skip_accuracy:
        print(f"\n{'accuracy vs composite ground truth':<62} result")
        for name, value in accuracy_table():
            print(f"{name:<62} {value}")


if __name__ == "__main__":
    main()
