"""The perception node's output side: its publishers, and the translation of the core's outputs into messages.

``core.results`` builds everything a frame produces (masks, boxes, points, 3D points, label image, overlay) and
the diagnostics report without ROS; this module only turns them into ``TargetResultArray``, ``PointStamped``,
``Image`` and ``DiagnosticArray`` messages and publishes them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import Image

from ..core.overlay import draw_overlay
from ..core.results import DiagnosticsReport, FrameOutput, TargetOutput
from ..core.types import Frame
from ..msg import TargetResult, TargetResultArray
from .conversions import mask_to_image_msg, numpy_to_image_msg
from .topic_names import target_topic_token


class OutputPublishers:
    """Publishers of one activation of the node (created by ``open``, destroyed by ``close``).

    Every publish runs under one lock that ``close`` also holds while it destroys the publishers: nothing is
    published by a deactivated node, nor through a destroyed publisher. Per-target point publishers
    (``~/point/<target_id>``) are created on a target's first 3D point and destroyed when it is reset.
    """

    def __init__(self, node: Any) -> None:
        self._node = node
        self._lock = threading.Lock()
        self.publishers: dict[str, Any] = {}
        self._points: dict[str, Any] = {}
        self.last_debug = 0.0  # monotonic time of the last debug image (its rate limit)
        self.latency: deque[float] = deque(maxlen=200)  # seconds per live frame published

    @property
    def is_open(self) -> bool:
        return bool(self.publishers)

    def open(self) -> None:
        node = self._node
        self.publishers = {
            "results": node.create_publisher(TargetResultArray, "~/results", 10),
            "history": node.create_publisher(TargetResultArray, "~/results_history", 50),
            "labels": node.create_publisher(Image, "~/labels", 10),
            "debug": node.create_publisher(Image, "~/debug_image", 2),
            "diagnostics": node.create_publisher(DiagnosticArray, "/diagnostics", 10),
        }

    def close(self) -> None:
        with self._lock:
            publishers = [*self.publishers.values(), *self._points.values()]
            self.publishers, self._points = {}, {}
        for publisher in publishers:
            self._node.destroy_publisher(publisher)

    def stop(self, timeout: float) -> bool:
        """Wait for a publish in flight and keep any later one from starting (before the node is destroyed: a
        publisher in use keeps the node, the context and the DDS participant alive); False on timeout."""
        return self._lock.acquire(timeout=timeout)

    def forget_target(self, target_id: str) -> None:
        """Destroy the point publisher of a reset target."""
        with self._lock:
            publisher = self._points.pop(target_id, None)
        if publisher is not None:
            self._node.destroy_publisher(publisher)

    def publish_frame(self, frame: Frame, output: FrameOutput, debug_rate_hz: float, started: float) -> None:
        """Live results (results, 3D points, labels, debug image) or, for a past frame, the history topic.
        ``started``: ``time.perf_counter()`` when the caller began building ``output``; the latency of live
        frames (diagnostics ``publish_ms_median``) counts from there."""
        with self._lock:
            if not self.publishers:
                return
            header = output.header
            array = TargetResultArray(header=header, results=[target_msg(t, header) for t in output.targets])
            if not output.live:
                self.publishers["history"].publish(array)
                return
            for target, msg in zip(output.targets, array.results, strict=True):
                if target.point_3d is not None:
                    self.point_publisher(target.target_id).publish(PointStamped(header=header, point=msg.point_3d))
            self.publishers["results"].publish(array)
            if output.labels is not None:
                self.publishers["labels"].publish(numpy_to_image_msg(output.labels, "mono8", header))
            self._maybe_publish_debug(frame, output, debug_rate_hz)
        self.latency.append(time.perf_counter() - started)

    def publish_diagnostics(self, report: DiagnosticsReport) -> None:
        node = self._node
        status = DiagnosticStatus(
            level=getattr(DiagnosticStatus, report.level.name),
            name=f"{node.get_name()}: perception",
            message=report.message,
            hardware_id="reasonvos_ros",
            values=[KeyValue(key=k, value=v) for k, v in report.values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = node.get_clock().now().to_msg()
        with self._lock:
            publisher = self.publishers.get("diagnostics")
            if publisher is not None:
                publisher.publish(array)

    def point_publisher(self, target_id: str) -> Any:
        publisher = self._points.get(target_id)
        if publisher is None:
            publisher = self._node.create_publisher(PointStamped, f"~/point/{target_topic_token(target_id)}", 10)
            self._points[target_id] = publisher
        return publisher

    def _maybe_publish_debug(self, frame: Frame, output: FrameOutput, rate_hz: float) -> None:
        now = time.monotonic()
        if rate_hz <= 0 or now - self.last_debug < 1.0 / rate_hz:
            return
        node = self._node
        if node.count_subscribers(node.resolve_topic_name("~/debug_image")) == 0:
            return  # the overlay is only drawn when someone looks at it
        self.last_debug = now
        image = draw_overlay(frame.image, output.overlay, status_text=f"frame {frame.index}")
        self.publishers["debug"].publish(numpy_to_image_msg(image, "rgb8", output.header))


def time_msg(seconds: float | None) -> TimeMsg:
    if seconds is None:
        return TimeMsg()
    nanoseconds = round(seconds * 1e9)
    return TimeMsg(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def target_msg(target: TargetOutput, header: Any) -> TargetResult:
    msg = TargetResult(header=header, target_id=target.target_id, instruction=target.instruction)
    msg.status, msg.reason, msg.score = int(target.status), target.reason, target.score
    if target.keyframe_header is not None:  # the key frame's own header stamp, integers untouched
        stamp = target.keyframe_header.stamp
        msg.keyframe_stamp = TimeMsg(sec=stamp.sec, nanosec=stamp.nanosec)
    else:
        msg.keyframe_stamp = time_msg(target.keyframe_stamp)
    if target.understanding is not None:
        msg.target_phrase = target.understanding.target_phrase
        msg.explanation = target.understanding.explanation
        msg.understanding_confidence = float(target.understanding.confidence)
    if target.mask is None:
        msg.mask = Image(header=header, encoding="mono8")
        return msg
    msg.bbox_x, msg.bbox_y, msg.bbox_width, msg.bbox_height = target.bbox
    msg.point_x, msg.point_y = target.point
    msg.mask = mask_to_image_msg(target.mask, header)
    if target.point_3d is not None:
        msg.point_3d.x, msg.point_3d.y, msg.point_3d.z = target.point_3d
        msg.point_3d_valid = True
    return msg


def median_or_none(values: deque[float]) -> float | None:
    samples = list(values)
    return float(np.median(samples)) if samples else None
