"""``reasonvos instruct / reset / enable / disable / results``: the everyday client actions for machines without the
``ros2`` command (pip installs), as small rclpy programs.

Every command takes ``--node`` (the perception node's full name, default ``/reasonvos_perception``; e.g.
``/robot1/reasonvos_perception`` when launched with ``namespace:=robot1``) and derives the names from it the way
the node does: ``instruction`` in the node's namespace, ``~/reset``, ``~/enable``, ``~/results`` under the node.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

DEFAULT_NODE = "/reasonvos_perception"


def add_node_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--node",
        default=DEFAULT_NODE,
        help="full name of the perception node (default: %(default)s; with a namespace: /robot1/reasonvos_perception)",
    )
    parser.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for the node to be reachable (default: %(default)s)"
    )


def node_names(node: str) -> tuple[str, str]:
    """(namespace, full node name) of ``--node``: '/robot1/reasonvos_perception' -> ('/robot1', same)."""
    full = "/" + node.strip("/")
    if full == "/":
        raise ValueError("--node must name the perception node, e.g. /reasonvos_perception")
    namespace = full.rsplit("/", 1)[0]
    return namespace, full


def in_namespace(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else f"/{name}"


@contextlib.contextmanager
def client_node(name: str) -> Iterator[Any]:
    """rclpy initialised with one node for the command; shut down on exit (also on Ctrl-C)."""
    import rclpy

    rclpy.init()
    node = rclpy.create_node(name)
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def call_service(node: Any, srv_type: Any, service: str, request: Any, wait_s: float) -> Any:
    """The response of one service call, or None (with a message on stderr) when the service is not there."""
    import sys

    import rclpy

    client = node.create_client(srv_type, service)
    if not client.wait_for_service(timeout_sec=wait_s):
        print(
            f"no service '{service}' within {wait_s} s: is the node running and active (check --node)?", file=sys.stderr
        )
        return None
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=wait_s)
    if not future.done():
        print(f"'{service}' did not answer within {wait_s} s", file=sys.stderr)
        return None
    return future.result()
