"""Instruction -> first live mask with the node's default lite backends on the demo clip (no ROS).

Frames of Debian's vtest.avi (the demo's clip, longest side 384 px as in the demo) are fed into a rolling window
at the video's own rate by a feeder thread, as a camera would; after ``--lead`` seconds the instruction "the person
walking" is given to the live engine, and the time until the first *live* result (the newest frame) with status
TRACKING and a mask is measured. Each trial starts at another point of the video, with a fresh window, engine
and detection cache. Prints every trial, the median and p90, and the acquisition's stage times.

Run (on a quiet machine for the headline number; the script prints the load average it ran under):
    source tools/env.sh && python benchmarks/bench_first_mask.py --trials 12
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run against the checkout


def load_frames(count: int, side: int) -> tuple[list[np.ndarray], float]:
    from reasonvos_ros.data.media import media_path

    capture = cv2.VideoCapture(str(media_path("vtest.avi")))
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    frames = []
    while len(frames) < count:
        ok, bgr = capture.read()
        if not ok:
            break
        height, width = bgr.shape[:2]
        scale = side / max(height, width)
        small = cv2.resize(bgr, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        frames.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames, fps


def trial(images, fps, lead_s, instruction, timeout_s, backends, config):
    from reasonvos_ros.core.engine import LiveEngine
    from reasonvos_ros.core.pipeline import Pipeline
    from reasonvos_ros.core.types import TargetStatus
    from reasonvos_ros.core.window import RollingWindow

    sampler, segmenter, tracker = backends
    segmenter.release()  # no detections cached from an earlier trial
    pipeline = Pipeline(sampler, segmenter, tracker, config)
    window = RollingWindow(max_duration_s=10.0)
    first: dict[str, float] = {}
    given = threading.Event()
    t_instruction = [0.0]

    def on_results(frame, results, live):
        for result in results:
            if live and given.is_set() and result.status == TargetStatus.TRACKING and result.mask is not None:
                first.setdefault("t", time.perf_counter() - t_instruction[0])

    engine = LiveEngine(pipeline, window, on_results)
    engine.start()
    try:
        period = 1.0 / fps
        start = time.perf_counter()
        for position, image in enumerate(images):
            window.add(image, position * period)
            engine.notify_frame()
            if not given.is_set() and position * period >= lead_s:
                t_instruction[0] = time.perf_counter()
                given.set()
                engine.set_instruction("default", instruction)
            if "t" in first or (given.is_set() and time.perf_counter() - t_instruction[0] > timeout_s):
                break
            delay = start + (position + 1) * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        return first.get("t"), dict(engine.stats.last_timings)
    finally:
        engine.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--lead", type=float, default=2.0, help="seconds of video in the window before the instruction")
    parser.add_argument("--side", type=int, default=384)
    parser.add_argument("--instruction", default="the person walking")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--sampler-options", default="{}", help="JSON options of the detector sampler")
    args = parser.parse_args()
    import json

    from reasonvos_ros.core.pipeline import PipelineConfig
    from reasonvos_ros.core.registry import build_backend

    images, fps = load_frames(args.trials * 25 + 200, args.side)
    backends = (
        build_backend("sampler", "detector", json.loads(args.sampler_options)),
        build_backend("segmenter", "lite"),
        build_backend("tracker", "opencv"),
    )
    config = PipelineConfig()  # the node's defaults
    print(
        f"vtest.avi at {fps:.0f} fps, {images[0].shape[1]}x{images[0].shape[0]}, lead {args.lead} s, "
        f"'{args.instruction}', load average before: {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs"
    )
    trial(images[:40], fps, 1.0, args.instruction, args.timeout, backends, config)  # warm-up (lazy loads)
    latencies = []
    for k in range(args.trials):
        offset = 25 * k
        clip = images[offset : offset + int((args.lead + args.timeout + 1) * fps)]
        latency, timings = trial(clip, fps, args.lead, args.instruction, args.timeout, backends, config)
        stages = ", ".join(f"{name} {value * 1e3:.0f} ms" for name, value in timings.items() if name.endswith("_s"))
        shown = f"{latency:.2f} s" if latency is not None else f"none within {args.timeout} s"
        print(f"trial {k:2d} (frames from {offset:3d}): first live mask {shown}  [{stages}]")
        latencies.append(latency if latency is not None else float("inf"))
    finite = sorted(latencies)
    p90 = finite[min(len(finite) - 1, int(np.ceil(0.9 * len(finite))) - 1)]
    print(
        f"instruction -> first live mask: median {statistics.median(finite):.2f} s, p90 {p90:.2f} s "
        f"({sum(np.isinf(finite))} of {len(finite)} trials without one); load average after: "
        f"{os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
