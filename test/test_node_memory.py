"""The node's ingest path, in process (callbacks called directly): memory bounds of per-frame data and the
depth-synchronisation warning."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros


@pytest.fixture
def depth_node():
    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions
    from rosutil import configure_this_process, ros_domain_id

    from reasonvos_ros.ros.perception_node import PerceptionNode

    configure_this_process()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    params = {"sampler": "scripted", "segmenter": "scripted", "tracker": "scripted", "use_depth": True}
    node = PerceptionNode(
        context=context,
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
        namespace="/ingest_test",
    )
    try:
        assert node.trigger_configure().name == "SUCCESS"
        assert node.trigger_activate().name == "SUCCESS"
        yield node
    finally:
        node.trigger_deactivate()
        node.trigger_cleanup()
        node.destroy_node()
        context.try_shutdown()


HEIGHT, WIDTH = 120, 160


def camera_messages(t: int):
    """Colour, depth and camera_info of frame ``t`` at 30 Hz, all with the same header."""
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 100 + t // 30, (t % 30) * 33_000_000
    colour = Image(header=header, height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3)
    colour.data = np.full((HEIGHT, WIDTH, 3), 90, np.uint8).tobytes()
    depth = Image(header=header, height=HEIGHT, width=WIDTH, encoding="32FC1", step=WIDTH * 4)
    depth.data = np.full((HEIGHT, WIDTH), 1.5, np.float32).tobytes()
    info = CameraInfo(header=header, height=HEIGHT, width=WIDTH, k=[100.0, 0, 80, 0, 100.0, 60, 0, 0, 1])
    return colour, depth, info


def test_depth_is_not_kept_in_the_window_beyond_the_depth_cache(depth_node):
    """Every depth image used to ride along in the window's frame metadata: 10 s of 640x480 at 30 Hz held ~370 MB
    of depth while only the JPEG colour counted against window_max_mb. Now only the bounded depth cache holds depth."""
    from reasonvos_ros.core.ingest import DEPTH_CACHE_FRAMES

    node = depth_node
    frames = 40
    for t in range(frames):
        colour, depth, info = camera_messages(t)
        node._on_image(colour)
        node._on_depth(depth)
        node._on_camera_info(info)
    stored = node.window.snapshot()
    assert len(stored) == frames
    held_by_window = sum(v.nbytes for f in stored for v in vars(f.meta).values() if isinstance(v, np.ndarray))
    assert held_by_window == 0
    assert 0 < node.ingest.depth_frames() <= DEPTH_CACHE_FRAMES
    # The newest frames still have their depth for the 3D point of live results.
    newest = node.ingest.depth_for(stored[-1])
    assert newest.depth_m.shape == (HEIGHT, WIDTH) and newest.intrinsics is not None


def test_occasional_depth_drops_are_not_reported_as_a_misconfiguration(depth_node):
    """Best-effort transports drop single messages: every third depth image missing only costs those frames. A
    warning telling the user to check the topics is for a run of frames that found no match at all."""
    node = depth_node
    for t in range(120):
        colour, depth, info = camera_messages(t)
        node._on_image(colour)
        if t % 3:
            node._on_depth(depth)
        node._on_camera_info(info)
    assert node.rejections.counts.get("unsynchronised_image", 0) == 0
    assert len(node.window) > 0
    for t in range(120, 160):  # the depth stream stops
        colour, _, info = camera_messages(t)
        node._on_image(colour)
        node._on_camera_info(info)
    assert node.rejections.counts.get("unsynchronised_image", 0) >= 1
