"""The live perception node (a managed lifecycle node). It only translates between ROS messages and the core.

Inputs: ``image`` (sensor_msgs/Image) or ``image/compressed``; optional ``depth`` + ``camera_info`` (synchronised
with the colour image); ``instruction`` (reasonvos_ros/Instruction) and ``instruction_text`` (std_msgs/String, for
target "default"). Outputs: ``~/results`` (TargetResultArray, header of the source image), ``~/results_history``
(results computed on past frames), ``~/labels`` (mono8 label image), ``~/point/<target_id>`` (PointStamped),
``~/debug_image`` and ``/diagnostics``. Services: ``~/reset`` (ResetTargets), ``~/enable`` (std_srvs/SetBool).

Lifecycle: configure validates parameters and loads the backends; activate subscribes and starts the workers;
deactivate stops them and frees accelerator memory; cleanup unloads the backends.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import SetBool

from ..core.engine import LiveEngine
from ..core.errors import ReasonVosError
from ..core.geometry import Intrinsics, deproject, robust_depth
from ..core.overlay import OverlayTarget, draw_overlay
from ..core.pipeline import FrameResult
from ..core.registry import build_backend
from ..core.sync import ApproximateTimeSynchronizer
from ..core.types import Frame
from ..core.window import RollingWindow
from ..msg import Instruction, TargetResult, TargetResultArray
from ..srv import ResetTargets
from .conversions import (
    ConversionError,
    depth_msg_to_metres,
    image_msg_to_rgb,
    mask_to_image_msg,
    numpy_to_image_msg,
    stamp_to_seconds,
)
from .parameters import PARAMETERS, NodeSettings, parameter_descriptor

NODE_NAME = "reasonvos_perception"
DEPTH_CACHE_FRAMES = 8  # depth is only needed for the newest frames (3D points of live results)
# A stamp this much older than its stream's previous one starts a new time line (bag loop, simulation reset);
# the rolling window uses the same threshold to clear itself. Smaller steps back are out-of-order messages.
TIME_JUMP_BACK_S = 1.0
MAX_LOGGED_CHARS = 300  # rejected inputs can be megabytes (a 1 MB instruction): log lines show the start only


@dataclass
class FrameMeta:
    header: Any
    depth_m: np.ndarray | None = None
    intrinsics: Intrinsics | None = None


class RejectionCounter:
    """Counts rejected inputs per category (reported in diagnostics) and rate-limits their log lines."""

    def __init__(self, logger, period_s: float = 5.0) -> None:
        self.logger = logger
        self.period_s = period_s
        self.counts: dict[str, int] = {}
        self._last_log: dict[str, float] = {}
        self._lock = threading.Lock()

    def reject(self, category: str, message: str) -> None:
        now = time.monotonic()
        # Rate-limit per kind of problem (numbers masked), so one flood cannot hide a different problem.
        key = category + ":" + re.sub(r"\d+(\.\d+)?", "#", message)[:80]
        with self._lock:
            self.counts[category] = self.counts.get(category, 0) + 1
            if now - self._last_log.get(key, -1e9) < self.period_s:
                return
            self._last_log[key] = now
            count = self.counts[category]
        if len(message) > MAX_LOGGED_CHARS:
            message = message[:MAX_LOGGED_CHARS] + f"... ({len(message)} characters)"
        self.logger.warning(f"rejected {category} ({count} so far): {message}")

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


def _time_msg(seconds: float | None) -> TimeMsg:
    if seconds is None:
        return TimeMsg()
    nanoseconds = round(seconds * 1e9)
    return TimeMsg(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def _topic_safe(target_id: str) -> str:
    """A valid ROS name token for a target id (tokens must not start with a digit, e.g. target "1")."""
    token = re.sub(r"[^A-Za-z0-9_]", "_", target_id) or "_"
    return "_" + token if token[0].isdigit() else token


class PerceptionNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for param in PARAMETERS:
            self.declare_parameter(param.name, param.default, parameter_descriptor(param))
        self.rejections = RejectionCounter(self.get_logger())
        self.settings: NodeSettings | None = None
        self.engine: LiveEngine | None = None
        self.window: RollingWindow | None = None
        self.backends: dict[str, Any] = {}
        self._input_subs: list[Any] = []
        self._outputs: dict[str, Any] = {}
        self._point_outputs: dict[str, Any] = {}
        self._node_timers: list[Any] = []
        self._node_services: list[Any] = []
        self._depth_cache: OrderedDict[int, FrameMeta] = OrderedDict()
        self._sync: ApproximateTimeSynchronizer | None = None
        self._input_times: deque[float] = deque(maxlen=120)
        self._frames_received = 0
        self._frames_synced = 0
        self._last_stamps: dict[str, float] = {}  # per input stream, to drop duplicates / out-of-order messages
        self._newest_stamp = -math.inf  # newest stamp accepted on any stream since the last jump back
        self._time_jumps = 0
        self._last_debug = 0.0
        self._publish_latency: deque[float] = deque(maxlen=200)
        self._ingest_cost: deque[float] = deque(maxlen=200)
        self._lock = threading.Lock()
        self._inputs_group = MutuallyExclusiveCallbackGroup()
        self._control_group = ReentrantCallbackGroup()

    # ------------------------------------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = {p.name: self.get_parameter(p.name).value for p in PARAMETERS}
        try:
            self.settings = NodeSettings.from_values(values)
            self.backends = {
                role: build_backend(role, spec["name"], spec["options"])
                for role, spec in self.settings.backends.items()
            }
        except ReasonVosError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self.backends = {}
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # a backend that fails to load must not take the node down
            self.get_logger().error(f"configure failed while loading the backends: {type(exc).__name__}: {exc}")
            self.backends = {}
            return TransitionCallbackReturn.FAILURE
        s = self.settings
        self.window = RollingWindow(
            max_duration_s=s.window_duration_s,
            max_bytes=int(s.window_max_mb * 1024 * 1024),
            storage=s.window_storage,
            jpeg_quality=s.window_jpeg_quality,
        )
        from ..core.pipeline import Pipeline

        pipeline = Pipeline(self.backends["sampler"], self.backends["segmenter"], self.backends["tracker"], s.pipeline)
        self.engine = LiveEngine(pipeline, self.window, self._on_results, s.max_targets, self._on_engine_event)
        self.engine.set_enabled(s.enabled)
        self._node_services = [
            self.create_service(ResetTargets, "~/reset", self._on_reset, callback_group=self._control_group),
            self.create_service(SetBool, "~/enable", self._on_enable, callback_group=self._control_group),
        ]
        backends = ", ".join(f"{role}={spec['name']}" for role, spec in s.backends.items())
        self.get_logger().info(f"configured: {backends}; window {s.window_duration_s} s / {s.window_max_mb} MB")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        s = self.settings
        reliability = ReliabilityPolicy.RELIABLE if s.qos_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        camera_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=s.qos_depth,
            reliability=reliability,
            durability=qos_profile_sensor_data.durability,
        )
        image_type, image_topic = (
            (Image, "image") if s.image_transport == "raw" else (CompressedImage, "image/compressed")
        )
        group = self._inputs_group
        subs = [self.create_subscription(image_type, image_topic, self._on_image, camera_qos, callback_group=group)]
        if s.use_depth:
            self._sync = ApproximateTimeSynchronizer(3, s.sync_queue_size, s.sync_slop_s, self._on_synced)
            subs.append(self.create_subscription(Image, "depth", self._on_depth, camera_qos, callback_group=group))
            subs.append(
                self.create_subscription(
                    CameraInfo, "camera_info", self._on_camera_info, camera_qos, callback_group=group
                )
            )
        control = self._control_group
        subs.append(
            self.create_subscription(Instruction, "instruction", self._on_instruction, 10, callback_group=control)
        )
        subs.append(
            self.create_subscription(String, "instruction_text", self._on_instruction_text, 10, callback_group=control)
        )
        self._input_subs = subs
        self._outputs = {
            "results": self.create_publisher(TargetResultArray, "~/results", 10),
            "history": self.create_publisher(TargetResultArray, "~/results_history", 50),
            "labels": self.create_publisher(Image, "~/labels", 10),
            "debug": self.create_publisher(Image, "~/debug_image", 2),
            "diagnostics": self.create_publisher(DiagnosticArray, "/diagnostics", 10),
        }
        self._node_timers = [
            self.create_timer(s.diagnostics_period_s, self._publish_diagnostics, callback_group=control)
        ]
        self.engine.start()
        self.get_logger().info(
            f"active: subscribed to '{self.resolve_topic_name(image_topic)}' ({image_type.__name__}, "
            f"QoS {s.qos_reliability}, depth {s.qos_depth})"
            + (f", '{self.resolve_topic_name('depth')}' + camera_info (slop {s.sync_slop_s} s)" if s.use_depth else "")
        )
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        for backend in self.backends.values():
            backend.release()
        self.get_logger().info("inactive: inputs unsubscribed, workers stopped, accelerator memory released")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unload()
        self.get_logger().info("unconfigured: backends unloaded")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._unload()
        return TransitionCallbackReturn.SUCCESS

    def _stop_processing(self) -> None:
        if self.engine is not None:
            self.engine.stop()
        for sub in self._input_subs:
            self.destroy_subscription(sub)
        for timer in self._node_timers:
            self.destroy_timer(timer)
        for pub in [*self._outputs.values(), *self._point_outputs.values()]:
            self.destroy_publisher(pub)
        self._input_subs, self._node_timers, self._outputs, self._point_outputs = [], [], {}, {}
        self._sync = None
        if self.window is not None:
            self.window.clear()
        self._depth_cache.clear()
        self._last_stamps.clear()
        self._newest_stamp = -math.inf

    def _unload(self) -> None:
        for service in self._node_services:
            self.destroy_service(service)
        self._node_services = []
        for backend in self.backends.values():
            backend.release()
        self.backends = {}
        self.engine = None
        self.window = None

    # ------------------------------------------------------------------------------------------------ inputs
    def _on_image(self, msg: Any) -> None:
        start = time.perf_counter()
        self._frames_received += 1
        self._input_times.append(time.monotonic())
        try:
            rgb = image_msg_to_rgb(msg)
        except ConversionError as exc:
            self.rejections.reject("image", str(exc))
            return
        stamp = stamp_to_seconds(msg.header.stamp)
        if not self._accept_stamp("image", stamp):
            return
        if self._sync is not None:
            self._sync.add(0, stamp, (msg.header, rgb))
            self._warn_if_unsynchronised()
        else:
            self._ingest(msg.header, rgb, None, None)
        self._ingest_cost.append(time.perf_counter() - start)

    def _warn_if_unsynchronised(self) -> None:
        """With use_depth, frames without a matching depth + camera_info never reach the window: say so."""
        waiting = self._frames_received - self._frames_synced
        if waiting > 2 * self.settings.sync_queue_size:
            self.rejections.reject(
                "unsynchronised_image",
                f"{waiting} colour frames had no depth + camera_info within {self.settings.sync_slop_s} s; check the "
                f"'{self.resolve_topic_name('depth')}' and '{self.resolve_topic_name('camera_info')}' topics, or set "
                "use_depth false",
            )
            self._frames_synced = self._frames_received  # report again only after another full backlog

    def _on_depth(self, msg: Image) -> None:
        stamp = stamp_to_seconds(msg.header.stamp)
        if self._accept_stamp("depth", stamp):
            self._sync.add(1, stamp, msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        stamp = stamp_to_seconds(msg.header.stamp)
        if self._accept_stamp("camera_info", stamp):
            self._sync.add(2, stamp, msg)

    def _accept_stamp(self, stream: str, stamp: float) -> bool:
        """False (rejected and counted) for a stamp not newer than the stream's previous one. A jump back by more
        than TIME_JUMP_BACK_S starts a new time line instead: the synchroniser restarts (it would otherwise drop
        every message older than the last set it delivered) and the window clears itself."""
        last = self._last_stamps.get(stream)
        if last is not None and stamp <= last:
            if last - stamp <= TIME_JUMP_BACK_S:
                self.rejections.reject(
                    stream,
                    f"stamp {stamp:.3f} s is not newer than the previous {stream} message ({last:.3f} s): "
                    "duplicate or out of order; dropped",
                )
                return False
            # All streams of a camera jump; the first one restarts the synchroniser, the others catch up (they
            # land near the newest stamp of the new time line).
            if stamp < self._newest_stamp - TIME_JUMP_BACK_S:
                self._newest_stamp = stamp
                self._time_jumps += 1
                if self._sync is not None:
                    self._sync.reset()
                self.get_logger().warning(
                    f"time jumped back {last - stamp:.1f} s on '{stream}' (bag loop or clock reset): "
                    "starting a new time line with an empty window",
                    throttle_duration_sec=5.0,
                )
        self._last_stamps[stream] = stamp
        self._newest_stamp = max(self._newest_stamp, stamp)
        return True

    def _on_synced(self, image, depth, info) -> None:
        self._frames_synced += 1
        header, rgb = image.payload
        self._ingest(header, rgb, depth.payload, info.payload)

    def _ingest(self, header: Any, rgb: np.ndarray, depth_msg: Image | None, info_msg: CameraInfo | None) -> None:
        meta = FrameMeta(header)
        if depth_msg is not None:
            meta.depth_m, meta.intrinsics = self._depth_and_intrinsics(depth_msg, info_msg, rgb.shape[:2])
        try:
            frame = self.window.add(rgb, stamp_to_seconds(header.stamp), meta)
        except ValueError as exc:
            self.rejections.reject("image", str(exc))
            return
        if meta.depth_m is not None:
            with self._lock:
                self._depth_cache[frame.index] = meta
                while len(self._depth_cache) > DEPTH_CACHE_FRAMES:
                    self._depth_cache.popitem(last=False)
        self.engine.notify_frame()

    def _depth_and_intrinsics(self, depth_msg, info_msg, shape) -> tuple[np.ndarray | None, Intrinsics | None]:
        try:
            depth = depth_msg_to_metres(depth_msg)
        except ConversionError as exc:
            self.rejections.reject("depth", str(exc))
            return None, None
        if depth.shape != tuple(shape):
            self.rejections.reject(
                "depth",
                f"depth is {depth.shape[1]}x{depth.shape[0]}, colour is {shape[1]}x{shape[0]}; "
                "depth must be registered to the colour image",
            )
            return None, None
        if not np.isfinite(depth).any():
            self.rejections.reject("depth", "depth image has no valid pixel (all NaN/Inf/0)")
        try:
            # Rectified images: P holds the intrinsics of the rectified camera; fall back to K when P is unset.
            p = list(info_msg.p)
            k = [p[0], 0.0, p[2], 0.0, p[5], p[6], 0.0, 0.0, 1.0] if p[0] > 0 else list(info_msg.k)
            intrinsics = Intrinsics.from_camera_info_k(k)
            intrinsics.validate()
        except ValueError as exc:
            self.rejections.reject("camera_info", f"{exc}; 3D points disabled for this frame")
            return depth, None
        return depth, intrinsics

    def _on_instruction(self, msg: Instruction) -> None:
        self._set_instruction(msg.target_id, msg.text, "speech" if msg.source == Instruction.SOURCE_SPEECH else "text")

    def _on_instruction_text(self, msg: String) -> None:
        self._set_instruction("default", msg.data, "text")

    def _set_instruction(self, target_id: str, text: str, source: str) -> None:
        if self.engine is None:
            return
        try:
            state = self.engine.set_instruction(target_id, text)
        except ValueError as exc:
            self.rejections.reject("instruction", f"target {target_id!r}: {exc}")
            return
        self.get_logger().info(f"instruction for {state.target_id!r} ({source}): {state.instruction!r}")
        if len(self.window) == 0:
            self.get_logger().warning(
                f"instruction for {state.target_id!r} arrived before the first camera frame; "
                f"it will run when frames arrive on '{self.resolve_topic_name('image')}'"
            )

    def _on_reset(self, request, response):
        target_id = request.target_id.strip()
        if self.engine is None:
            response.success, response.message = False, "node is not configured"
        elif self.engine.reset(target_id or None):
            response.success = True
            response.message = f"reset {target_id!r}" if target_id else "reset all targets"
            if target_id in self._point_outputs:
                self.destroy_publisher(self._point_outputs.pop(target_id))
        else:
            response.success = False
            known = ", ".join(sorted(self.engine.targets())) or "none"
            response.message = f"unknown target {target_id!r} (known: {known})"
            self.rejections.reject("reset", response.message)
        return response

    def _on_enable(self, request, response):
        if self.engine is None:
            response.success, response.message = False, "node is not configured"
            return response
        self.engine.set_enabled(request.data)
        response.success = True
        response.message = "processing enabled" if request.data else "processing paused"
        self.get_logger().info(response.message)
        return response

    # ------------------------------------------------------------------------------------------------ outputs
    def _on_engine_event(self, level: str, text: str) -> None:
        if not self.context.ok():  # shutting down: a worker's publish racing the context shutdown is expected
            return
        (self.get_logger().error if level == "error" else self.get_logger().warning)(text)

    def _on_results(self, frame: Frame, results: list[FrameResult], live: bool) -> None:
        start = time.perf_counter()
        publishers = self._outputs
        if not publishers or (not live and not self.settings.publish_history):
            return
        if not self.context.ok():  # shutting down (SIGINT/SIGTERM): the workers stop right after this
            return
        header = frame.meta.header
        with self._lock:
            meta = self._depth_cache.get(frame.index) if live else None
        array = TargetResultArray(header=header)
        labels = np.zeros(frame.image.shape[:2], np.uint8) if live and self.settings.publish_label_image else None
        overlay_targets = []
        for position, result in enumerate(results):
            msg, point_3d = self._result_msg(result, header, meta)
            array.results.append(msg)
            if labels is not None and result.mask is not None:
                labels[result.mask] = position + 1
            if live and point_3d is not None:
                self._point_publisher(result.target_id).publish(PointStamped(header=header, point=msg.point_3d))
            overlay_targets.append(
                OverlayTarget(
                    result.target_id,
                    result.mask,
                    result.bbox,
                    result.point,
                    result.status.name,
                    result.score,
                    result.instruction,
                    msg.target_phrase,
                    msg.understanding_confidence if msg.target_phrase else None,
                )
            )
        if live:
            publishers["results"].publish(array)
            if labels is not None:
                publishers["labels"].publish(numpy_to_image_msg(labels, "mono8", header))
            self._maybe_publish_debug(frame, overlay_targets, header)
            self._publish_latency.append(time.perf_counter() - start)
        else:
            publishers["history"].publish(array)

    def _result_msg(self, result: FrameResult, header, meta: FrameMeta | None) -> tuple[TargetResult, Any]:
        msg = TargetResult(header=header, target_id=result.target_id, instruction=result.instruction)
        msg.status = int(result.status)
        msg.reason = result.reason
        msg.score = float(result.score)
        msg.keyframe_stamp = _time_msg(result.keyframe_stamp)
        if result.understanding is not None:
            msg.target_phrase = result.understanding.target_phrase
            msg.explanation = result.understanding.explanation
            msg.understanding_confidence = float(result.understanding.confidence)
        point_3d = None
        if result.mask is not None:
            x, y, w, h = result.bbox
            msg.bbox_x, msg.bbox_y, msg.bbox_width, msg.bbox_height = x, y, w, h
            msg.point_x, msg.point_y = result.point
            msg.mask = mask_to_image_msg(result.mask, header)
            if meta is not None and meta.depth_m is not None and meta.intrinsics is not None:
                z = robust_depth(result.mask, meta.depth_m, erode_px=self.settings.depth_erode_px)
                if z is not None:
                    point_3d = deproject(msg.point_x, msg.point_y, z, meta.intrinsics)
                    msg.point_3d.x, msg.point_3d.y, msg.point_3d.z = point_3d
                    msg.point_3d_valid = True
        else:
            msg.mask = Image(header=header, encoding="mono8")
        return msg, point_3d

    def _point_publisher(self, target_id: str):
        pub = self._point_outputs.get(target_id)
        if pub is None:
            pub = self.create_publisher(PointStamped, f"~/point/{_topic_safe(target_id)}", 10)
            self._point_outputs[target_id] = pub
        return pub

    def _maybe_publish_debug(self, frame: Frame, targets: list[OverlayTarget], header) -> None:
        rate = self.settings.debug_image_rate_hz
        now = time.monotonic()
        if rate <= 0 or now - self._last_debug < 1.0 / rate:
            return
        if self.count_subscribers(self.resolve_topic_name("~/debug_image")) == 0:
            return
        self._last_debug = now
        image = draw_overlay(frame.image, targets, status_text=f"frame {frame.index}")
        self._outputs["debug"].publish(numpy_to_image_msg(image, "rgb8", header))

    def _publish_diagnostics(self) -> None:
        if self.engine is None or "diagnostics" not in self._outputs:
            return
        stats = self.engine.stats
        window = self.window.stats()
        times = list(self._input_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        values = {
            "input_rate_hz": f"{rate:.1f}",
            "frames_received": str(self._frames_received),
            "frames_rejected": str(self.rejections.total()),
            "time_jumps_back": str(self._time_jumps),
            "frames_skipped_by_tracker": str(stats.frames_skipped),
            "frames_processed": str(stats.frames_processed),
            "window_frames": str(window.frames),
            "window_seconds": f"{window.duration_s:.2f}",
            "window_mb": f"{window.bytes / 1e6:.2f}",
            "window_fill": f"{max(window.duration_s / self.settings.window_duration_s, window.bytes / (self.settings.window_max_mb * 1024 * 1024)):.2f}",
            "tracker_rate_hz": f"{stats.track_rate_hz:.1f}",
            "track_step_ms": f"{stats.track_step_s * 1e3:.1f}",
            "acquisitions": str(stats.acquisitions),
            "acquisitions_cancelled": str(stats.acquisitions_cancelled),
            "lost_events": str(stats.lost_events),
            "redetections": str(stats.redetections),
            "track_corrections": str(stats.track_corrections),
            "backend_errors": str(stats.errors),
        }
        for name, seconds in stats.last_timings.items():
            values[f"latency_{name[:-2]}_ms" if name.endswith("_s") else name] = (
                f"{seconds * 1e3:.1f}" if name.endswith("_s") else f"{seconds:.1f}"
            )
        for name, count in stats.last_counts.items():
            values[f"last_{name}"] = str(count)
        for category, count in sorted(self.rejections.counts.items()):
            values[f"rejected_{category}"] = str(count)
        if self._ingest_cost:
            values["ingest_ms_median"] = f"{np.median(self._ingest_cost) * 1e3:.2f}"
        if self._publish_latency:
            values["publish_ms_median"] = f"{np.median(self._publish_latency) * 1e3:.2f}"
        targets = self.engine.targets()
        for target_id, state in sorted(targets.items()):
            values[f"target[{target_id}]"] = (
                f"{state.status.name}: {state.reason}" if state.reason else state.status.name
            )
            if state.understanding is not None:
                understood = state.understanding
                values[f"understood[{target_id}]"] = (
                    f"{understood.target_phrase} ({understood.confidence:.2f}): {understood.explanation}"
                )
        level = DiagnosticStatus.OK
        message = f"{len(targets)} target(s)"
        if any(state.status.name == "ERROR" for state in targets.values()):
            level, message = DiagnosticStatus.ERROR, "a target reports a backend error"
        elif self.rejections.total():
            level, message = DiagnosticStatus.WARN, f"{self.rejections.total()} inputs rejected so far"
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: perception",
            message=message,
            hardware_id="reasonvos_ros",
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._outputs["diagnostics"].publish(array)


def _translate_args(argv: list[str]) -> list[str]:
    """Accept ``--params-file FILE`` before ``--ros-args`` as a shorthand (the launch-file equivalent)."""
    out, ros, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--params-file" and i + 1 < len(argv) and "--ros-args" not in argv[:i]:
            ros += ["--params-file", argv[i + 1]]
            i += 2
            continue
        out.append(argv[i])
        i += 1
    if ros:
        out = [*out, "--ros-args", *ros] if "--ros-args" not in out else [*out, *ros]
    return out


def main(argv: list[str] | None = None) -> int:
    args = _translate_args(sys.argv if argv is None else argv)
    rclpy.init(args=args)
    node = PerceptionNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    code = 0
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: configure failed (see above); waiting for a lifecycle manager")
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: activate failed")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # A second SIGINT during clean-up must not leave workers or DDS shared memory behind.
        try:
            if node.engine is not None:
                node.engine.stop(timeout=0.5)  # exit within 2 s of SIGINT/SIGTERM, also during a model call
            executor.shutdown(timeout_sec=1.0)
            node.destroy_node()
        except KeyboardInterrupt:
            pass
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
