"""``reasonvos``: the project's command line (golden checks, offline segmentation/evaluation, bag tools).

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; they are
imported lazily so ``reasonvos --help`` stays fast and a missing optional dependency only affects its command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "golden": ("reasonvos_ros.golden.cli", "reproduce golden reference outputs (any case directory)"),
    # Client actions against a running perception node (for machines without the `ros2` command).
    "instruct": ("reasonvos_ros.ros.client.instruct", "send an instruction for a target to the perception node"),
    "reset": ("reasonvos_ros.ros.client.reset", "forget one target (or all) in the perception node"),
    "enable": ("reasonvos_ros.ros.client.enable", "resume the perception node's processing"),
    "disable": ("reasonvos_ros.ros.client.enable", "pause the perception node's processing"),
    "results": ("reasonvos_ros.ros.client.results", "print the perception node's results as they arrive"),
    "bag-from-video": ("reasonvos_ros.bag.from_video", "write a rosbag2 bag (mcap/sqlite3) from a video file"),
    "bag-play": ("reasonvos_ros.bag.play", "replay a bag into live ROS 2 topics at recorded timing"),
    "bag-record": ("reasonvos_ros.bag.record", "record live ROS 2 topics into a bag"),
    "bag-render": ("reasonvos_ros.bag.render", "draw results over a bag's images into an mp4 and a contact sheet"),
    "segment": ("reasonvos_ros.evaluation.cli_segment", "segment an instruction's object in a video (masks, overlay)"),
    "eval": ("reasonvos_ros.evaluation.cli_eval", "run and score the pipeline on a ReVOS-format dataset (J, F, R)"),
    "publish-wav": ("reasonvos_ros.ros.wav_publisher", "publish a WAV file as AudioChunk messages in real time"),
    "weights": ("reasonvos_ros.weights.cli", "list, download and verify the supported model sets; write params files"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reasonvos", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text)
        if name == chosen:
            modules[name] = importlib.import_module(module_name)
            modules[name].add_arguments(sub_parser)
    args = parser.parse_args(argv)
    try:
        return modules[args.command].run(args)
    except BrokenPipeError:
        # The reader went away (`reasonvos weights list | head`, `reasonvos results | grep -m1 ...`): that ends the
        # command normally; later writes (and the interpreter's final flush) go nowhere instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
