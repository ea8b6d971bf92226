"""``reasonvos bag-play``: replay a rosbag2 bag (sqlite3 or mcap) into live ROS 2 topics (no ``ros2 bag play``).

Messages are published as the raw serialized bytes stored in the bag (``publisher.publish(bytes)``), so headers,
including stamps, are exactly as recorded. Publication follows the bag's receive timestamps divided by
``rate``; with ``loop`` the bag restarts one mean message interval after its last message (stamps then repeat:
consumers see time jump back). ``clock`` additionally publishes ``/clock`` with each message's bag time, for nodes
run with ``use_sim_time``. Needs rclpy and the Python message packages of the played types.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.rosbag2 import Reader

from reasonvos_ros.bag.errors import describe_bag_error, is_bag_error

__all__ = ["PlayStats", "add_arguments", "play_bag", "run"]


@dataclass
class PlayStats:
    published: dict[str, int] = field(default_factory=dict)  # output topic -> count
    loops: int = 0
    wall_seconds: float = 0.0
    max_lateness_ms: float = 0.0  # worst delay of a publication behind its schedule
    interrupted: bool = False


def _select_connections(reader: Reader, topics: list[str] | None) -> list:
    available = sorted({conn.topic for conn in reader.connections})
    if not available:
        raise ValueError(f"bag {reader.path} has no topics")
    if not topics:
        return list(reader.connections)
    unknown = [topic for topic in topics if topic not in available]
    if unknown:
        raise ValueError(f"topic(s) {unknown} not in bag {reader.path}; it has: {available}")
    return [conn for conn in reader.connections if conn.topic in topics]


def play_bag(
    bag: str | Path,
    *,
    rate: float = 1.0,
    loop: bool = False,
    topics: list[str] | None = None,
    remap: dict[str, str] | None = None,
    reliability: str = "reliable",
    depth: int = 10,
    clock: bool = False,
    delay: float = 0.0,
    wait_for_subscribers: float = 0.0,
    min_subscribers: int = 1,
    ack_timeout: float = 5.0,
    stop: threading.Event | None = None,
    node_name: str = "reasonvos_bag_player",
    log=print,
) -> PlayStats:
    """Publish the bag's messages; returns when done, or early when ``stop`` is set.

    ``wait_for_subscribers`` > 0 waits up to that many seconds until every played topic has ``min_subscribers``
    subscriptions; at the end, reliable messages are given ``ack_timeout`` seconds to be acknowledged."""
    from reasonvos_ros.bag.rclpy_tools import message_class, qos_profile, ros_session

    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f"bag {bag} does not exist")
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if min_subscribers < 1:
        raise ValueError(f"min_subscribers must be >= 1, got {min_subscribers}")
    remap = remap or {}
    stop = stop or threading.Event()
    stats = PlayStats()
    with Reader(bag) as reader:
        connections = _select_connections(reader, topics)
        unknown_remaps = sorted(set(remap) - {conn.topic for conn in connections})
        if unknown_remaps:
            raise ValueError(f"remapped topic(s) {unknown_remaps} are not played from bag {bag}")
        classes = {conn.msgtype: message_class(conn.msgtype) for conn in connections}
        message_count = sum(conn.msgcount for conn in connections)
        # the loop restarts one mean message interval after the end (metadata only: no extra pass over the data)
        loop_gap_ns = 100_000_000
        if message_count > 1 and reader.duration > 0:
            loop_gap_ns = reader.duration // (message_count - 1)
        with ros_session(node_name) as node:
            qos = qos_profile(reliability, depth)
            publishers = {}
            for conn in connections:
                out_topic = remap.get(conn.topic, conn.topic)
                if out_topic not in publishers:
                    publishers[out_topic] = node.create_publisher(classes[conn.msgtype], out_topic, qos)
                    stats.published[out_topic] = 0
            clock_publisher = None
            if clock:
                from rosgraph_msgs.msg import Clock

                clock_publisher = node.create_publisher(Clock, "/clock", qos)
            if wait_for_subscribers > 0:
                awaited = dict(publishers)
                if clock_publisher is not None:
                    awaited["/clock"] = clock_publisher
                deadline = time.monotonic() + wait_for_subscribers
                while not stop.is_set() and time.monotonic() < deadline:
                    if all(pub.get_subscription_count() >= min_subscribers for pub in awaited.values()):
                        break
                    stop.wait(0.02)
                missing = [t for t, pub in awaited.items() if pub.get_subscription_count() < min_subscribers]
                if missing:
                    log(
                        f"bag-play: fewer than {min_subscribers} subscriber(s) after {wait_for_subscribers:g} s on "
                        f"{missing}; playing anyway"
                    )
            if delay > 0:
                stop.wait(delay)

            started = time.monotonic()
            pass_start_wall = started
            while not stop.is_set():
                first_ns = last_ns = None
                for conn, timestamp, raw in reader.messages(connections=connections):
                    if first_ns is None:
                        first_ns = timestamp
                    last_ns = timestamp
                    due = pass_start_wall + (timestamp - first_ns) / 1e9 / rate
                    wait = due - time.monotonic()
                    if wait > 0 and stop.wait(wait):
                        break
                    if stop.is_set():
                        break
                    stats.max_lateness_ms = max(stats.max_lateness_ms, (time.monotonic() - due) * 1e3)
                    if clock_publisher is not None:
                        clock_publisher.publish(_clock_message(timestamp))
                    out_topic = remap.get(conn.topic, conn.topic)
                    publishers[out_topic].publish(bytes(raw))
                    stats.published[out_topic] += 1
                stats.loops += 1
                if not loop or first_ns is None or stop.is_set():
                    break
                pass_start_wall += ((last_ns - first_ns) + loop_gap_ns) / 1e9 / rate
            # Destroying a writer drops what slow reliable readers have not acknowledged yet: wait for the acks
            # (best-effort publishers return at once), then give best-effort deliveries a moment.
            if not stop.is_set():
                from rclpy.duration import Duration

                for out_topic, publisher in publishers.items():
                    if not publisher.wait_for_all_acked(Duration(seconds=ack_timeout)):
                        log(f"bag-play: not every subscriber of {out_topic} acknowledged within {ack_timeout:g} s")
                stop.wait(0.1)
    stats.interrupted = stop.is_set()
    stats.wall_seconds = time.monotonic() - started
    return stats


def _clock_message(nanoseconds: int):
    from rosgraph_msgs.msg import Clock

    from reasonvos_ros.ros.conversions import nanoseconds_to_stamp

    return Clock(clock=nanoseconds_to_stamp(nanoseconds))


# ------------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.add_argument("bag", help="bag folder (or .mcap/.db3 file)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    parser.add_argument("--loop", action="store_true", help="restart at the end until interrupted")
    parser.add_argument("--topics", nargs="+", default=None, help="play only these bag topics")
    parser.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO", help="rename topics, e.g. /image:=/cam")
    parser.add_argument("--qos-reliability", choices=("reliable", "best_effort"), default="reliable")
    parser.add_argument("--qos-depth", type=int, default=10)
    parser.add_argument("--clock", action="store_true", help="also publish /clock with the bag time")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before playing")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS until every played topic has --min-subscribers subscribers")  # fmt: skip
    parser.add_argument("--min-subscribers", type=int, default=1)


def run(args: argparse.Namespace) -> int:
    from reasonvos_ros.bag.rclpy_tools import parse_remaps, stop_on_signals

    stop = threading.Event()
    try:
        remap = parse_remaps(args.remap)
        with stop_on_signals(stop):
            stats = play_bag(
                args.bag,
                rate=args.rate,
                loop=args.loop,
                topics=args.topics,
                remap=remap,
                reliability=args.qos_reliability,
                depth=args.qos_depth,
                clock=args.clock,
                delay=args.delay,
                wait_for_subscribers=args.wait_for_subscribers,
                min_subscribers=args.min_subscribers,
                stop=stop,
            )
    except Exception as error:  # damaged, empty or foreign bags, a full disk: one clear line, no traceback
        if not is_bag_error(error):
            raise
        print(f"bag-play: error: {describe_bag_error(error, args.bag)}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{topic}: {count}" for topic, count in stats.published.items())
    print(
        f"bag-play: published {counts} in {stats.wall_seconds:.2f} s ({stats.loops} pass(es), "
        f"max lateness {stats.max_lateness_ms:.1f} ms){' - interrupted' if stats.interrupted else ''}",
        flush=True,
    )
    return 0
