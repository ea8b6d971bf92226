"""Shutdown (issue 10): SIGINT or SIGTERM while the node is busy (a segmenter call of 3 s in progress for one
target, 50 ms tracker steps for another) must end the process within 2 s through its clean path (exit code 0,
no traceback), leaving no child process and no Fast DDS shared-memory segment of its own in /dev/shm (the
fastrtps_* files it mapped or held open are compared before/after; files another live process still uses, such
as the shared port segments or the test client's own segment, are not the node's to remove). In-process, a
deactivation during a model call must leave no engine thread behind once that call returns.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
from rosutil import ros_node, wait_until
from test_reliability_support import (
    Client,
    child_pids,
    fastrtps_files,
    moving_squares,
    shm_files_of,
    shm_users,
    start_node,
    thread_names,
)

pytestmark = pytest.mark.ros

EXIT_LIMIT_S = 2.0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_inference_exits_quickly_and_cleanly(signum):
    proc = start_node(qos_reliability="reliable", segmenter_options={"delay_s": 3.0}, tracker_options={"delay_s": 0.05})
    frames, _ = moving_squares(60, 120, 160)
    try:
        with ros_node("shutdown_client") as h:
            c = Client(h)
            sent = [0]

            def feed():
                c.send_frame(sent[0], frames[sent[0] % len(frames)], sent[0] % len(frames))
                sent[0] += 1
                time.sleep(0.03)

            for _ in range(3):
                feed()
            c.say("blue", "tracked")
            c.wait_result("tracked", lambda r: r.status == r.STATUS_TRACKING, 30, feed, "a tracked target")
            c.say("red", "searching")  # its segmenter call (3 s) starts now
            for _ in range(20):  # ~0.6 s into that call, with the tracker stepping the other target
                feed()
            _, busy = c.latest("searching")
            assert busy is not None and busy.status == busy.STATUS_SEARCHING

            node_files = shm_files_of(proc.pid)
            own_segments = {name.removesuffix("_el") for name in node_files if name.endswith("_el")}
            own_segments = {name for name in own_segments if "port" not in name}
            assert own_segments, f"no Fast DDS segment of the node found in {node_files}"
            children = child_pids(proc.pid)
            threads = thread_names(proc.pid)

            start = time.monotonic()
            proc.process.send_signal(signum)
            code = proc.process.wait(timeout=10)
            elapsed = time.monotonic() - start
            print(
                f"\n{signal.Signals(signum).name}: exit code {code} after {elapsed:.2f} s; node had {len(threads)} "
                f"threads, {len(children)} child processes, shm files {sorted(node_files)}"
            )
            assert code == 0, proc.output()[-3000:]
            assert elapsed < EXIT_LIMIT_S, f"exit took {elapsed:.2f} s"

            assert not [pid for pid in children if _alive(pid)], "child processes left"
            remaining = fastrtps_files()
            assert not {name for name in own_segments if name in remaining or name + "_el" in remaining}, (
                f"the node's shared-memory segments were left in /dev/shm: {own_segments & remaining}"
            )
            leftovers = (node_files & remaining) - shm_users(node_files & remaining)
            assert not {name for name in leftovers if name.startswith("fastrtps")}, (
                f"shared-memory files of the node that no live process uses were left: {leftovers}"
            )
    finally:
        proc.stop()
    log = proc.output()
    assert "Traceback" not in log and "Failed to publish" not in log, log[-4000:]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_deactivate_during_a_model_call_leaves_no_engine_thread():
    """In-process: deactivate (the lifecycle path) while the segmenter is inside a 1.5 s call; the tracking
    worker stops at once and the acquisition worker right after the call returns; its result is dropped."""
    import numpy as np
    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions
    from rosutil import configure_this_process, ros_domain_id
    from std_msgs.msg import Header

    from reasonvos_ros.msg import Instruction
    from reasonvos_ros.ros.conversions import nanoseconds_to_stamp, numpy_to_image_msg
    from reasonvos_ros.ros.perception_node import PerceptionNode

    configure_this_process()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    values = {"sampler": "scripted", "segmenter": "scripted", "tracker": "scripted"}
    values["segmenter_options"] = '{"delay_s": 1.5}'
    node = PerceptionNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    try:
        baseline = set(threading.enumerate())
        assert node.trigger_configure().name == "SUCCESS" and node.trigger_activate().name == "SUCCESS"
        engine_threads = list(node.engine._threads)
        assert len(engine_threads) == 2 and all(t.is_alive() for t in engine_threads)
        rgb = np.full((60, 80, 3), 110, np.uint8)
        rgb[20:40, 30:50] = (230, 20, 20)
        for t in range(5):
            header = Header(stamp=nanoseconds_to_stamp(1_700_000_000_000_000_000 + t * 33_333_333))
            node._on_image(numpy_to_image_msg(rgb, "rgb8", header))
        segmenter = node.backends["segmenter"]
        node._on_instruction(Instruction(target_id="t", text="red"))
        wait_until(lambda: segmenter.calls, 10, "the segmenter call to start")
        start = time.monotonic()
        assert node.trigger_deactivate().name == "SUCCESS"
        deactivate_s = time.monotonic() - start
        assert deactivate_s < 2.5, f"deactivate took {deactivate_s:.2f} s"
        wait_until(lambda: not any(t.is_alive() for t in engine_threads), 3.0, "engine threads to end")
        assert not node.engine.targets()
        assert node.trigger_cleanup().name == "SUCCESS"
        leftover = [t for t in threading.enumerate() if t not in baseline and t.name.startswith("reasonvos")]
        assert not leftover, leftover
    finally:
        node.destroy_node()
        context.try_shutdown()
