"""``reasonvos bag-record``: record live ROS 2 topics into a rosbag2 bag (no ``ros2 bag record`` on pip installs).

Topics are subscribed raw (``create_subscription(..., raw=True)``) as soon as discovery shows their type, so the
serialized bytes are stored untouched; each message is stamped with the recorder's receive time, like rosbag2.
Reliability ``auto`` waits for the first publisher of a topic, then subscribes reliably when every discovered
publisher is reliable and best effort otherwise (a reliable subscription receives nothing from best-effort camera
drivers); the choice is not revisited when other publishers appear later. Message definitions are
taken from the typestore (Jazzy's standard types plus this package's messages), so other custom types cannot be
recorded (they are reported and skipped). Recording stops on SIGINT/SIGTERM or after ``duration`` seconds.

A recorder can be killed (SIGKILL, OOM, power) or starved, and the disk can fill up. rosbag2 storage files only
become readable when they are closed (mcap: footer and summary; sqlite3: the committed transaction; both: the
bag's metadata.yaml), so the bag is written in splits of ``split_seconds``: each split is its own storage file,
closed and listed in ``metadata.yaml`` (rewritten atomically) when the next one starts. Whatever happens, the
bag is readable up to the last completed split, for mcap and sqlite3 alike; the split in progress is lost (it
lies in ``OUTPUT/.partial_N/``). A full disk ends the recording with a clear error, completed splits intact.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rosbags.rosbag2 import StoragePlugin, Writer

from reasonvos_ros.bag.errors import describe_bag_error, is_bag_error

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
    splits: int = 0  # completed storage files listed in metadata.yaml


class SplitWriter:
    """A rosbag2 bag written as a sequence of closed storage files (see the module docstring).

    Each split is written by its own rosbags ``Writer`` into ``OUTPUT/.partial_N/``; when it is closed, its
    storage file moves to ``OUTPUT/<name>_N.<ext>`` and ``OUTPUT/metadata.yaml`` is rewritten to list every
    closed file (topics and counts summed), through a temporary file and an atomic rename."""

    def __init__(self, output: Path, storage: str, typestore) -> None:
        self.output = output
        self.storage = storage
        self.typestore = typestore
        self.topics: dict[str, str] = {}  # topic -> type name, in connection order
        self.connections: dict[str, object] = {}  # topic -> connection of the current split
        self.files: list[dict] = []  # metadata of the closed splits
        self._writer = None
        self._index = 0
        self._count = 0
        self.output.mkdir(parents=True)

    def add_topic(self, topic: str, type_name: str) -> None:
        self.topics[topic] = type_name
        if self._writer is not None:
            self.connections[topic] = self._writer.add_connection(topic, type_name, typestore=self.typestore)

    def write(self, topic: str, timestamp: int, raw: bytes) -> None:
        if self._writer is None:
            self._open()
        self._writer.write(self.connections[topic], timestamp, raw)
        self._count += 1

    def _open(self) -> None:
        partial = self.output / f".partial_{self._index}"
        self._writer = Writer(partial, version=9, storage_plugin=STORAGES[self.storage])
        self._writer.open()
        self._count = 0
        self.connections = {
            topic: self._writer.add_connection(topic, type_name, typestore=self.typestore)
            for topic, type_name in self.topics.items()
        }

    def split(self, keep_empty: bool = False) -> None:
        """Close the split in progress (if it holds messages) and list it in metadata.yaml."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.close()
        partial = self.output / f".partial_{self._index}"
        if self._count == 0 and not keep_empty:
            shutil.rmtree(partial, ignore_errors=True)
            return
        info = yaml.safe_load((partial / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        stored = partial / info["relative_file_paths"][0]
        name = f"{self.output.name}_{self._index}{stored.suffix}"
        stored.rename(self.output / name)
        shutil.rmtree(partial, ignore_errors=True)
        self._index += 1
        self.files.append({**info, "file": name})
        self._write_metadata()

    def close(self) -> None:
        if not self.files and self._writer is None:
            self._open()  # nothing recorded: still a valid (empty) bag
        self.split(keep_empty=not self.files)

    def _write_metadata(self) -> None:
        first = self.files[0]
        start = min(f["starting_time"]["nanoseconds_since_epoch"] for f in self.files)
        end = max(f["starting_time"]["nanoseconds_since_epoch"] + f["duration"]["nanoseconds"] for f in self.files)
        topics: dict[str, dict] = {}
        for info in self.files:
            for entry in info["topics_with_message_count"]:
                name = entry["topic_metadata"]["name"]
                if name in topics:
                    topics[name]["message_count"] += entry["message_count"]
                else:
                    topics[name] = {"message_count": entry["message_count"], "topic_metadata": entry["topic_metadata"]}
        combined = {
            **{k: v for k, v in first.items() if k != "file"},
            "duration": {"nanoseconds": end - start},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": sum(f["message_count"] for f in self.files),
            "relative_file_paths": [f["file"] for f in self.files],
            "files": [{**f["files"][0], "path": f["file"]} for f in self.files],
            "topics_with_message_count": list(topics.values()),
        }
        temporary = self.output / ".metadata.yaml.tmp"
        with open(temporary, "w") as handle:
            yaml.safe_dump({"rosbag2_bagfile_information": combined}, handle, sort_keys=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.output / "metadata.yaml")


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
    split_seconds: float = 5.0,
    log=print,
) -> RecordStats:
    """Record until ``stop`` is set or ``duration`` elapses. ``ready`` is set once every requested topic is
    subscribed (useful to start a publisher only then). A new storage file starts every ``split_seconds``
    (the bag is readable up to the last completed one if the recorder dies)."""
    from reasonvos_ros.bag.rclpy_tools import message_class, qos_profile, ros_session
    from reasonvos_ros.bag.types import make_typestore

    output = Path(output)
    if output.exists():
        raise FileExistsError(f"output bag {output} already exists (rosbag2 writers never overwrite)")
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {tuple(STORAGES)}, got {storage!r}")
    if not split_seconds > 0:
        raise ValueError(f"split_seconds must be > 0, got {split_seconds}")
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
    writer = SplitWriter(output, storage, typestore)
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
                    writer.add_topic(topic, type_name)
                    stats.types[topic], stats.reliability[topic], stats.received[topic] = type_name, chosen, 0

                    def on_message(raw: bytes, topic=topic) -> None:
                        writer.write(topic, node.get_clock().now().nanoseconds, raw)
                        stats.received[topic] += 1

                    subscriptions[topic] = node.create_subscription(
                        msg_class, topic, on_message, qos_profile(chosen, depth), raw=True
                    )
                    log(f"bag-record: recording {topic} ({type_name}, {chosen})")

            next_discovery = 0.0
            next_split = started + split_seconds
            while not stop.is_set():
                now = time.monotonic()
                if duration is not None and now - started >= duration:
                    break
                if now >= next_split:
                    writer.split()
                    next_split = now + split_seconds
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
        try:
            writer.close()
        except OSError as error:  # e.g. the disk is full: the completed splits stay listed and readable
            log(f"bag-record: could not close the split in progress: {error}")
            stats.splits = len(writer.files)
            raise
    stats.splits = len(writer.files)
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
    parser.add_argument("--split-seconds", type=float, default=5.0,
                        help="start a new storage file this often; if the recorder dies, the bag is readable up "
                        "to the last completed one")  # fmt: skip


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
                split_seconds=args.split_seconds,
                stop=stop,
                log=lambda text: print(text, flush=True),
            )
    except Exception as error:  # damaged, empty or foreign bags, a full disk: one clear line, no traceback
        if not is_bag_error(error):
            raise
        print(f"bag-record: error: {describe_bag_error(error, args.output)}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{topic}: {count}" for topic, count in stats.received.items()) or "nothing"
    print(f"bag-record: wrote {stats.path} in {stats.wall_seconds:.1f} s: {counts}", flush=True)
    for topic in stats.never_seen:
        print(f"bag-record: warning: no publisher of {topic} was ever discovered (unknown topic?)", flush=True)
    for topic, reason in stats.skipped.items():
        print(f"bag-record: warning: {topic} not recorded: {reason}", flush=True)
    missing_requested = [topic for topic in args.topics if topic in stats.never_seen or topic in stats.skipped]
    return 1 if missing_requested else 0
