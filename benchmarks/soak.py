"""Soak run of the perception node (issue 18): 4 targets, a 640x480 camera at 30 Hz, for N minutes (default 30).

The node runs in its own process (lite CPU backends by default: SSD detector + GrabCut + OpenCV tracker, on the
real pedestrians of Debian's vtest.avi resized to 640x480; ``--backends scripted`` uses the colour test doubles
on moving squares instead). Four targets are instructed at the start. Every ``--sample`` seconds the node's
resident memory, thread count, open file descriptors and the /dev/shm segments it maps (count and size) are read
from /proc, and the results per second of every target are counted. Printed: a table over time, then the slopes
after warm-up (per minute, least squares) and the totals. Memory must be flat after warm-up.

Run: source tools/env.sh && python benchmarks/soak.py [--minutes 30] [--backends lite|scripted]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "test")]  # the checkout and the test helpers

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
TARGETS = {
    "lite": {
        "walker": "the person walking",
        "pedestrian": "a pedestrian",
        "someone": "someone on the street",
        "human": "the human",
    },
    "scripted": {"red": "red", "green": "green", "blue": "blue", "red2": "the red one"},
}


def camera_frames(backends: str) -> list[np.ndarray]:
    import cv2

    if backends == "scripted":
        from test_reliability_support import moving_squares

        return moving_squares(120, 480, 640, size=60)[0]
    capture = cv2.VideoCapture(str(VTEST))
    frames = []
    while len(frames) < 300:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(cv2.resize(bgr, (640, 480)), cv2.COLOR_BGR2RGB))
    capture.release()
    if not frames:
        raise SystemExit(f"cannot read {VTEST} (install opencv-doc: bash tools/setup.sh)")
    return frames + frames[-2:0:-1]  # back and forth: no jump at the loop point


def shm_of(pid: int) -> tuple[int, float]:
    """Number and total size (MB) of the /dev/shm files the process maps or holds open."""
    from test_reliability_support import shm_files_of

    names = shm_files_of(pid)
    size = 0
    for name in names:
        with contextlib.suppress(OSError):  # gone meanwhile
            size += os.stat(f"/dev/shm/{name}").st_size
    return len(names), size / 1e6


def slope_per_minute(times: list[float], values: list[float]) -> float:
    if len(times) < 3:
        return float("nan")
    return float(np.polyfit(np.array(times), np.array(values, dtype=float), 1)[0] * 60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--backends", choices=("lite", "scripted"), default="lite")
    parser.add_argument("--hz", type=float, default=30.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before slopes are measured")
    args = parser.parse_args()

    from rclpy.qos import qos_profile_sensor_data
    from rosutil import ros_domain_id, ros_node
    from sensor_msgs.msg import Image
    from test_reliability_support import NODE, rss_mb, start_node, thread_names

    from reasonvos_ros.msg import Instruction, TargetResultArray
    from reasonvos_ros.ros.conversions import nanoseconds_to_stamp, numpy_to_image_msg

    frames = camera_frames(args.backends)
    targets = TARGETS[args.backends]
    backend_params = (
        {"sampler": "detector", "segmenter": "lite", "tracker": "opencv"}
        if args.backends == "lite"
        else {"tracker_options": {"delay_s": 0.02}}
    )
    print(
        f"ROS_DOMAIN_ID {ros_domain_id()}; soak {args.minutes:g} min, {len(targets)} targets, 640x480 at "
        f"{args.hz:g} Hz, {args.backends} backends",
        flush=True,
    )
    proc = start_node(
        timeout=180,
        max_targets=len(targets),
        debug_image_rate_hz=0.0,
        diagnostics_period_s=1.0,
        **backend_params,
    )
    rows = []
    stop = threading.Event()
    counts = dict.fromkeys(targets, 0)
    counts_lock = threading.Lock()
    try:
        with ros_node("soak_client", multithreaded=True) as h:
            camera = h.node.create_publisher(Image, "/image", qos_profile_sensor_data)
            instruction = h.node.create_publisher(Instruction, "/instruction", 10)

            def on_results(array):
                with counts_lock:
                    for result in array.results:
                        if result.target_id in counts and result.status == result.STATUS_TRACKING:
                            counts[result.target_id] += 1

            h.node.create_subscription(TargetResultArray, f"{NODE}/results", on_results, 50)
            h.wait_for_subscribers(camera, timeout=30)
            h.wait_for_subscribers(instruction, timeout=30)
            period = 1.0 / args.hz
            sent = {"frames": 0}

            def run_camera():
                start = time.monotonic()
                t = 0
                while not stop.is_set():
                    msg = numpy_to_image_msg(frames[t % len(frames)], "rgb8")
                    msg.header.stamp = nanoseconds_to_stamp(1_700_000_000_000_000_000 + round(t * period * 1e9))
                    msg.header.frame_id = "camera"
                    camera.publish(msg)
                    t += 1
                    sent["frames"] = t
                    delay = start + t * period - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)

            camera_thread = threading.Thread(target=run_camera, daemon=True)
            camera_thread.start()
            time.sleep(1.0)
            for target_id, text in targets.items():
                instruction.publish(Instruction(target_id=target_id, text=text))
            start = time.monotonic()
            previous = dict(counts)
            previous_t = start
            header = (
                f"{'t (s)':>7} {'RSS MB':>8} {'threads':>7} {'fds':>5} {'shm n':>5} {'shm MB':>7} "
                + " ".join(f"{t[:10]:>10}" for t in targets)
                + "   (results/s per target, TRACKING)"
            )
            print(header, flush=True)
            while time.monotonic() - start < args.minutes * 60:
                time.sleep(max(0.0, args.sample - (time.monotonic() - previous_t)))
                assert proc.returncode is None, f"node died:\n{proc.output()[-3000:]}"
                now = time.monotonic()
                with counts_lock:
                    current = dict(counts)
                rates = {t: (current[t] - previous[t]) / (now - previous_t) for t in targets}
                previous, previous_t = current, now
                shm_n, shm_mb = shm_of(proc.pid)
                row = {
                    "t": now - start,
                    "rss": rss_mb(proc.pid)[0],
                    "threads": len(thread_names(proc.pid)),
                    "fds": len(os.listdir(f"/proc/{proc.pid}/fd")),
                    "shm_n": shm_n,
                    "shm_mb": shm_mb,
                    "rates": rates,
                }
                rows.append(row)
                print(
                    f"{row['t']:7.0f} {row['rss']:8.1f} {row['threads']:7d} {row['fds']:5d} {shm_n:5d} {shm_mb:7.1f} "
                    + " ".join(f"{rates[t]:10.1f}" for t in targets),
                    flush=True,
                )
            stop.set()
            camera_thread.join(timeout=5)
            frames_sent = sent["frames"]
    finally:
        stop.set()
        code = proc.stop()
    late = [r for r in rows if r["t"] >= args.warmup] or rows
    times = [r["t"] for r in late]
    print("\n=== soak: slopes after warm-up (per minute, least squares over the samples after "
          f"{args.warmup:g} s) ===")  # fmt: skip
    for key, label in (("rss", "RSS MB"), ("threads", "threads"), ("fds", "open fds"), ("shm_n", "shm files")):
        values = [r[key] for r in late]
        print(
            f"{label:>10}: {slope_per_minute(times, values):+.3f}/min (first {values[0]:.1f}, last {values[-1]:.1f}, "
            f"min {min(values):.1f}, max {max(values):.1f})"
        )
    for target in targets:
        rates = [r["rates"][target] for r in late]
        print(
            f"{target:>10}: {np.mean(rates):.2f} results/s on average (min {min(rates):.2f}, max {max(rates):.2f}), "
            f"slope {slope_per_minute(times, rates):+.3f}/s per min"
        )
    print(f"camera frames sent: {frames_sent}; node exit code after SIGINT: {code}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
