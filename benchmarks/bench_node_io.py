"""Benchmark of the ROS layer of the perception node (prints numbers; no thresholds).

1. Ingest cost per 640x480 rgb8 frame at 30 Hz: what the image callback does (message -> RGB array -> window
   insert with JPEG encoding), median and p99 over 300 real frames of vtest.avi.
2. Window memory for 10 s at 30 Hz (300 frames): JPEG (default) and PNG storage, versus raw RGB.
3. Latency the ROS layer adds between a backend result and the published messages: the node's result
   callback (TargetResultArray with masks, label image, debug overlay) for 1 and 3 targets, median and p99.

Run: source tools/env.sh && python benchmarks/bench_node_io.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run against the checkout


def real_frames(n: int, size=(640, 480)) -> list[np.ndarray]:
    from reasonvos_ros.data.media import media_path

    cap = cv2.VideoCapture(str(media_path("vtest.avi")))
    frames = []
    while len(frames) < n:
        ok, bgr = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        frames.append(cv2.cvtColor(cv2.resize(bgr, size), cv2.COLOR_BGR2RGB))
    return frames


def pct(values, q):
    return float(np.percentile(np.asarray(values) * 1e3, q))


def bench_ingest(frames):
    from reasonvos_ros.core.window import RollingWindow
    from reasonvos_ros.ros.conversions import image_msg_to_rgb, numpy_to_image_msg

    msgs = [numpy_to_image_msg(f, "rgb8") for f in frames]
    for storage in ("jpeg", "png"):
        window = RollingWindow(max_duration_s=10.0, max_bytes=4096 * 1024 * 1024, storage=storage)
        costs = []
        for i, msg in enumerate(msgs):
            start = time.perf_counter()
            rgb = image_msg_to_rgb(msg)
            window.add(rgb, i / 30.0)
            costs.append(time.perf_counter() - start)
        stats = window.stats()
        raw = sum(f.nbytes for f in frames)
        print(
            f"ingest ({storage:4}) per 640x480 frame: median {pct(costs, 50):6.2f} ms, p99 {pct(costs, 99):6.2f} ms "
            f"(budget at 30 Hz: 33.3 ms)"
        )
        print(
            f"window ({storage:4}) for 10 s at 30 Hz: {stats.frames} frames, {stats.bytes / 1e6:6.1f} MB "
            f"(raw RGB would be {raw / 1e6:.1f} MB, {raw / stats.bytes:.1f}x more)"
        )
        start = time.perf_counter()
        for frame in window.snapshot()[:50]:
            frame.image  # noqa: B018 - decode cost
        print(f"window ({storage:4}) decode of a stored frame: {(time.perf_counter() - start) / 50 * 1e3:.2f} ms")


def bench_publish(frames):
    import rclpy
    from rclpy.parameter import Parameter
    from std_msgs.msg import Header

    from reasonvos_ros.core.ingest import FrameMeta
    from reasonvos_ros.core.pipeline import FrameResult
    from reasonvos_ros.core.types import Frame, TargetStatus
    from reasonvos_ros.ros.perception_node import PerceptionNode

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init()
    node = PerceptionNode(
        parameter_overrides=[
            Parameter("sampler", value="scripted"),
            Parameter("segmenter", value="scripted"),
            Parameter("tracker", value="scripted"),
            Parameter("autostart", value=False),
        ]
    )
    node.trigger_configure()
    node.trigger_activate()
    from sensor_msgs.msg import Image

    # The overlay is only drawn when someone subscribes to it.
    sub = node.create_subscription(Image, "~/debug_image", lambda m: None, 1)
    try:
        for n_targets in (1, 3):
            costs = []
            for i, image in enumerate(frames[:200]):
                frame = Frame(i, i / 30.0, image=image, meta=FrameMeta(Header(frame_id="camera")))
                results = []
                for t in range(n_targets):
                    mask = np.zeros(image.shape[:2], bool)
                    mask[100 + 40 * t : 220 + 40 * t, 200 + 60 * t : 300 + 60 * t] = True
                    results.append(FrameResult(f"t{t}", "the thing", frame, TargetStatus.TRACKING, "", 0.9, mask, 0.0))
                node.outputs.last_debug = 0.0 if i % 15 == 0 else time.monotonic()  # debug overlay at 2 Hz of 30 Hz
                start = time.perf_counter()
                node._on_results(frame, results, True)
                costs.append(time.perf_counter() - start)
            print(
                f"ROS layer result -> published messages, {n_targets} target(s), 640x480: median "
                f"{pct(costs, 50):.2f} ms, p99 {pct(costs, 99):.2f} ms (incl. debug overlay on 1 frame in 15)"
            )
    finally:
        node.destroy_subscription(sub)
        node.trigger_deactivate()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    frames = real_frames(300)
    bench_ingest(frames)
    bench_publish(frames)
