"""Benchmark of the package used through the standard ROS 2 tools (prints numbers; no thresholds).

1. `colcon build` of the package in a fresh temporary workspace (cold: no build folder), wall time.
2. Launch to active: from starting `ros2 launch reasonvos_ros perception.launch.py` to the node reporting
   'active: subscribed' (lite backends, the defaults: model loading included), and to `ros2 lifecycle get`
   answering 'active' (what a client can observe).
3. Results latency seen by `ros2 topic echo`: frames (320x240 rgb8, 10 Hz) stamped with the wall clock when
   published; for each results message `ros2 topic echo` prints, now minus its header stamp (frame published ->
   node -> results -> echo's output line). An rclpy subscriber in this process measures the same without the
   CLI, to show what the CLI itself adds. Scripted backends, so the figure is the ROS path, not the models.

Needs the upstream tools (tools/setup.sh installs them). Run: source tools/env.sh && python benchmarks/bench_ros_tools.py [--skip-build] [--skip-launch]
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))

from rosutil import ros_env, ros_node, wait_until  # noqa: E402

BIN = Path(sys.executable).parent
ROS2 = str(BIN / "ros2")
SIGINT_EXEC = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"
)


def colcon_build_seconds(workspace: Path) -> float:
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "reasonvos_ros").symlink_to(ROOT)
    env = ros_env({"CMAKE_PREFIX_PATH": sys.prefix})
    env.pop("PYTHONPATH")
    args = ["-DBUILD_TESTING=OFF"] + (["-G", "Ninja"] if shutil.which("ninja") else [])
    start = time.monotonic()
    subprocess.run(
        [str(BIN / "colcon"), "build", "--cmake-args", *args], cwd=workspace, env=env, check=True, capture_output=True
    )
    return time.monotonic() - start


class Launch:
    def __init__(self, *arguments: str, log: Path) -> None:
        self.log = log
        self._file = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.start = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-c", SIGINT_EXEC, ROS2, "launch", "reasonvos_ros", "perception.launch.py", *arguments],
            env=ros_env(),
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._file.close()


def launch_to_active(tmp: Path, namespace: str) -> tuple[float, float]:
    launch = Launch(f"namespace:={namespace}", log=tmp / f"{namespace}.log")
    try:
        logged = wait_until(lambda: "active: subscribed" in launch.output() and time.monotonic(), 180, "active")
        node = f"/{namespace}/reasonvos_perception"

        def observed():
            out = subprocess.run([ROS2, "lifecycle", "get", node], env=ros_env(), capture_output=True, text=True)
            return out.stdout.startswith("active") and time.monotonic()

        seen = wait_until(observed, 60, "ros2 lifecycle get active", interval=0.1)
        return logged - launch.start, seen - launch.start
    finally:
        launch.stop()


def echo_latency(tmp: Path, frames: int = 60) -> tuple[list[float], list[float]]:
    import yaml

    params = tmp / "scripted.yaml"
    backends = {"sampler": "scripted", "segmenter": "scripted", "tracker": "scripted", "qos_reliability": "reliable"}
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": backends}}))
    launch = Launch("namespace:=bench", f"params_file:={params}", "image:=/bench_cam", log=tmp / "echo.log")
    echo_lines: list[tuple[float, str]] = []
    in_process: list[float] = []
    try:
        wait_until(lambda: "active: subscribed" in launch.output(), 120, "active")
        echo = subprocess.Popen(
            [
                ROS2,
                "topic",
                "echo",
                "--csv",
                "--field",
                "header.stamp",
                "/bench/reasonvos_perception/results",
                "reasonvos_ros/msg/TargetResultArray",
            ],
            env=ros_env(),
            stdout=subprocess.PIPE,
            text=True,
        )

        def read_echo():
            for line in echo.stdout:
                echo_lines.append((time.time(), line))

        reader = threading.Thread(target=read_echo, daemon=True)
        reader.start()
        with ros_node("bench_client") as h:
            from rclpy.qos import QoSProfile, ReliabilityPolicy
            from sensor_msgs.msg import Image
            from std_msgs.msg import Header, String

            from reasonvos_ros.msg import TargetResultArray
            from reasonvos_ros.ros.conversions import nanoseconds_to_stamp, numpy_to_image_msg

            def on_results(msg):
                in_process.append(time.time() - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))

            h.node.create_subscription(TargetResultArray, "/bench/reasonvos_perception/results", on_results, 10)
            pub = h.node.create_publisher(
                Image, "/bench_cam", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            )
            text = h.node.create_publisher(String, "/bench/instruction_text", 10)
            h.wait_for_subscribers(pub)
            h.wait_for_subscribers(text)
            image = np.full((240, 320, 3), 120, np.uint8)
            image[100:140, 150:190] = (230, 20, 20)
            time.sleep(3.0)  # let `ros2 topic echo` discover and match the results topic
            text.publish(String(data="red"))
            for _ in range(frames):
                header = Header(stamp=nanoseconds_to_stamp(time.time_ns()), frame_id="bench")
                pub.publish(numpy_to_image_msg(image, "rgb8", header))
                time.sleep(0.1)
            time.sleep(1.0)
        echo.send_signal(signal.SIGINT)
        echo.wait(timeout=10)
    finally:
        launch.stop()
    # `--field header.stamp --csv` prints "sec,nanosec" per message.
    latencies = []
    for arrival, line in echo_lines:
        fields = line.strip().split(",")
        if len(fields) == 2 and all(f.isdigit() for f in fields):
            latencies.append(arrival - (int(fields[0]) + int(fields[1]) * 1e-9))
    return latencies, in_process


def summary(values: list[float]) -> str:
    if not values:
        return "no messages"
    ms = np.array(values) * 1e3
    return f"n={len(ms)}, median {np.median(ms):.1f} ms, p90 {np.percentile(ms, 90):.1f} ms, max {ms.max():.1f} ms"


def main() -> int:
    if not Path(ROS2).exists():
        print("the upstream ROS 2 tools are not installed (tools/setup.sh installs them from ../shared)")
        return 1
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    try:
        run_all()
    finally:
        subprocess.run([ROS2, "daemon", "stop"], env=ros_env(), capture_output=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    return 0


def run_all() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "--skip-build" not in sys.argv:
            print(f"colcon build (cold, temporary workspace): {colcon_build_seconds(tmp / 'ws'):.1f} s")
        for run in range(0 if "--skip-launch" in sys.argv else 2):
            logged, seen = launch_to_active(tmp, f"bench{run}")
            print(
                f"ros2 launch -> active (lite backends), run {run + 1}: node log {logged:.1f} s, "
                f"`ros2 lifecycle get` {seen:.1f} s"
            )
        echoed, direct = echo_latency(tmp)
        print(f"results latency, frame published -> `ros2 topic echo` line: {summary(echoed)}")
        print(f"results latency, frame published -> rclpy subscriber:       {summary(direct)}")


if __name__ == "__main__":
    sys.exit(main())
