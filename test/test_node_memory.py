"""Memory bounds of the node's per-frame data (an in-process node driven through its ingest path)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros


def test_depth_is_not_kept_in_the_window_beyond_the_depth_cache():
    """Every depth image used to ride along in the window's frame metadata: 10 s of 640x480 at 30 Hz held ~370 MB
    of depth while only the JPEG colour counted against window_max_mb. Now only the bounded depth cache holds depth."""
    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions
    from rosutil import configure_this_process, ros_domain_id
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from reasonvos_ros.ros import perception_node
    from reasonvos_ros.ros.perception_node import PerceptionNode

    configure_this_process()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    params = {"sampler": "scripted", "segmenter": "scripted", "tracker": "scripted", "use_depth": True}
    node = PerceptionNode(
        context=context,
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
        namespace="/memory_test",
    )
    try:
        assert node.trigger_configure().name == "SUCCESS"
        height, width, frames = 120, 160, 40
        rgb = np.full((height, width, 3), 90, np.uint8)
        depth = Image(height=height, width=width, encoding="32FC1", step=width * 4)
        depth.data = np.full((height, width), 1.5, np.float32).tobytes()
        info = CameraInfo(height=height, width=width, k=[100.0, 0, 80, 0, 100.0, 60, 0, 0, 1])
        for t in range(frames):
            header = Header(frame_id="cam")
            header.stamp.sec, header.stamp.nanosec = 100 + t // 30, (t % 30) * 33_000_000
            node._ingest(header, rgb, depth, info)
        stored = node.window.snapshot()
        assert len(stored) == frames
        held_by_window = sum(f.meta.depth_m.nbytes for f in stored if f.meta.depth_m is not None)
        assert held_by_window == 0
        assert 0 < len(node._depth_cache) <= perception_node.DEPTH_CACHE_FRAMES
        # The newest frames still have their depth for the 3D point of live results.
        newest = node._depth_cache[stored[-1].index]
        assert newest.depth_m.shape == (height, width) and newest.intrinsics is not None
    finally:
        node.trigger_cleanup()
        node.destroy_node()
        context.try_shutdown()
