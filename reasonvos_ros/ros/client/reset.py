"""``reasonvos reset [TARGET]``: forget one target, or all (like ``ros2 service call <node>/reset
reasonvos_ros/srv/ResetTargets "{target_id: TARGET}"``). Exit code 1 when the node refuses (unknown target)."""

from __future__ import annotations

import argparse
import sys

from . import add_node_argument, call_service, client_node, node_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="?", default="", help="target id (default: every target)")
    add_node_argument(parser)


def run(args: argparse.Namespace) -> int:
    from reasonvos_ros.srv import ResetTargets

    _, full = node_names(args.node)
    with client_node("reasonvos_reset") as node:
        response = call_service(
            node, ResetTargets, f"{full}/reset", ResetTargets.Request(target_id=args.target), args.wait
        )
    if response is None:
        return 1
    print(response.message, file=sys.stdout if response.success else sys.stderr)
    return 0 if response.success else 1
