"""`reasonvos instruct / results / reset / enable / disable` (the pip-only client commands) against the real node
in its own process, under a namespace, with frames published from this test."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

import pytest
from rosutil import ros_env, ros_node, spawn_python
from scenes import square_scene

pytestmark = pytest.mark.ros

NODE = "/robot2/reasonvos_perception"


def reasonvos(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reasonvos_ros.cli", *args],
        env=ros_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def node_and_frames():
    args = ["--ros-args", "-r", "__ns:=/robot2", "--params-file", "config/perception.yaml"]
    for key, value in {"sampler": "scripted", "segmenter": "scripted", "tracker": "scripted"}.items():
        args += ["-p", f"{key}:={value}"]
    args += ["-p", "qos_reliability:=reliable", "-p", "reacquire_interval_s:=0.0"]
    proc = spawn_python(module="reasonvos_ros.ros.perception_node", args=args, name="perception_client")
    try:
        proc.wait_for_output("active: subscribed to '/robot2/image'", timeout=60)
    except BaseException:
        proc.stop()
        raise
    frames, _ = square_scene(40, objects={"red": (20, 30, 1, 0, 24)})
    stop = threading.Event()
    with ros_node("client_feeder") as harness:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Header

        from reasonvos_ros.ros.conversions import nanoseconds_to_stamp, numpy_to_image_msg

        publisher = harness.node.create_publisher(
            Image, "/robot2/image", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )

        def feed():
            t = 0
            while not stop.is_set():
                header = Header(stamp=nanoseconds_to_stamp(1_900_000_000 * 10**9 + t * 50_000_000), frame_id="cam")
                publisher.publish(numpy_to_image_msg(frames[t % len(frames)], "rgb8", header))
                t += 1
                time.sleep(0.05)

        thread = threading.Thread(target=feed, daemon=True)
        thread.start()
        yield proc
        stop.set()
        thread.join(timeout=5)
    code = proc.stop()
    assert code in (0, -2, 130), proc.output()[-3000:]


LINE = re.compile(
    r"^(\d+)\.(\d{9}) (\S+) (SEARCHING|TRACKING|LOST|NOT_PRESENT|ERROR) understood=(.+?) bbox=(\S+) point3d=(\S+)"
)


def test_instruct_then_results_lines_then_reset_and_pause(node_and_frames):
    proc = node_and_frames
    sent = reasonvos("instruct", "the red one", "--target", "cup", "--node", NODE)
    assert sent.returncode == 0, sent.stderr
    assert "sent to '/robot2/instruction': target 'cup': 'the red one'" in sent.stdout
    proc.wait_for_output("instruction for 'cup' (text): 'the red one'", timeout=20)

    # Results: one line per target per frame; the scripted segmenter says what it understood ("red").
    got = reasonvos("results", "--node", NODE, "--target", "cup", "--count", "40", "--timeout", "40")
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    assert len(lines) == 40, got.stdout
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    tracking = [m for m in parsed if m.group(4) == "TRACKING"]
    assert tracking, lines
    for m in tracking:
        assert m.group(3) == "cup" and m.group(5) == "'red object' (1.00)"
        x, y, size = m.group(6).replace("x", ",").split(",")[:3]
        assert 20 <= int(x) <= 20 + 40 and int(y) in range(28, 33) and int(size) in range(22, 27), m.group(0)
        assert m.group(7) == "-"  # no depth: no 3D point

    # Reset: known target, then unknown (refused with exit code 1); enable/disable answer as the node does.
    reset = reasonvos("reset", "cup", "--node", NODE)
    assert reset.returncode == 0 and reset.stdout.strip() == "reset 'cup'", reset.stdout + reset.stderr
    unknown = reasonvos("reset", "cup", "--node", NODE)
    assert unknown.returncode == 1 and "unknown target 'cup'" in unknown.stderr
    paused = reasonvos("disable", "--node", NODE)
    assert paused.returncode == 0 and paused.stdout.strip() == "processing paused", paused.stdout + paused.stderr
    resumed = reasonvos("enable", "--node", NODE)
    assert resumed.returncode == 0 and resumed.stdout.strip() == "processing enabled"


def test_commands_report_a_missing_node_clearly():
    missing = "/nobody/reasonvos_perception"
    result = reasonvos("reset", "--node", missing, "--wait", "1")
    assert result.returncode == 1 and f"no service '{missing}/reset' within 1.0 s" in result.stderr
    result = reasonvos("instruct", "x", "--node", missing, "--wait", "1")
    assert result.returncode == 1 and "nobody subscribes to '/nobody/instruction'" in result.stderr
