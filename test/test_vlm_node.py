"""The perception node with ``segmenter: vlm_sam`` reasoning through a served VLM: three real processes (this test,
the node, the minimal OpenAI-compatible server running a tiny random Qwen3-VL whose decoding is constrained to a
chosen answer), talking over rclpy and HTTP."""

from __future__ import annotations

import time

import pytest
from rosutil import ros_node
from scenes import square_scene
from test_perception_node import Client, node_args

from reasonvos_ros.models.vlm.chat_server import start_server_process, stop_server_process
from reasonvos_ros.models.vlm.tiny import build_tiny_qwen_vl, build_tiny_sam

pytestmark = pytest.mark.ros

ANSWER = '{"frame": 5, "not_present": true, "label": "bottle opener", "explanation": "no opener is visible"}'


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm_node")
    vlm_dir = build_tiny_qwen_vl(root / "qwen3_vl", "qwen3_vl")
    sam_dir = build_tiny_sam(root / "sam2", "sam2")
    process, url = start_server_process(vlm_dir, "--model-name", "tiny", "--force-answer", ANSWER)
    yield url, sam_dir
    stop_server_process(process)


@pytest.mark.slow  # ~50 s on the shared 2-core machine: two extra processes load torch + transformers
def test_node_reports_what_the_served_vlm_understood(served):
    from rosutil import spawn_python

    from reasonvos_ros.msg import TargetResult

    url, sam_dir = served
    options = {
        "server_url": url,
        "server_model": "tiny",
        "family": "qwen3_vl",
        "sam_dir": str(sam_dir),
        "device": "cpu",
        "timeout_s": 60,
        "retries": 0,
    }
    args = node_args(segmenter="vlm_sam", segmenter_options=options, not_present_retry_s=600.0)
    node = spawn_python(module="reasonvos_ros.ros.perception_node", args=args, name="perception_vlm")
    try:
        node.wait_for_output("active: subscribed", timeout=60)
        images, _ = square_scene(30, objects={"red": (10, 20, 2, 1, 24)})
        with ros_node("client") as h:
            c = Client(h)
            for t in range(8):
                c.send_frame(t, images[t])
                time.sleep(0.03)
            c.say("the thing I would use to open this bottle")
            clock = {"t": 8, "last": 0.0}

            def feed():  # statuses are published with frames: keep ~10 frames/s coming until the answer lands
                if time.monotonic() - clock["last"] >= 0.1:
                    c.send_frame(clock["t"], images[clock["t"] % len(images)])
                    clock["t"] += 1
                    clock["last"] = time.monotonic()

            _, result = c.wait_status("default", TargetResult.STATUS_NOT_PRESENT, timeout=60, feed=feed)
        assert result.reason == "VLM: no opener is visible"
        assert result.target_phrase == "bottle opener" and result.explanation == "no opener is visible"
        assert result.understanding_confidence == 0.0  # the answer gave no confidence
    finally:
        code = node.stop()
    assert code in (0, -2, 130), f"node exited with {code}:\n{node.output()[-3000:]}"
