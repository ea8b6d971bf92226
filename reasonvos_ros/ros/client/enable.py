"""``reasonvos enable`` / ``reasonvos disable``: resume or pause processing (like ``ros2 service call
<node>/enable std_srvs/srv/SetBool "{data: true}"``)."""

from __future__ import annotations

import argparse
import sys

from . import add_node_argument, call_service, client_node, node_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_node_argument(parser)


def run(args: argparse.Namespace) -> int:
    from std_srvs.srv import SetBool

    _, full = node_names(args.node)
    enable = args.command == "enable"
    with client_node(f"reasonvos_{args.command}") as node:
        response = call_service(node, SetBool, f"{full}/enable", SetBool.Request(data=enable), args.wait)
    if response is None:
        return 1
    print(response.message, file=sys.stdout if response.success else sys.stderr)
    return 0 if response.success else 1
