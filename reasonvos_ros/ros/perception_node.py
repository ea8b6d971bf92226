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

import threading
import time
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import SetBool

from ..core.commands import TargetCommands
from ..core.engine import LiveEngine
from ..core.errors import ReasonVosError
from ..core.image_header import ImageHeaderError, declared_size
from ..core.ingest import DepthSyncSettings, RgbdIngest, UnreadableInput
from ..core.pipeline import FrameResult
from ..core.registry import build_backend
from ..core.rejections import CallbackFailures, CallbackGuard, RejectionCounter
from ..core.results import diagnostics, frame_output
from ..core.types import Frame
from ..core.window import RollingWindow
from ..msg import Instruction
from ..srv import ResetTargets
from .conversions import ConversionError, depth_msg_to_metres, image_msg_to_rgb, stamp_to_seconds
from .inputs import InputCallbacks, InputSubscriptions
from .lifecycle_fixes import answer_invalid_transitions, destroy_state_machine
from .outputs import OutputPublishers, median_or_none
from .parameters import APPLIED_AT_START, PARAMETERS, NodeSettings, check_changes, parameter_descriptor

NODE_NAME = "reasonvos_perception"


def _depth_metres(msg: Any) -> Any:
    """Decode a depth message for the ingest, which decodes only depth matched to an accepted colour frame."""
    try:
        return depth_msg_to_metres(msg)
    except ConversionError as exc:
        raise UnreadableInput(str(exc)) from None


class PerceptionNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for param in PARAMETERS:
            self.declare_parameter(param.name, param.default, parameter_descriptor(param))
        # Declared first: the check runs for run-time changes (`ros2 param set`), not for the start-up values,
        # which configure checks (so a bad value in a params file is reported, not raised from __init__).
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.configure_error: str | None = None  # why the last configure failed (None: it did not)
        self.rejections = RejectionCounter(self.get_logger())
        self.callback_failures = CallbackFailures(self.get_logger())
        self._guard = CallbackGuard(self.callback_failures, lambda: self.context.ok())
        self.ingest = RgbdIngest(self.rejections, self._on_frame, self._on_new_timeline, self._on_time_jump)
        self.commands = TargetCommands(self.rejections, self.get_logger(), self.resolve_topic_name("image"))
        # Held by the input callbacks and by deactivate/cleanup while they take the inputs apart, so a callback
        # never sees half-destroyed state (a lifecycle transition runs in another executor thread).
        self._io_lock = threading.RLock()
        self.settings: NodeSettings | None = None
        self.engine: LiveEngine | None = None
        self.window: RollingWindow | None = None
        self.backends: dict[str, Any] = {}
        self.inputs = InputSubscriptions(self)
        self.outputs = OutputPublishers(self)
        self._node_timers: list[Any] = []
        self._node_services: list[Any] = []
        answer_invalid_transitions(self, lambda why: self.rejections.reject("lifecycle_transition", why))

    def destroy_node(self) -> None:
        super().destroy_node()
        destroy_state_machine(self)

    # ------------------------------------------------------------------------------------------------ containment
    def _guarded(self, name: str, callback, *, service: bool = False):
        return self._guard.wrap(name, callback, service=service)

    def wait_for_callbacks(self, timeout: float) -> bool:
        """Wait until no callback of this node runs (after the executor stopped dispatching); False on timeout."""
        return self._guard.wait_idle(timeout)

    def stop_publishing(self, timeout: float) -> bool:
        """Wait for a publish in flight and keep any later one from starting; False on timeout."""
        return self.outputs.stop(timeout)

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        """Reject a bad run-time value with the message configure would give; say when a good one applies."""
        changes = {param.name: param.value for param in parameters}
        current = {param.name: self.get_parameter(param.name).value for param in PARAMETERS}
        reason = check_changes(current, changes)
        if reason is not None:
            self.get_logger().warning(f"rejected parameter change: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        if self.settings is not None and self.engine is not None:
            for name in changes:
                if name in APPLIED_AT_START:
                    self.get_logger().info(f"parameter '{name}' set; it is read when the process starts")
                elif name in current:
                    self.get_logger().info(
                        f"parameter '{name}' set; it takes effect at the next configure "
                        "(deactivate, cleanup, configure, activate)"
                    )
        return SetParametersResult(successful=True)

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
            self.configure_error = f"configure failed: {exc}"
            self.get_logger().error(self.configure_error)
            self.backends = {}
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # a backend that fails to load must not take the node down
            self.configure_error = f"configure failed while loading the backends: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.configure_error)
            self.backends = {}
            return TransitionCallbackReturn.FAILURE
        self.configure_error = None
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
            self.create_service(
                ResetTargets,
                "~/reset",
                self._guarded("reset", self._on_reset, service=True),
                callback_group=self.inputs.control_group,
            ),
            self.create_service(
                SetBool,
                "~/enable",
                self._guarded("enable", self._on_enable, service=True),
                callback_group=self.inputs.control_group,
            ),
        ]
        backends = ", ".join(f"{role}={spec['name']}" for role, spec in s.backends.items())
        self.get_logger().info(f"configured: {backends}; window {s.window_duration_s} s / {s.window_max_mb} MB")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        s = self.settings
        depth_sync = DepthSyncSettings(
            s.sync_queue_size, s.sync_slop_s, self.resolve_topic_name("depth"), self.resolve_topic_name("camera_info")
        )
        self.ingest.open(self.window, depth_sync if s.use_depth else None)
        guard = self._guarded
        callbacks = InputCallbacks(
            image=guard("image", self._on_image),
            depth=guard("depth", self._on_depth),
            camera_info=guard("camera_info", self._on_camera_info),
            instruction=guard("instruction", self._on_instruction),
            instruction_text=guard("instruction_text", self._on_instruction_text),
            instructions_lost=self._on_instructions_lost,
        )
        subscribed = self.inputs.open(s, callbacks)
        self.outputs.open()
        self._node_timers = [
            self.create_timer(
                s.diagnostics_period_s,
                guard("diagnostics", self._publish_diagnostics),
                callback_group=self.inputs.control_group,
            )
        ]
        self.engine.start()
        self.get_logger().info(f"active: subscribed to {subscribed}")
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
            self.engine.stop()  # synchronous for results: none is emitted once it returns
        self.outputs.close()
        with self._io_lock:
            self.inputs.close()
            for timer in self._node_timers:
                self.destroy_timer(timer)
            self._node_timers = []
            self.ingest.close()
            if self.window is not None:
                self.window.clear()

    def _unload(self) -> None:
        with self._io_lock:
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
        started = self.ingest.image_arrived()
        with self._io_lock:
            if self.window is None or not self.inputs.is_open:  # a transition took the inputs apart meanwhile
                return
            if self._oversized(msg, "image"):
                return
            try:
                rgb = image_msg_to_rgb(msg)
            except ConversionError as exc:
                self.rejections.reject("image", str(exc))
                return
            self.ingest.add_image(msg.header, stamp_to_seconds(msg.header.stamp), rgb)
        self.ingest.image_done(started)

    def _oversized(self, msg: Any, stream: str) -> bool:
        """True (rejected and counted) for an image over ``max_image_pixels``, judged before any decoding: for
        compressed data by the size its PNG/JPEG header declares (a 62-byte PNG can declare 60000x60000)."""
        limit = self.settings.max_image_pixels
        if hasattr(msg, "format") and not hasattr(msg, "encoding"):  # CompressedImage
            try:
                size = declared_size(msg.data)
            except ImageHeaderError as exc:
                self.rejections.reject(stream, f"compressed data (format {str(msg.format)[:40]!r}) refused: {exc}")
                return True
            width, height = size.width, size.height
        else:
            width, height = int(msg.width), int(msg.height)
        if width * height > limit:
            self.rejections.reject(
                f"{stream}_too_large",
                f"{width}x{height} = {width * height} pixels is over max_image_pixels = {limit}; dropped undecoded",
            )
            return True
        return False

    def _on_depth(self, msg: Image) -> None:
        with self._io_lock:
            if self.ingest.uses_depth and not self._oversized(msg, "depth"):
                self.ingest.add_depth(stamp_to_seconds(msg.header.stamp), lambda: _depth_metres(msg))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._io_lock:
            self.ingest.add_camera_info(stamp_to_seconds(msg.header.stamp), msg.k, msg.p)

    def _on_frame(self, frame: Frame) -> None:
        self.engine.notify_frame()

    def _on_new_timeline(self, reason: str) -> None:
        self.engine.new_timeline(reason)
        self.get_logger().warning(f"{reason}: new timeline, window cleared, targets re-acquiring")

    def _on_time_jump(self, stream: str, seconds_back: float) -> None:
        self.get_logger().warning(
            f"time jumped back {seconds_back:.1f} s on '{stream}' (bag loop or clock reset): "
            "starting a new time line with an empty window",
            throttle_duration_sec=5.0,
        )

    def _on_instructions_lost(self, info) -> None:
        """DDS reports instructions lost before they reached the callback: counted (diagnostics)."""
        self.commands.instructions_lost(int(getattr(info, "total_count_change", 1) or 1), info.total_count)

    def _on_instruction(self, msg: Instruction) -> None:
        self._set_instruction(msg.target_id, msg.text, "speech" if msg.source == Instruction.SOURCE_SPEECH else "text")

    def _on_instruction_text(self, msg: String) -> None:
        self._set_instruction("default", msg.data, "text")

    def _set_instruction(self, target_id: str, text: str, source: str) -> None:
        engine = self.engine if self.inputs.is_open else None
        self.commands.instruct(engine, self.window, target_id, text, source)

    def _on_reset(self, request, response):
        response.success, response.message = self.commands.reset(self.engine, request.target_id)
        if response.success:
            self.outputs.forget_target(request.target_id.strip())
        return response

    def _on_enable(self, request, response):
        response.success, response.message = self.commands.enable(self.engine, request.data)
        return response

    # ------------------------------------------------------------------------------------------------ outputs
    def _on_engine_event(self, level: str, text: str) -> None:
        if not self.context.ok():  # shutting down: a worker's publish racing the context shutdown is expected
            return
        # One call site per severity: rclpy refuses a second severity from the same call site (ValueError), which
        # killed the engine worker that reported a warning after an error.
        if level == "error":
            self.get_logger().error(text)
        else:
            self.get_logger().warning(text)

    def _on_results(self, frame: Frame, results: list[FrameResult], live: bool) -> None:
        s = self.settings
        if (not live and not s.publish_history) or not self.outputs.is_open or not self.context.ok():
            return  # (context not ok: SIGINT/SIGTERM is shutting down; the workers stop right after this)
        started = time.perf_counter()
        try:
            depth = self.ingest.depth_for(frame) if live else None
            output = frame_output(
                frame, results, live, depth, depth_erode_px=s.depth_erode_px, label_image=s.publish_label_image
            )
            self.outputs.publish_frame(frame, output, s.debug_image_rate_hz, started)
        except Exception as exc:  # a failing publish must not turn into a backend error of the target
            if self.context.ok():  # else: SIGINT/SIGTERM shut the context down under a worker's publish
                self.callback_failures.record("publish", exc)

    def _publish_diagnostics(self) -> None:
        if self.engine is None or not self.outputs.is_open:
            return
        report = diagnostics(
            engine=self.engine.stats,
            targets=self.engine.targets(),
            engine_threads=len(self.engine.worker_threads()),
            window=self.window.stats(),
            window_duration_s=self.settings.window_duration_s,
            window_max_mb=self.settings.window_max_mb,
            ingest=self.ingest.stats(),
            rejections=dict(self.rejections.counts),
            callback_failures=dict(self.callback_failures.counts),
            instructions_repeated=self.commands.repeated,
            instructions_lost=self.commands.lost,
            publish_s_median=median_or_none(self.outputs.latency),
        )
        self.outputs.publish_diagnostics(report)


if __name__ == "__main__":  # python -m reasonvos_ros.ros.perception_node (the tests and the demo start it so)
    from .node_main import main

    main()
