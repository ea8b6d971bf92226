"""``reasonvos instruct "TEXT" [--target ID]``: send an instruction to the perception node (like
``ros2 topic pub --once <ns>/instruction reasonvos_ros/msg/Instruction "{target_id: ID, text: TEXT}"``)."""

from __future__ import annotations

import argparse
import sys
import time

from . import add_node_argument, client_node, in_namespace, node_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help='the instruction, e.g. "the thing I\'d use to open this bottle"')
    parser.add_argument("--target", default="default", help="target id (default: %(default)s)")
    add_node_argument(parser)


def run(args: argparse.Namespace) -> int:
    from reasonvos_ros.msg import Instruction

    namespace, _ = node_names(args.node)
    topic = in_namespace(namespace, "instruction")
    with client_node("reasonvos_instruct") as node:
        publisher = node.create_publisher(Instruction, topic, 10)
        deadline = time.monotonic() + args.wait
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if publisher.get_subscription_count() == 0:
            print(
                f"nobody subscribes to '{topic}' after {args.wait} s: is the node active (check --node)?",
                file=sys.stderr,
            )
            return 1
        msg = Instruction(target_id=args.target, text=args.text, source=Instruction.SOURCE_TEXT)
        msg.stamp = node.get_clock().now().to_msg()
        publisher.publish(msg)
        # The instruction topic is reliable: wait until the subscriber acknowledged it before leaving.
        if hasattr(publisher, "wait_for_all_acked"):  # (not in every rclpy release)
            from rclpy.duration import Duration

            if not publisher.wait_for_all_acked(Duration(seconds=args.wait)):
                print(f"'{topic}': the node did not acknowledge the instruction within {args.wait} s", file=sys.stderr)
                return 1
        else:
            time.sleep(0.5)
    print(f"sent to '{topic}': target {args.target!r}: {args.text!r}")
    return 0
