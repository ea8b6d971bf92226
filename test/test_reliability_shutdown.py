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
        engine_threads = node.engine.worker_threads()
        assert len(engine_threads) == 3 and all(t.is_alive() for t in engine_threads)
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


# ------------------------------------------------------------------------------------- signals at random moments
# Issue 18: a signal within ~1.5 s of an instruction aborted the process in up to half of the runs ("terminate
# called without an active exception", exit -6): a daemon worker was inside an OpenCV call when the interpreter
# finalized. The node runs a real OpenCV tracker here (CSRT + DIS flow + graph cut in the tracking worker; the
# window's JPEG decoding in the acquisition worker) and is signalled at a random moment of acquisition/tracking.
RANDOM_EXIT_LIMIT_S = 3.0  # signal -> exit, on a loaded 2-core machine
ABORT_MARKERS = ("terminate called", "Fatal Python error", "Aborted", "Traceback", "Segmentation fault")


def signal_at_random_moment(signum: int, rng, h) -> dict:
    """One run: start the node, stream frames, send an instruction, signal after a random delay; returns what
    happened (exit code, seconds to exit, log excerpt, the node's own shm segments left)."""
    proc = start_node(
        qos_reliability="reliable",
        tracker="opencv",
        segmenter_options={"delay_s": rng.uniform(0.0, 0.6)},
        reacquire_interval_s=0.0,
    )
    frames, _ = moving_squares(60, 120, 160)
    stop = threading.Event()
    try:
        c = Client(h)

        def camera():
            t = 0
            while not stop.is_set():
                c.send_frame(t, frames[t % len(frames)], t % len(frames))
                t += 1
                time.sleep(1 / 30)

        thread = threading.Thread(target=camera, daemon=True)
        thread.start()
        time.sleep(0.3)
        c.say(rng.choice(["red", "blue", "green"]), rng.choice(["a", "b"]))
        if rng.random() < 0.5:
            c.say("the blue one", "c")  # a second acquisition queued behind the first
        time.sleep(rng.uniform(0.0, 1.5))
        node_files = shm_files_of(proc.pid)
        own = {n.removesuffix("_el") for n in node_files if n.endswith("_el") and "port" not in n}
        start = time.monotonic()
        proc.process.send_signal(signum)
        try:
            code = proc.process.wait(timeout=10)
        except Exception:
            code = None
        elapsed = time.monotonic() - start
        stop.set()
        thread.join(timeout=2)
        remaining = fastrtps_files()
        left = {n for n in own if n in remaining or n + "_el" in remaining}
        return {"code": code, "elapsed": elapsed, "log": proc.output(), "shm_left": left, "own": own}
    finally:
        stop.set()
        proc.stop()


def run_signal_series(signum: int, runs: int, seed: int) -> list[dict]:
    import random

    from rosutil import ros_node

    rng = random.Random(seed)
    outcomes = []
    with ros_node("random_signal_client") as h:
        for _ in range(runs):
            outcomes.append(signal_at_random_moment(signum, rng, h))
    return outcomes


def check_signal_series(signum: int, outcomes: list[dict]) -> None:
    name = signal.Signals(signum).name
    bad = []
    for i, o in enumerate(outcomes):
        problems = []
        if o["code"] != 0:
            problems.append(f"exit code {o['code']}")
        if o["elapsed"] > RANDOM_EXIT_LIMIT_S:
            problems.append(f"exit took {o['elapsed']:.2f} s")
        markers = [m for m in ABORT_MARKERS if m in o["log"]]
        if markers:
            problems.append(f"log has {markers}")
        if o["shm_left"]:
            problems.append(f"shared memory left: {sorted(o['shm_left'])}")
        if not o["own"]:
            problems.append("no Fast DDS segment of the node found before the signal (cannot check clean-up)")
        if problems:
            bad.append(f"run {i}: {'; '.join(problems)}\n{o['log'][-1500:]}")
    times = sorted(o["elapsed"] for o in outcomes)
    print(
        f"\n{name}: {len(outcomes)} runs, {len(bad)} bad; exit time median {times[len(times) // 2]:.2f} s, "
        f"max {times[-1]:.2f} s"
    )
    assert not bad, f"{len(bad)} of {len(outcomes)} {name} runs were not clean:\n" + "\n".join(bad[:3])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_at_random_moments_exits_cleanly(signum):
    check_signal_series(signum, run_signal_series(signum, runs=3, seed=int(signum)))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_at_random_moments_exits_cleanly_50_times(signum):
    check_signal_series(signum, run_signal_series(signum, runs=50, seed=100 + int(signum)))
