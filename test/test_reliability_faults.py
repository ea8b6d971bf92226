"""Injected faults (issue 10), against the node in its own process over real rclpy.

- A segmenter that raises, returns a NaN score, or runs out of (simulated CUDA) memory in the middle of its call
  (the scripted test double sleeps 0.3 s, then fails): the affected target reports STATUS_ERROR with the reason,
  /diagnostics turns ERROR, the next instruction recovers it, and the other target keeps TRACKING with the exact
  mask on every frame throughout.
- A tracker that fails during live tracking (the scripted tracker's ``fail_after``): ERROR with the reason, a new
  instruction recovers; the other target is unaffected.
- A model that fails to load at configure (XMem with a missing, then a corrupt checkpoint; a backend given an
  option it does not take): configure fails with a message naming the cause, the lifecycle node stays
  UNCONFIGURED and alive, and configures and tracks once the parameters are fixed.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from rosutil import ros_node, wait_until
from test_reliability_support import ACTIVATE, CONFIGURE, Client, LifecycleClient, mask_of, moving_squares, start_node

pytestmark = pytest.mark.ros


class Feeder:
    """Streams the moving-squares scene, one frame per call (results are only published with frames)."""

    def __init__(self, client: Client, n_frames: int = 120) -> None:
        self.client = client
        self.frames, self.masks = moving_squares(n_frames, 120, 160, size=24)
        self.t = 0

    def __call__(self) -> None:
        index = self.t % len(self.frames)
        self.client.send_frame(self.t, self.frames[index], index)
        self.t += 1
        time.sleep(0.03)

    def pump(self, n: int) -> None:
        for _ in range(n):
            self()

    def track(self, text: str, target_id: str, what: str) -> tuple:
        """Instruct ``target_id`` and stream frames until it reports TRACKING; the (array, result) that did."""
        self.client.say(text, target_id)
        return self.client.wait_result(target_id, _tracking, 20, self, what)

    def mask_ok(self, array, result, colour: str) -> bool:
        index = self.client.frame_of(array)
        return index is not None and np.array_equal(mask_of(result), self.masks[colour][index])


def _tracking(result) -> bool:
    return result.status == result.STATUS_TRACKING


def _stop(proc) -> str:
    code = proc.stop()
    log = proc.output()
    assert code in (0, -2, 130), f"node exited with {code}:\n{log[-3000:]}"
    assert "Traceback" not in log, log[-5000:]
    return log


def test_segmenter_faults_mid_inference_set_error_and_recover():
    from diagnostic_msgs.msg import DiagnosticStatus

    proc = start_node(qos_reliability="reliable", qos_depth=50, segmenter_options={"delay_s": 0.3})
    try:
        with ros_node("faults_client") as h:
            c = Client(h)
            feed = Feeder(c)
            feed.pump(3)
            feed.track("blue", "ok", "target ok tracking")
            ok_tracking_since = len(c.results)
            cases = {
                "fail": "scripted segmenter failure",
                "nan": "non-finite score",
                "oom": "out of memory",
            }
            for word, reason in cases.items():
                c.say(f"red {word}", "bad")
                array, result = c.wait_result(
                    "bad", lambda r: r.status == r.STATUS_ERROR, 20, feed, f"ERROR for 'red {word}'"
                )
                assert reason in result.reason, result.reason
                assert result.instruction == f"red {word}" and result.mask.width == 0
                other = {r.target_id: r for r in array.results}["ok"]
                assert _tracking(other) and feed.mask_ok(array, other, "blue")

                def diagnostics_report_the_error(expected=reason):
                    feed()
                    status = c.diagnostic_status()
                    values = {kv.key: kv.value for kv in status.values}
                    return status.level == DiagnosticStatus.ERROR and expected in values.get("target[bad]", "")

                wait_until(diagnostics_report_the_error, 10, f"/diagnostics ERROR naming {reason!r}")
                c.say("red", "bad")  # the next instruction recovers
                array, result = c.wait_result(
                    "bad", lambda r: _tracking(r) and r.instruction == "red", 20, feed, "recovery"
                )
                assert feed.mask_ok(array, result, "red")
            feed.pump(5)
            # The other target was never disturbed: TRACKING with its exact mask on every frame since it started.
            with c.results._condition:
                arrays = list(c.results.messages[ok_tracking_since:])
            checked = 0
            for array in arrays:
                for result in array.results:
                    if result.target_id == "ok":
                        assert _tracking(result) and feed.mask_ok(array, result, "blue")
                        checked += 1
            assert checked > 20
            assert int(c.diagnostic_values()["backend_errors"]) >= 3
    finally:
        log = _stop(proc)
    for reason in ("scripted segmenter failure", "non-finite score", "out of memory"):
        assert "target 'bad'" in log and reason in log


def test_tracker_fault_during_live_tracking_sets_error_and_recovers():
    # Every tracker session fails after 80 steps; a 1 s window keeps the backward pass of a new instruction
    # (one session over the stored frames) under that, so only live tracking trips it.
    proc = start_node(
        qos_reliability="reliable", qos_depth=50, window_duration_s=1.0, tracker_options={"fail_after": 80}
    )
    try:
        with ros_node("tracker_faults_client") as h:
            c = Client(h)
            feed = Feeder(c)
            feed.pump(3)
            feed.track("red", "t", "target t tracking")
            feed.pump(10)
            feed.track("green", "u", "target u tracking")  # its session starts later, so it fails later
            array, result = c.wait_result("t", lambda r: r.status == r.STATUS_ERROR, 30, feed, "tracker failure")
            assert "scripted tracker failure" in result.reason
            other = {r.target_id: r for r in array.results}["u"]
            assert _tracking(other) and feed.mask_ok(array, other, "green")
            array, result = feed.track("red", "t", "recovery after the tracker failure")
            assert feed.mask_ok(array, result, "red")
    finally:
        _stop(proc)


def test_model_that_fails_to_load_at_configure_is_reported_and_can_be_configured_again(tmp_path):
    missing = tmp_path / "missing" / "XMem.pth"
    corrupt = tmp_path / "XMem.pth"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    proc = start_node(
        ready="configure failed",
        wait_for_lifecycle_manager=True,  # stay up after the failed autostart configure (default: exit 1)
        tracker="xmem",
        tracker_options={"checkpoint": str(missing)},
    )
    try:
        with ros_node("configure_client") as h:
            lifecycle = LifecycleClient(h)

            def set_string(name: str, value: str) -> None:
                assert lifecycle.set_string(name, value).successful

            log = proc.output()
            assert f"XMem checkpoint not found: {missing}" in log, log[-2000:]
            assert lifecycle.state() == "unconfigured"
            set_string("tracker_options", json.dumps({"checkpoint": str(corrupt)}))
            assert not lifecycle.transition(CONFIGURE)
            proc.wait_for_output(f"unusable XMem checkpoint: cannot read {corrupt}", timeout=10)
            assert lifecycle.state() == "unconfigured"
            set_string("tracker", "scripted")
            set_string("tracker_options", '{"no_such_option": 1}')
            assert not lifecycle.transition(CONFIGURE)
            proc.wait_for_output("bad options for tracker backend 'scripted'", timeout=10)
            assert lifecycle.state() == "unconfigured" and proc.returncode is None
            set_string("tracker_options", "{}")
            assert lifecycle.transition(CONFIGURE) and lifecycle.state() == "inactive"
            assert lifecycle.transition(ACTIVATE)
            c = Client(h)
            feed = Feeder(c)
            feed.pump(3)
            array, result = feed.track("red", "after", "tracking after the fixed configure")
            assert feed.mask_ok(array, result, "red")
    finally:
        _stop(proc)
