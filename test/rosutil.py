"""Helpers for tests that use real ROS 2 (rclpy + Fast DDS) on this machine.

- :func:`ros_domain_id`: a ROS_DOMAIN_ID in 1..100 private to this test process (pid-derived, collisions with
  concurrent test runs avoided with lock files under the temp folder).
- :func:`ros_env`: the environment for ROS processes: that domain, localhost-only discovery, AMENT_PREFIX_PATH =
  the venv, ROS_LOG_DIR in a temp folder, PYTHONPATH with the repository root first.
- :func:`spawn_python` / :class:`RosProcess`: run a module, script or code string in that environment, output
  captured to a file; ``stop()`` sends SIGINT, then SIGTERM, then SIGKILL.
- :func:`ros_node`: an in-test rclpy context + node with an executor spinning in a thread.
- :class:`MessageCollector` / :func:`wait_until`: wait for N messages or a condition, with a timeout.

Nothing here is imported by the package; tests import it as ``from rosutil import ...`` (pytest puts test/ on
sys.path) or ``from test.rosutil import ...``.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
_DOMAIN_RANGE = range(1, 101)
_domain: int | None = None
_domain_lock_file = None
_log_dir: str | None = None


def ros_domain_id() -> int:
    """This process's ROS_DOMAIN_ID (stable for its lifetime): the first free id in 1..100 starting at one
    derived from the pid, reserved by an exclusive lock file that is released when the process exits."""
    global _domain, _domain_lock_file
    if _domain is not None:
        return _domain
    lock_dir = Path(tempfile.gettempdir()) / "reasonvos_ros_domains"
    lock_dir.mkdir(exist_ok=True)
    start = os.getpid() % len(_DOMAIN_RANGE)
    for offset in range(len(_DOMAIN_RANGE)):
        candidate = _DOMAIN_RANGE[(start + offset) % len(_DOMAIN_RANGE)]
        handle = open(lock_dir / f"domain_{candidate}.lock", "w")  # noqa: SIM115 (held until exit)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _domain, _domain_lock_file = candidate, handle
        atexit.register(handle.close)
        return candidate
    raise RuntimeError(f"every ROS_DOMAIN_ID in {_DOMAIN_RANGE} is taken by other test runs")


def ros_log_dir() -> str:
    global _log_dir
    if _log_dir is None:
        _log_dir = tempfile.mkdtemp(prefix="reasonvos_ros_log_")
    return _log_dir


def ros_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of os.environ configured for an isolated local ROS 2 graph (see module docstring)."""
    env = dict(os.environ)
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy; conflicts with the discovery range
    env["ROS_DOMAIN_ID"] = str(ros_domain_id())
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["AMENT_PREFIX_PATH"] = sys.prefix
    env["ROS_LOG_DIR"] = ros_log_dir()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    if extra:
        env.update(extra)
    return env


def configure_this_process() -> None:
    """Apply :func:`ros_env` to this process (before creating an rclpy context in it)."""
    for key, value in ros_env().items():
        if os.environ.get(key) != value:
            os.environ[key] = value
    os.environ.pop("ROS_LOCALHOST_ONLY", None)


def in_process_perception_node(values: dict[str, Any], namespace: str, cli_args: list[str] | None = None):
    """(context, node): a PerceptionNode in this process, in its own rclpy context (no signal handlers), with
    scripted backends unless ``values`` says otherwise, not yet configured. The caller shuts the context down."""
    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    from reasonvos_ros.ros.perception_node import PerceptionNode

    configure_this_process()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    values = {"sampler": "scripted", "segmenter": "scripted", "tracker": "scripted", **values}
    node = PerceptionNode(
        context=context,
        parameter_overrides=[Parameter(name, value=value) for name, value in values.items()],
        namespace=namespace,
        cli_args=cli_args,
    )
    return context, node


class RosProcess:
    """A child Python process; stdout and stderr go to one log file (no pipe can fill up and block it)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], cwd: str | Path, name: str) -> None:
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix=f"{name}_", suffix=".log", dir=ros_log_dir())[1])
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop/wait)
        self.process = subprocess.Popen(
            list(argv), env=env, cwd=str(cwd), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> str:
        """Wait until ``text`` appears in the output; AssertionError (with the output) on timeout or exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output = self.output()
            if text in output:
                return output
            if self.returncode is not None:
                raise AssertionError(f"{self.name} exited ({self.returncode}) before printing {text!r}:\n{output}")
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not print {text!r} within {timeout} s:\n{self.output()}")

    def wait(self, timeout: float) -> int:
        """Wait for a normal exit; kills the process and raises AssertionError on timeout."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.name} still running after {timeout} s:\n{self.output()}") from None
        finally:
            self._log.close()

    def stop(self, sigint_timeout: float = 5.0, sigterm_timeout: float = 3.0) -> int:
        """SIGINT (lets rclpy/Fast DDS clean up), then SIGTERM, then SIGKILL. Returns the exit code."""
        for sig, timeout in ((signal.SIGINT, sigint_timeout), (signal.SIGTERM, sigterm_timeout)):
            if self.process.poll() is not None:
                break
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> RosProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.stop()
        else:
            self._log.close()


def spawn_python(
    *,
    module: str | None = None,
    script: str | Path | None = None,
    code: str | None = None,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    name: str | None = None,
    cwd: str | Path = REPO_ROOT,
) -> RosProcess:
    """Start ``python -m module``, ``python script`` or ``python -c code`` with ``args`` in :func:`ros_env`."""
    if sum(x is not None for x in (module, script, code)) != 1:
        raise ValueError("give exactly one of module, script, code")
    if module is not None:
        head = ["-m", module]
    elif script is not None:
        head = [str(script)]
    else:
        head = ["-c", code]
    label = name or (module or Path(str(script)).stem if code is None else "python_code").replace(".", "_")
    return RosProcess([sys.executable, *head, *map(str, args)], env or ros_env(), cwd, label)


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class RosHarness:
    """What :func:`ros_node` yields: ``node``, ``executor``, ``context`` and helpers."""

    def __init__(self, node: Any, executor: Any, context: Any) -> None:
        self.node, self.executor, self.context = node, executor, context

    def collect(self, msg_type: type, topic: str, qos: Any = 10, raw: bool = False) -> MessageCollector:
        return MessageCollector(self.node, msg_type, topic, qos, raw)

    def wait_for_subscribers(self, publisher: Any, count: int = 1, timeout: float = 10.0) -> None:
        wait_until(
            lambda: publisher.get_subscription_count() >= count, timeout, f"{count} subscriber(s) on {publisher.topic}"
        )

    def wait_for_publishers(self, subscription: Any, count: int = 1, timeout: float = 10.0) -> None:
        wait_until(
            lambda: subscription.get_publisher_count() >= count,
            timeout,
            f"{count} publisher(s) on {subscription.topic_name}",
        )


@contextlib.contextmanager
def ros_node(name: str = "test_node", *, multithreaded: bool = False) -> Iterator[RosHarness]:
    """A private rclpy context (this test's domain, no signal handlers) with one node, spun in a daemon thread."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    configure_this_process()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(name, context=context)
    executor = (MultiThreadedExecutor if multithreaded else SingleThreadedExecutor)(context=context)
    executor.add_node(node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set() and context.ok():
            try:
                executor.spin_once(timeout_sec=0.05)
            except Exception:  # the context is being shut down
                if stop.is_set() or not context.ok():
                    return
                raise

    thread = threading.Thread(target=spin, name=f"spin_{name}", daemon=True)
    thread.start()
    try:
        yield RosHarness(node, executor, context)
    finally:
        stop.set()
        thread.join(timeout=5)
        executor.shutdown(timeout_sec=1)
        node.destroy_node()
        context.try_shutdown()


class MessageCollector:
    """Subscribes to ``topic`` and keeps every message (with its arrival time, time.monotonic())."""

    def __init__(self, node: Any, msg_type: type, topic: str, qos: Any = 10, raw: bool = False) -> None:
        self._condition = threading.Condition()
        self.messages: list[Any] = []
        self.arrivals: list[float] = []
        self.subscription = node.create_subscription(msg_type, topic, self._on_message, qos, raw=raw)

    def _on_message(self, message: Any) -> None:
        with self._condition:
            self.messages.append(message)
            self.arrivals.append(time.monotonic())
            self._condition.notify_all()

    def __len__(self) -> int:
        with self._condition:
            return len(self.messages)

    def wait_for(self, count: int, timeout: float) -> list[Any]:
        """The first ``count`` messages; AssertionError saying how many arrived on timeout."""
        with self._condition:
            arrived = self._condition.wait_for(lambda: len(self.messages) >= count, timeout=timeout)
            if not arrived:
                raise AssertionError(
                    f"received {len(self.messages)} of {count} messages on {self.subscription.topic_name} "
                    f"within {timeout} s"
                )
            return list(self.messages[:count])
