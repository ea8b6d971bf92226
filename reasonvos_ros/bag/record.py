"""``reasonvos bag-record``: record live ROS 2 topics into a rosbag2 bag (no ``ros2 bag record`` on pip installs).

Topics are subscribed raw (``create_subscription(..., raw=True)``) as soon as discovery shows their type, so the
serialized bytes are stored untouched; each message is stamped with the recorder's receive time, like rosbag2.
Reliability ``auto`` waits for the first publisher of a topic, then subscribes reliably when every discovered
publisher is reliable and best effort otherwise (a reliable subscription receives nothing from best-effort camera
drivers); the choice is not revisited when other publishers appear later. Message definitions are
taken from the typestore (Jazzy's standard types plus this package's messages), so other custom types cannot be
recorded (they are reported and skipped). Recording stops on SIGINT/SIGTERM or after ``duration`` seconds.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer

__all__ = ["RecordStats", "add_arguments", "record_bag", "run"]

STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
# Infrastructure topics every node publishes; recorded only when named explicitly.
_IMPLICIT_TOPICS = ("/rosout", "/parameter_events")


@dataclass
class RecordStats:
    path: Path
    received: dict[str, int] = field(default_factory=dict)  # topic -> messages written
    types: dict[str, str] = field(default_factory=dict)  # topic -> type
    reliability: dict[str, str] = field(default_factory=dict)  # topic -> reliability used
    never_seen: list[str] = field(default_factory=list)  # requested topics no publisher ever offered
    skipped: dict[str, str] = field(default_factory=dict)  # topic -> why it could not be recorded
    wall_seconds: float = 0.0


def _auto_reliability(node, topic: str) -> str:
    from rclpy.qos import ReliabilityPolicy

    infos = node.get_publishers_info_by_topic(topic)
    if infos and all(info.qos_profile.reliability == ReliabilityPolicy.RELIABLE for info in infos):
        return "reliable"
    return "best_effort"


def record_bag(
    output: str | Path,
    topics: list[str] | None = None,
    *,
    all_topics: bool = False,
    storage: str = "mcap",
    reliability: str = "auto",
    depth: int = 100,
    duration: float | None = None,
    stop: threading.Event | None = None,
    node_name: str = "reasonvos_bag_recorder",
    ready: threading.Event | None = None,
    log=print,
) -> RecordStats:
    """Record until ``stop`` is set or ``duration`` elapses. ``ready`` is set once every requested topic is
    subscribed (useful to start a publisher only then)."""
    from reasonvos_ros.bag.rclpy_tools import message_class, qos_profile, ros_session
    from reasonvos_ros.bag.types import make_typestore

    output = Path(output)
    if output.exists():
        raise FileExistsError(f"output bag {output} already exists (rosbag2 writers never overwrite)")
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {tuple(STORAGES)}, got {storage!r}")
    if reliability not in ("auto", "reliable", "best_effort"):
        raise ValueError(f"reliability must be auto, reliable or best_effort, got {reliability!r}")
    wanted = list(dict.fromkeys(topics or []))
    if not wanted and not all_topics:
        raise ValueError("name at least one topic to record (or record all topics)")
    bad = [topic for topic in wanted if not topic.startswith("/")]
    if bad:
        raise ValueError(f"topic names must be absolute (start with '/'): {bad}")
    stop = stop or threading.Event()
    typestore = make_typestore()
    stats = RecordStats(output)
    writer = Writer(output, version=9, storage_plugin=STORAGES[storage])
    writer.open()
    started = time.monotonic()
    try:
        with ros_session(node_name) as node:
            from rclpy.executors import SingleThreadedExecutor

            executor = SingleThreadedExecutor(context=node.context)
            executor.add_node(node)
            subscriptions = {}

            def discover() -> None:
                for topic, type_names in node.get_topic_names_and_types():
                    if topic in subscriptions or topic in stats.skipped:
                        continue
                    if not (topic in wanted or (all_topics and topic not in _IMPLICIT_TOPICS)):
                        continue
                    if len(type_names) != 1:
                        stats.skipped[topic] = f"published with several types {type_names}"
                        log(f"bag-record: skipping {topic}: {stats.skipped[topic]}")
                        continue
                    type_name = type_names[0]
                    if reliability == "auto" and not node.get_publishers_info_by_topic(topic):
                        continue  # only a subscription so far: wait for a publisher to choose the QoS
                    try:
                        msg_class = message_class(type_name)
                        typestore.get_msgdef(type_name)
                    except Exception as error:  # unknown to rclpy or to the typestore
                        stats.skipped[topic] = f"type {type_name} unavailable: {error}"
                        log(f"bag-record: skipping {topic}: {stats.skipped[topic]}")
                        continue
                    chosen = _auto_reliability(node, topic) if reliability == "auto" else reliability
                    connection = writer.add_connection(topic, type_name, typestore=typestore)
                    stats.types[topic], stats.reliability[topic], stats.received[topic] = type_name, chosen, 0

                    def on_message(raw: bytes, connection=connection, topic=topic) -> None:
                        writer.write(connection, node.get_clock().now().nanoseconds, raw)
                        stats.received[topic] += 1

                    subscriptions[topic] = node.create_subscription(
                        msg_class, topic, on_message, qos_profile(chosen, depth), raw=True
                    )
                    log(f"bag-record: recording {topic} ({type_name}, {chosen})")

            next_discovery = 0.0
            while not stop.is_set():
                now = time.monotonic()
                if duration is not None and now - started >= duration:
                    break
                if now >= next_discovery:
                    discover()
                    next_discovery = now + 0.1
                    if ready is not None and all(topic in subscriptions for topic in wanted):
                        ready.set()
                executor.spin_once(timeout_sec=0.05)
            # drain what already arrived
            for _ in range(20):
                executor.spin_once(timeout_sec=0.0)
            executor.shutdown()
    finally:
        writer.close()
    stats.never_seen = [topic for topic in wanted if topic not in stats.types and topic not in stats.skipped]
    stats.wall_seconds = time.monotonic() - started
    return stats


# ------------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.add_argument("output", help="output bag folder (must not exist)")
    parser.add_argument("topics", nargs="*", help="absolute topic names to record")
    parser.add_argument("-a", "--all", dest="all_topics", action="store_true",
                        help="record every discovered topic (except /rosout and /parameter_events)")  # fmt: skip
    parser.add_argument("--storage", choices=tuple(STORAGES), default="mcap")
    parser.add_argument("--qos-reliability", choices=("auto", "reliable", "best_effort"), default="auto")
    parser.add_argument("--qos-depth", type=int, default=100)
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")


def run(args: argparse.Namespace) -> int:
    from reasonvos_ros.bag.rclpy_tools import stop_on_signals

    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            stats = record_bag(
                args.output,
                args.topics,
                all_topics=args.all_topics,
                storage=args.storage,
                reliability=args.qos_reliability,
                depth=args.qos_depth,
                duration=args.duration,
                stop=stop,
                log=lambda text: print(text, flush=True),
            )
    except (FileExistsError, ValueError) as error:
        print(f"bag-record: error: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{topic}: {count}" for topic, count in stats.received.items()) or "nothing"
    print(f"bag-record: wrote {stats.path} in {stats.wall_seconds:.1f} s: {counts}", flush=True)
    for topic in stats.never_seen:
        print(f"bag-record: warning: no publisher of {topic} was ever discovered (unknown topic?)", flush=True)
    for topic, reason in stats.skipped.items():
        print(f"bag-record: warning: {topic} not recorded: {reason}", flush=True)
    missing_requested = [topic for topic in args.topics if topic in stats.never_seen or topic in stats.skipped]
    return 1 if missing_requested else 0
