"""Issue 18 over real rclpy between processes: lifecycle abuse through the standard ``change_state`` service (what
``ros2 lifecycle set`` and every lifecycle manager call), with frames and instructions flowing; a decoder bomb on
the wire; a burst of distinct target ids. The node runs in its own process with the scripted backends.
"""

from __future__ import annotations

import random
import struct
import threading
import time
import zlib

import pytest
from rosutil import ros_node, wait_until
from test_reliability_support import (
    ACTIVATE,
    CLEANUP,
    CONFIGURE,
    DEACTIVATE,
    NODE,
    TRANSITION_LABELS,
    LifecycleClient,
    moving_squares,
    rss_mb,
    start_node,
    thread_names,
)

pytestmark = pytest.mark.ros

# A message published just before the deactivate response can arrive just after it (another topic).
DELIVERY_GRACE_S = 0.3


def torture(transitions: int, seed: int) -> dict:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from reasonvos_ros.msg import Instruction, TargetResultArray
    from reasonvos_ros.ros.conversions import nanoseconds_to_stamp, numpy_to_image_msg

    rng = random.Random(seed)
    proc = start_node(
        qos_reliability="reliable",
        segmenter_options={"delay_s": 0.3},
        tracker_options={"delay_s": 0.02},
        reacquire_interval_s=0.0,
    )
    frames, _ = moving_squares(60, 120, 160)
    stop = threading.Event()
    report: dict = {"refused": 0, "accepted": 0, "threads": [], "rss": [], "inactive_results": []}
    try:
        with ros_node("lifecycle_torture") as h:
            lifecycle = LifecycleClient(h)
            image = h.node.create_publisher(
                Image, "/image", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            )
            instruction = h.node.create_publisher(Instruction, "/instruction", 50)
            results = h.collect(TargetResultArray, f"{NODE}/results", 50)
            history = h.collect(TargetResultArray, f"{NODE}/results_history", 50)

            def traffic():
                t = 0
                while not stop.is_set():
                    header_stamp = nanoseconds_to_stamp(1_700_000_000_000_000_000 + t * 33_333_333)
                    msg = numpy_to_image_msg(frames[t % len(frames)], "rgb8")
                    msg.header.stamp = header_stamp
                    image.publish(msg)
                    if t % 15 == 0:
                        target, colour = rng.choice("ab"), rng.choice(["red", "green", "blue"])
                        instruction.publish(Instruction(target_id=target, text=colour))
                    t += 1
                    time.sleep(1 / 30)

            feeder = threading.Thread(target=traffic, daemon=True)
            feeder.start()
            state = lifecycle.state()
            assert state == "active"
            inactive_since = None
            windows = []  # (from, to): no result may arrive in between (the node is not active)
            for i in range(transitions):
                if rng.random() < 0.7:  # mostly valid transitions (cycles), the rest anything
                    transition = {"unconfigured": CONFIGURE, "inactive": rng.choice([ACTIVATE, ACTIVATE, CLEANUP])}.get(
                        state, DEACTIVATE
                    )
                else:
                    transition = rng.choice([CONFIGURE, CLEANUP, ACTIVATE, DEACTIVATE])
                if i % 10 == 3 and state == "active":
                    transition = CONFIGURE  # invalid while active: the case that killed the node
                if transition == ACTIVATE and inactive_since is not None:
                    windows.append((inactive_since + DELIVERY_GRACE_S, time.monotonic()))
                ok = lifecycle.transition(transition, by_label=rng.random() < 0.3)
                report["accepted" if ok else "refused"] += 1
                assert proc.returncode is None, f"node died after {TRANSITION_LABELS[transition]}:\n{proc.output()}"
                state = lifecycle.state()
                if state == "active":
                    inactive_since = None
                    report["threads"].append(len(thread_names(proc.pid)))
                    report["rss"].append(rss_mb(proc.pid)[0])
                elif inactive_since is None:
                    inactive_since = time.monotonic()
                time.sleep(rng.uniform(0.0, 0.4))
            if state != "active":
                if state == "unconfigured":
                    assert lifecycle.transition(CONFIGURE)
                if inactive_since is not None:
                    windows.append((inactive_since + DELIVERY_GRACE_S, time.monotonic()))
                assert lifecycle.transition(ACTIVATE)
            # Still works: a fresh instruction is tracked.
            instruction.publish(Instruction(target_id="final", text="red"))

            def tracked():
                with results._condition:
                    arrays = list(results.messages[-20:])
                return any(r.target_id == "final" and r.status == r.STATUS_TRACKING for a in arrays for r in a.results)

            wait_until(tracked, 30, "the target 'final' tracked after the torture")
            stop.set()
            feeder.join(timeout=5)
            arrivals = list(results.arrivals) + list(history.arrivals)
            report["inactive_results"] = [t for t in arrivals if any(a <= t <= b for a, b in windows)]
            report["windows"] = len(windows)
            report["threads_end"] = len(thread_names(proc.pid))
    finally:
        stop.set()
        code = proc.stop()
    report["code"] = code
    report["log"] = proc.output()
    return report


def check_torture(report: dict, transitions: int) -> None:
    print(
        f"\nlifecycle torture: {transitions} requests ({report['accepted']} accepted, {report['refused']} refused), "
        f"{report['windows']} inactive periods; threads while active {report['threads'][:3]} ... "
        f"{report['threads'][-3:]}; RSS {report['rss'][0]:.1f} -> {report['rss'][-1]:.1f} MB"
    )
    assert report["refused"] > 0, "no invalid transition was tried"
    assert not report["inactive_results"], f"{len(report['inactive_results'])} results arrived while inactive"
    threads = report["threads"]
    assert max(threads[len(threads) // 2 :]) <= max(threads[: max(1, len(threads) // 4)]) + 2, threads
    assert report["code"] == 0, report["log"][-3000:]
    for marker in ("Traceback", "terminate called", "context is invalid"):
        assert marker not in report["log"], report["log"][-3000:]


def test_lifecycle_torture_with_frames_and_instructions_flowing():
    report = torture(transitions=40, seed=1)
    check_torture(report, 40)


@pytest.mark.slow
def test_lifecycle_torture_long():
    """600 requests, about 200 deactivate/activate cycles."""
    report = torture(transitions=600, seed=2)
    check_torture(report, 600)
    rss = report["rss"]
    assert rss[-1] - rss[len(rss) // 4] < 30, f"RSS grew over the cycles: {rss[:: max(1, len(rss) // 10)]}"


def test_decoder_bomb_on_the_wire_is_refused_and_the_node_lives():
    from sensor_msgs.msg import CompressedImage
    from test_reliability_support import Client

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + ihdr
        + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
        + struct.pack(">I", 0)
        + b"IEND"
        + struct.pack(">I", zlib.crc32(b"IEND"))
    )
    proc = start_node(qos_reliability="reliable", image_transport="compressed")
    try:
        with ros_node("bomb_client") as h:
            from rclpy.qos import QoSProfile, ReliabilityPolicy

            pub = h.node.create_publisher(
                CompressedImage, "/image/compressed", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            )
            h.wait_for_subscribers(pub, timeout=20)
            c = Client.__new__(Client)  # only the diagnostics collector is needed
            from diagnostic_msgs.msg import DiagnosticArray

            c.diagnostics = h.collect(DiagnosticArray, "/diagnostics", 10)
            for _ in range(3):
                pub.publish(CompressedImage(format="png", data=bomb))
            wait_until(
                lambda: (
                    c.diagnostics.messages
                    and {kv.key: kv.value for kv in c.diagnostics.messages[-1].status[0].values}.get(
                        "rejected_image_too_large"
                    )
                    == "3"
                ),
                20,
                "three refused bombs in diagnostics",
            )
            assert proc.returncode is None
    finally:
        code = proc.stop()
    assert code == 0, proc.output()[-3000:]


def test_a_burst_of_distinct_target_ids_is_counted_completely():
    """1000 distinct ids sent as fast as possible: each is accepted (max_targets of them) or rejected, and the
    diagnostics account for every one (accepted + rejected + lost in transport = sent)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from reasonvos_ros.msg import Instruction

    sent = 1000
    proc = start_node(qos_reliability="reliable", max_targets=4)
    try:
        with ros_node("burst_client") as h:
            pub = h.node.create_publisher(
                Instruction, "/instruction", QoSProfile(depth=sent, reliability=ReliabilityPolicy.RELIABLE)
            )
            diagnostics = h.collect(DiagnosticArray, "/diagnostics", 10)
            h.wait_for_subscribers(pub, timeout=20)
            for i in range(sent):
                pub.publish(Instruction(target_id=f"id-{i}", text="red"))

            def accounted():
                if not diagnostics.messages:
                    return None
                values = {kv.key: kv.value for kv in diagnostics.messages[-1].status[0].values}
                targets = sum(1 for key in values if key.startswith("target["))
                total = targets + int(values.get("rejected_instruction", 0)) + int(values.get("instructions_lost", 0))
                return (total, values) if total == sent else None

            _, values = wait_until(accounted, 60, f"all {sent} instructions accounted for")
            print(
                f"\nburst of {sent}: {sum(1 for k in values if k.startswith('target['))} accepted, "
                f"{values.get('rejected_instruction')} rejected, {values['instructions_lost']} lost in transport"
            )
    finally:
        code = proc.stop()
    assert code == 0, proc.output()[-3000:]
