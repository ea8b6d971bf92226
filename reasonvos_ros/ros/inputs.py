"""The perception node's input side: the subscriptions of one activation and their quality of service.

Camera streams (colour, and with ``use_depth`` depth + camera_info) run in one mutually exclusive callback group,
so frames are ingested in arrival order; instructions, services and the diagnostics timer run in a reentrant group
beside them, so an instruction is never stuck behind a slow frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from ..bag.rclpy_tools import qos_profile
from ..msg import Instruction

# Instructions arrive in bursts (10,000 distinct ids from a script): the subscription queue holds a burst, so each
# instruction is accepted or rejected with a count; what DDS still reports lost is counted as well.
INSTRUCTION_QUEUE_DEPTH = 1000


@dataclass(frozen=True)
class InputCallbacks:
    image: Callable[[Any], None]
    depth: Callable[[Any], None]
    camera_info: Callable[[Any], None]
    instruction: Callable[[Any], None]
    instruction_text: Callable[[Any], None]
    instructions_lost: Callable[[Any], None]  # DDS event: instructions lost before they reached a callback


class InputSubscriptions:
    """Subscriptions of one activation (created by ``open``, destroyed by ``close``)."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self.camera_group = MutuallyExclusiveCallbackGroup()
        self.control_group = ReentrantCallbackGroup()
        self.subscriptions: list[Any] = []

    @property
    def is_open(self) -> bool:
        return bool(self.subscriptions)

    def open(self, settings: Any, callbacks: InputCallbacks) -> str:
        """Subscribe; returns what was subscribed, for the log."""
        node, s = self._node, settings
        # Keep-last, volatile: 'best_effort' is what camera drivers publish (sensor-data QoS), 'reliable' suits
        # bag replay.
        qos = qos_profile(s.qos_reliability, s.qos_depth)
        image_type, image_topic = (
            (Image, "image") if s.image_transport == "raw" else (CompressedImage, "image/compressed")
        )
        camera = [(image_type, image_topic, callbacks.image)]
        if s.use_depth:
            camera += [(Image, "depth", callbacks.depth), (CameraInfo, "camera_info", callbacks.camera_info)]
        subscriptions = [
            node.create_subscription(kind, topic, callback, qos, callback_group=self.camera_group)
            for kind, topic, callback in camera
        ]
        instruction_qos = QoSProfile(depth=INSTRUCTION_QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
        lost = SubscriptionEventCallbacks(message_lost=callbacks.instructions_lost)
        for kind, topic, callback in (
            (Instruction, "instruction", callbacks.instruction),
            (String, "instruction_text", callbacks.instruction_text),
        ):
            subscriptions.append(
                node.create_subscription(
                    kind, topic, callback, instruction_qos, callback_group=self.control_group, event_callbacks=lost
                )
            )
        self.subscriptions = subscriptions
        described = (
            f"'{node.resolve_topic_name(image_topic)}' ({image_type.__name__}, QoS {s.qos_reliability}, "
            f"depth {s.qos_depth})"
        )
        if s.use_depth:
            described += f", '{node.resolve_topic_name('depth')}' + camera_info (slop {s.sync_slop_s} s)"
        return described

    def close(self) -> None:
        for subscription in self.subscriptions:
            self._node.destroy_subscription(subscription)
        self.subscriptions = []
