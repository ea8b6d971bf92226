"""The perception node's process: command line, autostart, spinning, and an orderly exit on SIGINT/SIGTERM.

``main`` is the console entry point (``reasonvos_perception_node``); ``python -m reasonvos_ros.ros.perception_node``
runs it too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn

from .perception_node import NODE_NAME, PerceptionNode


def _translate_args(argv: list[str]) -> list[str]:
    """Accept ``--params-file FILE`` before ``--ros-args`` as a shorthand (the launch-file equivalent)."""
    out, ros, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--params-file" and i + 1 < len(argv) and "--ros-args" not in argv[:i]:
            ros += ["--params-file", argv[i + 1]]
            i += 2
            continue
        out.append(argv[i])
        i += 1
    if ros:
        out = [*out, "--ros-args", *ros] if "--ros-args" not in out else [*out, *ros]
    return out


def _autostart(node: PerceptionNode) -> str | None:
    """Configure and activate; None on success, else what failed (the error is already logged)."""
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        return node.configure_error or "configure failed"
    if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
        return "activate failed"
    return None


def run(argv: list[str] | None = None) -> int:
    """Spin the node until SIGINT/SIGTERM (or a shutdown); returns the exit code. The ROS side is torn down in
    order here (workers stopped, executor shut down, node destroyed, context shut down and destroyed, which
    removes the DDS participant and its shared memory); worker threads may still be inside a model call."""
    args = _translate_args(sys.argv if argv is None else argv)
    # rclpy's SIGINT handler shuts the context down (which ends the spin, as for SIGTERM) and then passes the
    # signal on to Python's handler. Python's default one raises KeyboardInterrupt at an arbitrary bytecode of the
    # main thread, which can leave the executor holding entities (and so the DDS participant and its shm) after
    # the spin: while spinning, the context shutdown alone ends the node; before that (autostart loading the
    # models) Ctrl-C interrupts as usual.
    interruptible = [True]

    def on_sigint(signum, frame) -> None:
        if interruptible[0]:
            raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread (embedded use): keep the default
        signal.signal(signal.SIGINT, on_sigint)
    try:
        rclpy.init(args=args)
    except Exception as exc:  # rcl's RCLError: e.g. a '-p name:=value' that is not valid YAML
        print(f"reasonvos_perception: bad command line: {exc}", file=sys.stderr)
        return 2
    context = rclpy.get_default_context()
    try:
        node = PerceptionNode()
    except ParameterException as exc:  # e.g. a params file value of the wrong type for a declared parameter
        print(f"reasonvos_perception: bad parameter: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    code = 0
    try:
        failure = _autostart(node) if node.get_parameter("autostart").value else None
        if failure is not None and not node.get_parameter("wait_for_lifecycle_manager").value:
            # Without a lifecycle manager nothing would ever retry: end with the error, so a shell or the launch
            # system sees the failure instead of a process that lives on without topics.
            node.get_logger().fatal(
                f"autostart: {failure}; exiting (set wait_for_lifecycle_manager:=true to stay unconfigured and "
                "wait for 'ros2 lifecycle set' instead)"
            )
            code = 1
        else:
            if failure is not None:
                node.get_logger().error(
                    f"autostart: {failure}; waiting for a lifecycle manager: fix the parameter "
                    f"(ros2 param set {node.get_fully_qualified_name()} NAME VALUE), then configure again "
                    f"(ros2 lifecycle set {node.get_fully_qualified_name()} configure)"
                )
            interruptible[0] = False
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:
        # SIGTERM/SIGINT shut the context down from the signal handler; the executor can then fail to build its
        # wait set ("the given context is not valid") instead of raising ExternalShutdownException: that is the
        # requested shutdown, not an error. Anything else while the context is fine is one.
        if context.ok():
            node.get_logger().error(f"executor failed: {type(exc).__name__}: {exc}")
            code = 1
    finally:
        # From here on, SIGINT/SIGTERM are ignored: the teardown is bounded (a few seconds at most), and a
        # KeyboardInterrupt raised in the middle of a step (rclpy's handler passes SIGINT on to Python's, so one
        # can still be pending from the first signal) would leave the node half destroyed and its DDS shared
        # memory behind.
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(KeyboardInterrupt, ValueError):  # ValueError: not the main thread
                signal.signal(signum, signal.SIG_IGN)
        steps = {
            "stop the engine": lambda: node.engine is None or node.engine.stop(timeout=0.5) or True,  # bounded
            # No callback may be dispatched or running, and no publish in flight or starting, while the node is
            # destroyed: an entity in use keeps the node, the context and the DDS participant (its shm) alive.
            "shut the executor down": lambda: executor.shutdown(timeout_sec=1.0),
            "wait for running callbacks": lambda: node.wait_for_callbacks(timeout=1.0),
            "wait for a publish in flight": lambda: node.stop_publishing(timeout=1.0),
            "destroy the node": lambda: node.destroy_node() or True,
            "shut the context down": lambda: rclpy.try_shutdown() or True,
            # rcl/rmw context fini: the DDS participant and its /dev/shm segments go away
            "destroy the context": lambda: context.destroy() or True,
        }
        for name, step in steps.items():
            try:
                done = step()
            except (KeyboardInterrupt, Exception) as exc:  # every step must run
                done = f"{type(exc).__name__}: {exc}"
            if done is not True:  # said on stderr: the logger may be gone already
                print(f"[{NODE_NAME}] shutdown: could not {name} ({done or 'timed out'})", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the node, then leave the process without interpreter finalization.

    A worker thread can still be inside a native call (OpenCV, torch) when the node has shut down: if the
    interpreter finalized now, that thread would be forced to exit while taking the GIL, the forced unwind would
    cross C++ frames and std::terminate would abort the process ("terminate called without an active exception",
    exit -6). Everything that must happen on exit has happened in ``run`` (ROS context destroyed, DDS shared
    memory removed); the output streams are flushed, then the process ends with ``os._exit``, every time."""
    code = 1
    try:
        code = run(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream: nothing to flush
                stream.flush()
        os._exit(code)


if __name__ == "__main__":
    main()
