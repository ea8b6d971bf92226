"""Helpers of the reliability tests (issue 10) and of benchmarks/load_long.py; this module holds no tests.

- :func:`start_node`: the perception node in its own process (scripted test-double backends unless told
  otherwise), waiting until it is active.
- :class:`Client`: the test side over real rclpy (camera, instructions, results, diagnostics, reset service).
- :class:`LifecycleClient`: the node's lifecycle transitions and parameter setting.
- /proc readers for the node process: resident memory (current and peak), threads, child processes, and the
  POSIX shared-memory files (Fast DDS: /dev/shm/fastrtps_*) it maps or holds open.
- :func:`run_load`: the load scenario (camera at 60 Hz, bursts of instructions), returning its figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosutil import RosProcess, spawn_python, wait_until

NODE = "/reasonvos_perception"
SHM_DIR = Path("/dev/shm")
BASE_STAMP_NS = 1_700_000_000_000_000_000

SCRIPTED = {"sampler": "scripted", "segmenter": "scripted", "tracker": "scripted"}


def node_args(**params: Any) -> list[str]:
    """``--ros-args -p name:=value ...``; dicts become JSON strings (the *_options parameters)."""
    args = ["--ros-args"]
    for key, value in params.items():
        if isinstance(value, dict):
            value = "'" + json.dumps(value) + "'"
        elif isinstance(value, bool):
            value = str(value).lower()
        args += ["-p", f"{key}:={value}"]
    return args


def start_node(ready: str = "active: subscribed", timeout: float = 60.0, **params: Any) -> RosProcess:
    params = {**SCRIPTED, "diagnostics_period_s": 0.2, **params}
    proc = spawn_python(module="reasonvos_ros.ros.perception_node", args=node_args(**params), name="perception")
    try:
        proc.wait_for_output(ready, timeout=timeout)
    except BaseException:
        proc.stop()
        raise
    return proc


# ----------------------------------------------------------------------------------------------- scenes
COLOURS = {"red": (230, 20, 20), "green": (20, 210, 20), "blue": (20, 20, 230)}


def moving_squares(n_frames: int, height: int, width: int, size: int = 28) -> tuple[list[np.ndarray], dict]:
    """Three coloured squares moving on a grey background, with exact per-frame masks (cycles back smoothly)."""
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(90, 140, (height, width, 1), dtype=np.uint8), 3, axis=2)
    starts = {"red": (10, 10), "green": (width // 2, height // 3), "blue": (width // 4, height // 2 + 20)}
    frames, masks = [], {c: [] for c in COLOURS}
    for t in range(n_frames):
        image = grey.copy()
        phase = np.sin(2 * np.pi * t / n_frames)
        for colour, (x0, y0) in starts.items():
            x = int(x0 + 0.25 * (width - size - 20) * (1 + phase) / 2)
            y = int(y0 + 8 * phase)
            mask = np.zeros((height, width), bool)
            mask[max(y, 0) : y + size, max(x, 0) : x + size] = True
            image[mask] = COLOURS[colour]
            masks[colour].append(mask)
        frames.append(image)
    return frames, masks


# ----------------------------------------------------------------------------------------------- the client
class Client:
    """Publishers and collectors of the test side, on a :func:`rosutil.ros_node` harness."""

    def __init__(self, harness: Any, camera_reliable: bool = True, keep_results: int | None = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from reasonvos_ros.msg import Instruction, TargetResultArray
        from reasonvos_ros.srv import ResetTargets

        self.h = harness
        node = harness.node
        camera_qos = (
            QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE) if camera_reliable else qos_profile_sensor_data
        )
        self.image = node.create_publisher(Image, "/image", camera_qos)
        self.instruction = node.create_publisher(Instruction, "/instruction", 50)
        self.text = node.create_publisher(String, "/instruction_text", 10)
        self.results = harness.collect(TargetResultArray, f"{NODE}/results", 50)
        self.diagnostics = harness.collect(DiagnosticArray, "/diagnostics", 10)
        self.reset = node.create_client(ResetTargets, f"{NODE}/reset")
        harness.wait_for_subscribers(self.image, timeout=20)
        harness.wait_for_subscribers(self.instruction, timeout=20)
        assert self.reset.wait_for_service(timeout_sec=20)
        self.frame_of_stamp: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()
        if keep_results is not None:
            self._trim(keep_results)

    def _trim(self, keep: int) -> None:
        """Bound the collector's memory in long runs (the load test counts arrivals itself)."""
        collector = self.results
        original = collector._on_message

        def on_message(message: Any) -> None:
            original(message)
            with collector._condition:
                if len(collector.messages) > 2 * keep:
                    del collector.messages[:-keep]
                    del collector.arrivals[:-keep]

        collector._on_message = on_message
        collector.subscription.callback = on_message

    def header(self, t: int, period_ns: int = 33_333_333) -> Any:
        from std_msgs.msg import Header

        from reasonvos_ros.ros.conversions import nanoseconds_to_stamp

        return Header(stamp=nanoseconds_to_stamp(BASE_STAMP_NS + t * period_ns), frame_id="camera_optical")

    def send_frame(self, t: int, image: np.ndarray, scene_index: int | None = None, period_ns: int = 33_333_333):
        from reasonvos_ros.ros.conversions import numpy_to_image_msg

        msg = numpy_to_image_msg(image, "rgb8", self.header(t, period_ns))
        with self._lock:
            self.frame_of_stamp[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = (
                t if scene_index is None else scene_index
            )
            if len(self.frame_of_stamp) > 20_000:
                for key in list(self.frame_of_stamp)[:10_000]:
                    del self.frame_of_stamp[key]
        self.image.publish(msg)

    def say(self, text: str, target_id: str | None = None) -> None:
        from std_msgs.msg import String

        from reasonvos_ros.msg import Instruction

        if target_id is None:
            self.text.publish(String(data=text))
        else:
            self.instruction.publish(Instruction(target_id=target_id, text=text, source=Instruction.SOURCE_TEXT))

    def frame_of(self, array_msg: Any) -> int | None:
        with self._lock:
            return self.frame_of_stamp.get((array_msg.header.stamp.sec, array_msg.header.stamp.nanosec))

    def latest(self, target_id: str) -> tuple[Any, Any]:
        with self.results._condition:
            arrays = list(self.results.messages)
        for array in reversed(arrays):
            for result in array.results:
                if result.target_id == target_id:
                    return array, result
        return None, None

    def wait_result(self, target_id: str, predicate, timeout: float, feed=None, what: str = "") -> tuple[Any, Any]:
        """Wait until the newest result of ``target_id`` satisfies ``predicate(result)``; ``feed()`` is called
        between checks to keep frames coming (results are only published with frames)."""

        def check():
            if feed is not None:
                feed()
            _array, result = self.latest(target_id)
            return result is not None and predicate(result)

        wait_until(check, timeout, what or f"a matching result for {target_id!r}")
        return self.latest(target_id)

    def diagnostic_values(self) -> dict[str, str]:
        wait_until(lambda: len(self.diagnostics) > 0, 10, "diagnostics")
        status = self.diagnostics.messages[-1].status[0]
        return {kv.key: kv.value for kv in status.values}

    def diagnostic_status(self) -> Any:
        wait_until(lambda: len(self.diagnostics) > 0, 10, "diagnostics")
        return self.diagnostics.messages[-1].status[0]


# lifecycle_msgs/Transition ids
CONFIGURE, CLEANUP, ACTIVATE, DEACTIVATE = 1, 2, 3, 4
TRANSITION_LABELS = {CONFIGURE: "configure", CLEANUP: "cleanup", ACTIVATE: "activate", DEACTIVATE: "deactivate"}


class LifecycleClient:
    """The node's lifecycle and parameter services, as ``ros2 lifecycle`` / ``ros2 param`` call them."""

    def __init__(self, h) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState
        from rcl_interfaces.srv import SetParameters

        self.change = h.node.create_client(ChangeState, f"{NODE}/change_state")
        self.get = h.node.create_client(GetState, f"{NODE}/get_state")
        self.set_parameters = h.node.create_client(SetParameters, f"{NODE}/set_parameters")
        for client in (self.change, self.get, self.set_parameters):
            assert client.wait_for_service(timeout_sec=20), f"{client.srv_name} not offered"

    def state(self) -> str:
        """The primary state's label: unconfigured, inactive, active or finalized."""
        from lifecycle_msgs.srv import GetState

        response = self.get.call(GetState.Request(), timeout_sec=20)
        assert response is not None, "get_state did not answer (node dead?)"
        return response.current_state.label

    def transition(self, transition_id: int, by_label: bool = False) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request()
        if by_label:
            request.transition = Transition(label=TRANSITION_LABELS[transition_id])
        else:
            request.transition = Transition(id=transition_id)
        response = self.change.call(request, timeout_sec=30)
        assert response is not None, f"change_state {TRANSITION_LABELS[transition_id]} did not answer (node dead?)"
        return response.success

    def set_string(self, name: str, value: str) -> Any:
        """Set a string parameter; the ``SetParametersResult`` (``successful``, ``reason``)."""
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        parameter = Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))
        response = self.set_parameters.call(SetParameters.Request(parameters=[parameter]), timeout_sec=20)
        assert response is not None, f"set_parameters {name} did not answer (node dead?)"
        return response.results[0]


def mask_of(result: Any) -> np.ndarray:
    from reasonvos_ros.ros.conversions import image_msg_to_mask

    return image_msg_to_mask(result.mask)


# ----------------------------------------------------------------------------------------------- /proc readers
def proc_status(pid: int) -> dict[str, str]:
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            values[key] = value.strip()
    return values


def rss_mb(pid: int) -> tuple[float, float]:
    """(current resident set, peak resident set) in MB."""
    status = proc_status(pid)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def thread_names(pid: int) -> list[str]:
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            names.append(Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip())
    return names


def child_pids(pid: int) -> list[int]:
    """Direct and indirect children of ``pid`` (from /proc/*/stat parent ids)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def shm_files_of(pid: int) -> set[str]:
    """Names of the /dev/shm files ``pid`` maps or holds open (Fast DDS segments, their lock files, semaphores)."""
    names = set()
    try:
        with open(f"/proc/{pid}/maps") as handle:
            for line in handle:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith("/dev/shm/"):
                    names.add(parts[5].strip()[len("/dev/shm/") :])
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("/dev/shm/"):
                names.add(target[len("/dev/shm/") :])
    except OSError:
        pass
    return {name.removesuffix(" (deleted)") for name in names}


def shm_users(names: set[str]) -> set[str]:
    """Which of ``names`` some live process still maps or holds open."""
    used = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            used |= shm_files_of(int(entry)) & names
    return used


def fastrtps_files() -> set[str]:
    return {name for name in os.listdir(SHM_DIR) if "fastrtps" in name}


# ----------------------------------------------------------------------------------------------- load scenario
@dataclass
class LoadReport:
    duration_s: float
    frames_sent: int = 0
    camera_rate_hz: float = 0.0
    instructions_sent: int = 0
    bursts: int = 0
    results_received: int = 0
    results_per_bin: list[int] = field(default_factory=list)  # results per ``bin_s`` seconds
    bin_s: float = 5.0
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, RSS MB)
    peak_rss_mb: float = 0.0
    rss_after_warmup_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_slope_mb_per_min: float = 0.0
    threads_start: int = 0
    threads_end: int = 0
    latest_wins: dict[str, str] = field(default_factory=dict)  # target -> last instruction sent
    final_results: dict[str, str] = field(default_factory=dict)  # target -> "STATUS instruction"
    final_masks_correct: bool = False
    reset_answered: bool = False
    diagnostics: dict[str, str] = field(default_factory=dict)
    node_alive: bool = False

    def summary(self) -> str:
        bins = ", ".join(str(n) for n in self.results_per_bin)
        return "\n".join(
            [
                f"load run: {self.duration_s:.0f} s, camera {self.camera_rate_hz:.1f} Hz ({self.frames_sent} frames), "
                f"{self.instructions_sent} instructions in {self.bursts} bursts",
                f"results: {self.results_received} arrays ({self.results_received / self.duration_s:.1f}/s); per "
                f"{self.bin_s:.0f} s: [{bins}]",
                f"node RSS: peak {self.peak_rss_mb:.1f} MB, after warm-up {self.rss_after_warmup_mb:.1f} MB, end "
                f"{self.rss_end_mb:.1f} MB, growth after warm-up {self.rss_end_mb - self.rss_after_warmup_mb:+.1f} MB "
                f"(slope {self.rss_slope_mb_per_min:+.2f} MB/min)",
                f"threads: {self.threads_start} at start, {self.threads_end} at the end",
                f"latest instruction per target: sent {self.latest_wins}; final results {self.final_results}; "
                f"masks correct: {self.final_masks_correct}",
                f"reset service answered: {self.reset_answered}; node alive: {self.node_alive}",
                "diagnostics: "
                + ", ".join(
                    f"{k}={self.diagnostics.get(k)}"
                    for k in (
                        "frames_received",
                        "frames_processed",
                        "frames_skipped_by_tracker",
                        "acquisitions",
                        "acquisitions_cancelled",
                        "rejected_instruction",
                        "backend_errors",
                        "window_frames",
                        "window_mb",
                    )
                ),
            ]
        )


TEXTS_FOR = {
    "red": ["red", "the red square", "red one"],
    "green": ["green", "the green square"],
    "blue": ["blue", "the blue square"],
}


def run_load(
    duration_s: float,
    camera_hz: float = 60.0,
    burst_size: int = 20,
    size: tuple[int, int] = (240, 320),
    warmup_s: float = 20.0,
    segmenter_delay_s: float = 0.05,
    seed: int = 0,
    log=print,
) -> LoadReport:
    """Start a node, stream a camera at ``camera_hz`` and a burst of ``burst_size`` instructions every second for
    ``duration_s``, sample the node's memory, then check that the last instruction of every target won."""
    from rosutil import ros_node

    from reasonvos_ros.msg import TargetResult

    report = LoadReport(duration_s)
    rng = random.Random(seed)
    frames, masks = moving_squares(120, *size)
    targets = ("a", "b", "c")
    proc = start_node(
        qos_reliability="best_effort",
        segmenter_options={"delay_s": segmenter_delay_s},
        reacquire_interval_s=0.0,
        debug_image_rate_hz=0.0,
        diagnostics_period_s=1.0,
    )
    try:
        with ros_node("load_client", multithreaded=True) as h:
            client = Client(h, camera_reliable=False, keep_results=200)
            counted = {"n": 0}
            original = client.results._on_message

            def count(message):
                counted["n"] += 1
                original(message)

            client.results.subscription.callback = count
            stop = threading.Event()
            sent = {"frames": 0}
            period = 1.0 / camera_hz
            period_ns = round(period * 1e9)

            def camera():
                start = time.monotonic()
                t = 0
                while not stop.is_set():
                    client.send_frame(t, frames[t % len(frames)], t % len(frames), period_ns)
                    t += 1
                    sent["frames"] = t
                    delay = start + t * period - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)

            report.threads_start = len(thread_names(proc.pid))
            camera_thread = threading.Thread(target=camera, name="camera", daemon=True)
            start = time.monotonic()
            camera_thread.start()
            last_sent: dict[str, str] = {}
            next_sample = 0.0
            next_burst = 1.0
            bin_counts: list[int] = []
            bin_start_count = 0
            next_bin = report.bin_s
            while (elapsed := time.monotonic() - start) < duration_s:
                if elapsed >= next_sample:
                    report.rss_samples.append((elapsed, rss_mb(proc.pid)[0]))
                    next_sample += 1.0
                if elapsed >= next_bin:
                    bin_counts.append(counted["n"] - bin_start_count)
                    bin_start_count = counted["n"]
                    next_bin += report.bin_s
                if elapsed >= next_burst and elapsed < duration_s - 1.0:
                    for _ in range(burst_size):
                        target = rng.choice(targets)
                        colour = rng.choice(list(TEXTS_FOR))
                        text = rng.choice(TEXTS_FOR[colour])
                        client.say(text, target)
                        last_sent[target] = text
                        report.instructions_sent += 1
                        time.sleep(0.5 / burst_size)  # a burst spreads over half a second
                    report.bursts += 1
                    next_burst += 1.0
                assert proc.returncode is None, f"node died under load:\n{proc.output()[-3000:]}"
                time.sleep(0.05)
            report.results_per_bin = bin_counts
            report.frames_sent = sent["frames"]
            report.camera_rate_hz = sent["frames"] / (time.monotonic() - start)
            report.latest_wins = dict(last_sent)

            # The last instruction of every target wins: TRACKING with that instruction and its colour's mask.
            def colour_of(text: str) -> str:
                return next(c for c in COLOURS if c in text)

            def settled():
                ok = True
                for target, text in last_sent.items():
                    array, result = client.latest(target)
                    if result is None or result.instruction != text or result.status != TargetResult.STATUS_TRACKING:
                        ok = False
                        continue
                    index = client.frame_of(array)
                    if index is None or not np.array_equal(mask_of(result), masks[colour_of(text)][index]):
                        ok = False
                return ok

            try:
                wait_until(settled, 30, "every target tracking its last instruction")
                report.final_masks_correct = True
            except AssertionError as exc:
                log(f"not settled: {exc}")
            for target in last_sent:
                _, result = client.latest(target)
                report.final_results[target] = (
                    f"{result.status} {result.instruction!r}" if result is not None else "no result"
                )
            report.results_received = counted["n"]
            from reasonvos_ros.srv import ResetTargets

            response = client.reset.call(ResetTargets.Request(target_id=""), timeout_sec=10)
            report.reset_answered = response is not None and response.success
            report.diagnostics = client.diagnostic_values()
            stop.set()
            camera_thread.join(timeout=5)
            current, peak = rss_mb(proc.pid)
            report.peak_rss_mb = peak
            report.rss_end_mb = current
            report.threads_end = len(thread_names(proc.pid))
            after = [rss for t, rss in report.rss_samples if t >= warmup_s]
            report.rss_after_warmup_mb = after[0] if after else current
            late = [(t, rss) for t, rss in report.rss_samples if t >= warmup_s]
            if len(late) >= 3:
                times, values = np.array(late).T
                report.rss_slope_mb_per_min = float(np.polyfit(times, values, 1)[0] * 60)
            report.node_alive = proc.returncode is None
    finally:
        code = proc.stop()
    output = proc.output()
    if code not in (0, -2, 130) or "Traceback" in output:
        raise AssertionError(f"node exited with {code} or printed a traceback:\n{output[-4000:]}")
    return report
