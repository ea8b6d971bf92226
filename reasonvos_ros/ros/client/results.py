"""``reasonvos results``: print the node's results as they arrive (like ``ros2 topic echo <node>/results``), one
line per target per frame:

    <stamp s> <target> <STATUS> understood=<target phrase> (<confidence>) bbox=<x>,<y>,<w>x<h> point3d=<x>,<y>,<z> m

``understood`` is what the segmenter took the instruction to mean (empty before it answered), ``point3d`` is
``-`` without depth; a non-empty reason (why LOST, NOT_PRESENT, ERROR) ends the line.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from . import add_node_argument, client_node, node_names

STATUS_NAMES = {0: "SEARCHING", 1: "TRACKING", 2: "LOST", 3: "NOT_PRESENT", 4: "ERROR"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=0, help="stop after this many frames (default: run until Ctrl-C)")
    parser.add_argument("--target", help="print only this target")
    parser.add_argument("--timeout", type=float, default=0.0, help="stop after this many seconds (default: never)")
    add_node_argument(parser)


def format_result(stamp: Any, result: Any) -> str:
    """One line for one target of one frame (see the module docstring)."""
    status = STATUS_NAMES.get(result.status, str(result.status))
    phrase = result.target_phrase or ""
    understood = f"understood={phrase!r} ({result.understanding_confidence:.2f})" if phrase else "understood=-"
    if result.bbox_width > 0 and result.bbox_height > 0:
        bbox = f"bbox={result.bbox_x},{result.bbox_y},{result.bbox_width}x{result.bbox_height}"
    else:
        bbox = "bbox=-"
    if result.point_3d_valid:
        point = f"point3d={result.point_3d.x:.3f},{result.point_3d.y:.3f},{result.point_3d.z:.3f} m"
    else:
        point = "point3d=-"
    line = f"{stamp.sec}.{stamp.nanosec:09d} {result.target_id} {status} {understood} {bbox} {point}"
    return line + (f" ({result.reason})" if result.reason else "")


def run(args: argparse.Namespace) -> int:
    import rclpy

    from reasonvos_ros.msg import TargetResultArray

    _, full = node_names(args.node)
    topic = f"{full}/results"
    frames = 0
    done = threading.Event()

    def on_results(array: TargetResultArray) -> None:
        nonlocal frames
        lines = [format_result(array.header.stamp, r) for r in array.results if args.target in (None, r.target_id)]
        if not lines:
            return
        print("\n".join(lines), flush=True)
        frames += 1
        if args.count and frames >= args.count:
            done.set()

    with client_node("reasonvos_results") as node:
        node.create_subscription(TargetResultArray, topic, on_results, 10)
        print(f"listening on '{topic}' (Ctrl-C to stop)", file=sys.stderr, flush=True)
        start = node.get_clock().now()
        try:
            while rclpy.ok() and not done.is_set():
                rclpy.spin_once(node, timeout_sec=0.1)
                if args.timeout and (node.get_clock().now() - start).nanoseconds > args.timeout * 1e9:
                    break
        except KeyboardInterrupt:
            return 0
    if args.count and frames < args.count:
        print(f"received {frames} of {args.count} frames", file=sys.stderr)
        return 1
    return 0
