"""rclpy plumbing shared by ``bag-play`` and ``bag-record`` (imported only by them: rclpy is needed here)."""

from __future__ import annotations

import contextlib
import importlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["message_class", "parse_remaps", "qos_profile", "ros_session", "stop_on_signals"]


def message_class(type_name: str) -> type:
    """``"sensor_msgs/msg/Image"`` -> the rclpy class; ValueError naming the package to install or build."""
    parts = type_name.split("/")
    if len(parts) != 3 or parts[1] not in ("msg", "srv", "action") or not all(parts):
        raise ValueError(f"malformed ROS type name {type_name!r} (expected package/msg/Type)")
    package, kind, name = parts
    try:
        module = importlib.import_module(f"{package}.{kind}")
    except ImportError as error:
        raise ValueError(
            f"cannot import the Python messages of {type_name!r} ({error}); install the ROS package {package!r} "
            f"(pip: ros-jazzy-{package.replace('_', '-')}) or build it"
        ) from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise ValueError(f"package {package!r} has no {kind} type {name!r}") from None


def qos_profile(reliability: str, depth: int = 10) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    policies = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
    if reliability not in policies:
        raise ValueError(f"QoS reliability must be one of {tuple(policies)}, got {reliability!r}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=policies[reliability],
        durability=DurabilityPolicy.VOLATILE,
    )


def parse_remaps(items: list[str] | None) -> dict[str, str]:
    """``["/a:=/b", ...]`` -> ``{"/a": "/b"}`` (ROS remapping syntax, full topic names)."""
    remaps = {}
    for item in items or []:
        source, sep, target = item.partition(":=")
        if not sep or not source or not target:
            raise ValueError(f"remapping must look like /from:=/to, got {item!r}")
        remaps[source] = target
    return remaps


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While active (main thread only), SIGINT and SIGTERM set ``stop`` instead of killing the process, so the
    caller closes its bag and rclpy cleans Fast DDS' shared memory."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def ros_session(node_name: str) -> Iterator[Any]:
    """A private rclpy context (no rclpy signal handlers) with one node; everything is torn down on exit."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(node_name, context=context)
    try:
        yield node
    finally:
        node.destroy_node()
        context.try_shutdown()
