"""Several targets at once: per-target live result rate and latency with the node's default lite backends.

Real vtest.avi frames resized to 640x480 are fed into the rolling window at ``--fps`` (30) by a feeder thread for
``--seconds``; ``--targets`` instructions are given at the start (all about people: vtest.avi shows only
pedestrians, so several targets may follow the same person; the load is what is measured). Prints, per target,
live results per second (any status, and TRACKING ones), the latency from a frame's arrival to its result
(median, p95), acquisitions and losses, and the engine's frames skipped (the newest frame wins).

Run: source tools/env.sh && python benchmarks/bench_multi_target.py [--targets 4] [--seconds 30] [--tracker-options '{}'] [--config '{}']
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run against the checkout

INSTRUCTIONS = ["the person walking", "the pedestrian", "the man on the left", "someone walking", "the woman",
                "the person in the middle", "the tallest person", "the child"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--tracker-options", default="{}")
    parser.add_argument(
        "--config", default="{}", help="JSON pipeline settings (PipelineConfig), e.g. '{\"backward_pass\": false}'"
    )
    parser.add_argument(
        "--replay",
        type=int,
        default=0,
        metavar="STEP",
        help="instead of the real-time run: replay the live policy frame by frame on every STEP-th frame, one "
        "target at a time (deterministic, so comparable on a loaded machine): TRACKING fraction, losses and why, "
        "time per tracker step (wall clock; process CPU time would count OpenCV's own threads too)",
    )
    args = parser.parse_args()
    from reasonvos_ros.core.engine import LiveEngine
    from reasonvos_ros.core.pipeline import Pipeline, PipelineConfig
    from reasonvos_ros.core.registry import build_backend
    from reasonvos_ros.core.types import TargetStatus
    from reasonvos_ros.core.window import RollingWindow
    from reasonvos_ros.data.media import media_path

    capture = cv2.VideoCapture(str(media_path("vtest.avi")))
    images = []
    while len(images) < 300:
        ok, bgr = capture.read()
        if not ok:
            break
        images.append(cv2.cvtColor(cv2.resize(bgr, (args.width, args.height)), cv2.COLOR_BGR2RGB))
    config = PipelineConfig(**json.loads(args.config))
    pipeline = Pipeline(
        build_backend("sampler", "detector"),
        build_backend("segmenter", "lite"),
        build_backend("tracker", "opencv", json.loads(args.tracker_options)),
        config,
    )
    if args.replay:
        return replay(args, pipeline, images)
    window = RollingWindow(max_duration_s=10.0)
    arrival: dict[int, float] = {}
    latencies: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    not_tracking: dict[str, int] = defaultdict(int)  # why live results were not TRACKING (all targets)
    lock = threading.Lock()

    def on_results(frame, results, live):
        if not live:
            return
        now = time.perf_counter()
        with lock:
            for result in results:
                counts[result.target_id][result.status.name] += 1
                if result.status != TargetStatus.TRACKING:
                    not_tracking[f"{result.status.name}: {result.reason[:60]}"] += 1
                if frame.index in arrival:
                    latencies[result.target_id].append(now - arrival[frame.index])

    events: dict[str, int] = defaultdict(int)

    def on_event(level, text):
        with lock:
            events[text.split(": ", 1)[-1].split(";")[0][:70]] += 1

    engine = LiveEngine(pipeline, window, on_results, max_targets=max(4, args.targets), on_event=on_event)
    # The machine may be shared: the load average is sampled through the run, so figures can be compared fairly.
    loads: list[float] = []
    sampling = threading.Event()

    def sample_load() -> None:
        while not sampling.wait(1.0):
            loads.append(os.getloadavg()[0])

    threading.Thread(target=sample_load, daemon=True).start()
    engine.start()
    period = 1.0 / args.fps
    print(
        f"{args.targets} targets, {args.width}x{args.height} at {args.fps:.0f} Hz for {args.seconds:.0f} s, "
        f"load average before {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs"
    )
    try:
        start = time.perf_counter()
        position = 0
        warmup_done = None
        while time.perf_counter() - start < args.seconds:
            window.add(images[position % len(images)], position * period)
            with lock:
                arrival[window.newest().index] = time.perf_counter()
            engine.notify_frame()
            if position == int(args.fps):  # one second of video in the window, then the instructions
                for k in range(args.targets):
                    engine.set_instruction(f"t{k}", INSTRUCTIONS[k % len(INSTRUCTIONS)])
            if (
                warmup_done is None
                and position > args.fps
                and all(s.status == TargetStatus.TRACKING for s in engine.targets().values())
                and engine.targets()
            ):
                warmup_done = time.perf_counter()
                with lock:  # measure from the moment every target is tracked
                    latencies.clear()
                    counts.clear()
                    not_tracking.clear()
            position += 1
            delay = start + position * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        measured = time.perf_counter() - (warmup_done or start)
    finally:
        engine.stop()
        sampling.set()
    stats = engine.stats
    print(
        f"measured over {measured:.1f} s after every target was TRACKING; frames processed "
        f"{stats.frames_processed}, skipped {stats.frames_skipped}, acquisitions {stats.acquisitions}, "
        f"losses {stats.lost_events}, track corrections {stats.track_corrections}, redetections "
        f"{stats.redetections}; load average during the run: mean {np.mean(loads or [0]):.2f}, max "
        f"{max(loads or [0]):.2f}"
    )
    rates, tracking_rates = [], []
    for target_id in sorted(counts):
        total = sum(counts[target_id].values())
        tracking = counts[target_id].get("TRACKING", 0)
        lat = np.array(latencies[target_id]) * 1e3
        rates.append(total / measured)
        tracking_rates.append(tracking / measured)
        print(
            f"  {target_id}: {total / measured:5.1f} results/s ({tracking / measured:5.1f} TRACKING/s), latency "
            f"median {np.median(lat):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms  {dict(counts[target_id])}"
        )
    for text, count in sorted(not_tracking.items(), key=lambda item: -item[1])[:6]:
        print(f"  not TRACKING x{count}: {text}")
    for text, count in sorted(events.items(), key=lambda item: -item[1])[:8]:
        print(f"  event x{count}: {text}")
    if rates:
        pooled = np.concatenate([np.array(v) for v in latencies.values()]) * 1e3
        print(
            f"per-target live result rate: min {min(rates):.1f}/s, mean {np.mean(rates):.1f}/s; TRACKING: min "
            f"{min(tracking_rates):.1f}/s, mean {np.mean(tracking_rates):.1f}/s; latency p95 (all targets) "
            f"{np.percentile(pooled, 95):.0f} ms"
        )
    return 0


def replay(args, pipeline, images) -> int:
    """The live policy replayed frame by frame (``evaluation.live_tracking.replay_live``) for each target's
    instruction over ``--seconds`` of video, every ``--replay``-th frame (the real-time engine skips frames when
    behind: about every second one at 4 targets). Statuses do not depend on the machine's load; the time of
    the tracker steps does a little."""
    from reasonvos_ros.core.types import Frame, TargetStatus
    from reasonvos_ros.evaluation.live_tracking import replay_live

    count = int(args.seconds * args.fps)
    frames = [Frame(i, i / args.fps, image=images[i % len(images)]) for i in range(0, count, args.replay)]
    start_position = int(args.fps) // args.replay  # one second of video in the window, as in the real-time run
    steps = {"n": 0, "wall_s": 0.0}
    step_session = pipeline.step_session

    def timed_step(session, frame, obj_id, seed=None):
        begin = time.perf_counter()
        try:
            return step_session(session, frame, obj_id, seed)
        finally:
            if seed is None:
                steps["n"] += 1
                steps["wall_s"] += time.perf_counter() - begin

    pipeline.step_session = timed_step
    print(
        f"replay: {args.targets} instructions one at a time, {len(frames) - start_position} frames each (every "
        f"{args.replay} of {args.fps:.0f} Hz, {args.width}x{args.height}); load average {os.getloadavg()[0]:.2f}"
    )
    reasons: dict[str, int] = defaultdict(int)
    fractions = []
    for k in range(args.targets):
        instruction = INSTRUCTIONS[k % len(INSTRUCTIONS)]
        pipeline.segmenter.release()
        results = replay_live(pipeline, frames, instruction, start_position, window_frames=int(10 * args.fps))
        tracking = sum(r.status == TargetStatus.TRACKING for r in results)
        losses = 0
        for previous, result in zip([None, *results], results):
            if result.status != TargetStatus.TRACKING:
                reasons[f"{result.status.name}: {result.reason[:70]}"] += 1
            if result.status == TargetStatus.LOST and (previous is None or previous.status == TargetStatus.TRACKING):
                losses += 1
        fractions.append(tracking / len(results))
        print(
            f"  {instruction!r}: TRACKING on {tracking} of {len(results)} frames, {losses} times not TRACKING after it"
        )
    for text, n in sorted(reasons.items(), key=lambda item: -item[1])[:8]:
        print(f"  not TRACKING x{n}: {text}")
    print(
        f"TRACKING fraction mean {np.mean(fractions):.2f}; tracker step wall time mean "
        f"{1e3 * steps['wall_s'] / max(1, steps['n']):.1f} ms ({steps['n']} steps); load average after "
        f"{os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
