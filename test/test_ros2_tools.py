"""The package used the way ROS 2 users use it, with the real upstream tools: `colcon build`, `ros2 launch`,
`ros2 lifecycle`, `ros2 topic/service/param/interface` as clients of the running node.

The tools are the unmodified upstream Jazzy sources from ../shared/ros2-upstream, installed into the venv by
tools/setup.sh (CI requires them; elsewhere this module is skipped when they are missing). Every process runs in
this test process's ROS_DOMAIN_ID with localhost-only discovery; `ros2 launch` is started with SIGINT restored
(a background launch inherits an ignored SIGINT) and stopped with SIGINT; the CLI daemon of the domain is stopped
at the end. The node runs the scripted test-double backends (segment and track saturated colours).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from rosutil import REPO_ROOT, RosProcess, ros_env, ros_node, spawn_python, wait_until
from scenes import square_scene

pytestmark = pytest.mark.ros

BIN = Path(sys.executable).parent
ROS2 = BIN / "ros2"
if not ROS2.exists() or shutil.which("colcon", path=str(BIN)) is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("the upstream ROS 2 tools are not installed in the venv (tools/setup.sh installs them)")
    pytest.skip(
        "upstream ROS 2 tools not installed (tools/setup.sh installs them from ../shared)", allow_module_level=True
    )

# A process that restores the default SIGINT action and becomes the given command (see the module docstring).
_EXEC_WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"
)
SCRIPTED = {"sampler": "scripted", "segmenter": "scripted", "tracker": "scripted", "qos_reliability": "reliable"}
NODE_NAME = "reasonvos_perception"


def params_file(path: Path, key: str = "/**", **values) -> Path:
    """A params file in a form the README documents ('/**' or '/**/reasonvos_perception'), scripted backends."""
    path.write_text(yaml.safe_dump({key: {"ros__parameters": {**SCRIPTED, **values}}}))
    return path


def ros2(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROS2), *args], env=env or ros_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


def ros2_until(args: list[str], accept, timeout: float = 40, what: str = "") -> str:
    """Repeat a ros2 command until ``accept(stdout)``: the CLI daemon's first graph view can miss new nodes."""
    outputs = []

    def attempt():
        result = ros2(*args, timeout=timeout)
        outputs.append(result.stdout + result.stderr)
        return result.stdout if accept(result.stdout) else None

    try:
        return wait_until(attempt, timeout, what or " ".join(args), interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last output:\n{outputs[-1] if outputs else ''}") from None


def launch(*arguments: str, name: str, env: dict | None = None, prefix: list[str] | None = None) -> RosProcess:
    command = [*(prefix or []), str(ROS2), "launch", "reasonvos_ros", "perception.launch.py", *arguments]
    return spawn_python(code=_EXEC_WITH_SIGINT, args=command, env=env, name=name)


def stop_launch(proc: RosProcess) -> None:
    code = proc.stop(sigint_timeout=15)
    output = proc.output()
    assert code in (0, -2, 130), f"ros2 launch exited with {code}:\n{output[-3000:]}"
    assert "process has died" not in output, output[-3000:]


@pytest.fixture(scope="module", autouse=True)
def stop_cli_daemon():
    """The CLI daemon of this test's domain outlives the commands that start it: stop it (and make sure)."""
    yield
    for _ in range(3):
        ros2("daemon", "stop", timeout=30)
        if "is not running" in ros2("daemon", "status", timeout=30).stdout:
            return


# ------------------------------------------------------------------------------------------------ colcon


def test_colcon_build_installs_messages_modules_executables_and_launches(tmp_path):
    """colcon build in a fresh workspace (what the README tells robot users), then use only that install."""
    workspace = tmp_path / "ws"
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "reasonvos_ros").symlink_to(REPO_ROOT)
    env = ros_env({"CMAKE_PREFIX_PATH": sys.prefix, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    env.pop("PYTHONPATH")  # the install, not the checkout, must provide reasonvos_ros
    cmake_args = ["-DBUILD_TESTING=OFF"] + (["-G", "Ninja"] if shutil.which("ninja") else [])
    build = subprocess.run(
        [str(BIN / "colcon"), "build", "--event-handlers", "console_cohesion+", "--cmake-args", *cmake_args],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-2000:]
    install = workspace / "install" / "reasonvos_ros"
    for exe in ("reasonvos_perception_node", "reasonvos_speech_node", "reasonvos"):
        assert os.access(install / "lib" / "reasonvos_ros" / exe, os.X_OK), exe
    assert (install / "share" / "reasonvos_ros" / "launch" / "perception.launch.py").is_file()

    def sourced(command: str, **kwargs) -> subprocess.CompletedProcess:
        script = f"source '{workspace}/install/setup.bash' && {command}"
        return subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, **kwargs)

    probe = (
        "import reasonvos_ros, reasonvos_ros.msg, reasonvos_ros.srv, reasonvos_ros.ros.perception_node as node; "
        "from reasonvos_ros.msg import TargetResultArray; from reasonvos_ros.srv import ResetTargets; "
        "TargetResultArray(); ResetTargets.Request(target_id='x'); "
        "print(reasonvos_ros.__file__, reasonvos_ros.msg.__file__, node.__file__)"
    )
    result = sourced(f'python -c "{probe}"', timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    files = result.stdout.split()
    assert len(files) == 3 and all(f.startswith(str(install)) for f in files), files

    # ros2 launch from that install (its share/ and lib/), under a namespace with a params file.
    config = params_file(tmp_path / "params.yaml", max_targets=5)
    quoted = " ".join(
        f"'{a}'"
        for a in (
            sys.executable,
            "-c",
            _EXEC_WITH_SIGINT,
            str(ROS2),
            "launch",
            "reasonvos_ros",
            "perception.launch.py",
            "namespace:=colcon_ws",
            f"params_file:={config}",
        )
    )
    proc = RosProcess(
        ["bash", "-c", f"source '{workspace}/install/setup.bash' && exec {quoted}"], env, tmp_path, "colcon_launch"
    )
    try:
        output = proc.wait_for_output("active: subscribed", timeout=90)
        pid = int(re.search(r"reasonvos_perception_node-1\]: process started with pid \[(\d+)\]", output).group(1))
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert str(install / "lib" / "reasonvos_ros" / "reasonvos_perception_node").encode() in cmdline, cmdline
        got = ros2_until(
            ["param", "get", f"/colcon_ws/{NODE_NAME}", "max_targets"], lambda out: "value is" in out, what="param"
        )
        assert got.strip() == "Integer value is: 5"
    finally:
        stop_launch(proc)


def test_launch_show_args_describes_every_argument():
    result = ros2("launch", "reasonvos_ros", "perception.launch.py", "--show-args")
    assert result.returncode == 0, result.stderr
    blocks = re.findall(r"^    '(\w+)':\n        (.+)$", result.stdout, flags=re.M)
    names = dict(blocks)
    expected = {
        "params_file",
        "image",
        "depth",
        "camera_info",
        "namespace",
        "autostart",
        "speech",
        "audio",
        "wake_phrase",
    }
    assert set(names) == expected, result.stdout
    for name, description in names.items():
        assert "No description given" not in description and len(description) > 30, (name, description)


# --------------------------------------------------------------------------------------- interface show


@pytest.mark.parametrize("path", sorted([*(REPO_ROOT / "msg").glob("*.msg"), *(REPO_ROOT / "srv").glob("*.srv")]))
def test_interface_show_every_message_and_service(path):
    result = ros2("interface", "show", f"reasonvos_ros/{path.parent.name}/{path.stem}")
    assert result.returncode == 0, result.stderr
    shown = [line.split("#")[0].split() for line in result.stdout.splitlines()]
    shown = [tokens for tokens in shown if tokens]
    for line in path.read_text().splitlines():
        tokens = line.split("#")[0].split()
        if tokens:
            assert tokens in shown, f"{path.name}: {line!r} not in\n{result.stdout}"


# ------------------------------------------------------------------ one launched node, driven by the CLI


class FrameFeeder:
    """Publishes a red square moving over a textured background on the remapped camera topic, 15 frames/s."""

    def __init__(self, harness, topic: str) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.frames, _ = square_scene(40, objects={"red": (20, 30, 1, 0, 24)})
        self.publisher = harness.node.create_publisher(
            Image, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.sent: dict[tuple[int, int], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from std_msgs.msg import Header

        from reasonvos_ros.ros.conversions import nanoseconds_to_stamp, numpy_to_image_msg

        t = 0
        while not self._stop.is_set():
            stamp = nanoseconds_to_stamp(1_800_000_000_000_000_000 + t * 66_666_666)
            self.sent[(stamp.sec, stamp.nanosec)] = t
            header = Header(stamp=stamp, frame_id="cli_camera")
            self.publisher.publish(numpy_to_image_msg(self.frames[t % len(self.frames)], "rgb8", header))
            t += 1
            time.sleep(1 / 15)

    def __enter__(self) -> FrameFeeder:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """`ros2 launch` (pip install) under namespace robot1, a '/**' params file and a remapped camera topic."""
    config = params_file(tmp_path_factory.mktemp("cli") / "custom.yaml", max_targets=7, reacquire_interval_s=0.0)
    proc = launch("namespace:=robot1", f"params_file:={config}", "image:=/cli_cam/image", name="launch_cli")
    try:
        proc.wait_for_output("active: subscribed to '/cli_cam/image'", timeout=90)
    except BaseException:
        proc.stop()
        raise
    with ros_node("cli_feeder") as harness, FrameFeeder(harness, "/cli_cam/image") as feeder:
        yield proc, feeder
    stop_launch(proc)


NODE = f"/robot1/{NODE_NAME}"


def test_launch_applies_namespace_params_file_and_remaps(launched):
    ros2_until(["node", "list"], lambda out: NODE in out.split(), what="node in ros2 node list")
    assert ros2_until(["param", "get", NODE, "max_targets"], lambda out: "value is" in out).strip() == (
        "Integer value is: 7"
    )
    info = ros2_until(["node", "info", NODE], lambda out: "/cli_cam/image" in out, what="remapped subscription")
    for topic in ("/robot1/instruction", "/robot1/instruction_text", f"{NODE}/results", f"{NODE}/reset"):
        assert topic in info, info


def _echo_result(topic: str, target: str, status: int) -> dict:
    """`ros2 topic echo --once` of the first array holding ``target`` with ``status`` (as YAML)."""
    condition = f"any(r.target_id == '{target}' and r.status == {status} for r in m.results)"
    result = ros2(
        "topic", "echo", "--once", "--filter", condition, topic, "reasonvos_ros/msg/TargetResultArray", timeout=60
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return yaml.safe_load(result.stdout.split("\n---")[0])


def test_cli_instruction_echo_services_and_parameters(launched):
    proc, feeder = launched
    # An instruction sent with `ros2 topic pub`; the results echoed carry the source image's header.
    pub = ros2(
        "topic",
        "pub",
        "--once",
        "/robot1/instruction",
        "reasonvos_ros/msg/Instruction",
        "{target_id: cup, text: 'the red one', source: 0}",
    )
    assert pub.returncode == 0, pub.stderr
    proc.wait_for_output("instruction for 'cup' (text): 'the red one'", timeout=20)
    array = _echo_result(f"{NODE}/results", "cup", 1)
    stamp = (array["header"]["stamp"]["sec"], array["header"]["stamp"]["nanosec"])
    assert stamp in feeder.sent, (stamp, list(feeder.sent)[-5:])
    assert array["header"]["frame_id"] == "cli_camera"
    (result,) = [r for r in array["results"] if r["target_id"] == "cup"]
    assert result["instruction"] == "the red one" and result["header"] == array["header"]
    t = feeder.sent[stamp] % len(feeder.frames)
    assert abs(result["bbox_x"] - (20 + t)) <= 2 and abs(result["bbox_y"] - 30) <= 2, result
    assert abs(result["bbox_width"] - 24) <= 2 and abs(result["bbox_height"] - 24) <= 2, result

    # The std_msgs/String convenience topic feeds target 'default'.
    text = ros2("topic", "pub", "--once", "/robot1/instruction_text", "std_msgs/msg/String", "{data: red}")
    assert text.returncode == 0, text.stderr
    proc.wait_for_output("instruction for 'default' (text): 'red'", timeout=20)

    # Services.
    def call(service: str, srv_type: str, request: str) -> str:
        result = ros2("service", "call", f"{NODE}/{service}", srv_type, request)
        assert result.returncode == 0, result.stderr
        return result.stdout

    reply = call("reset", "reasonvos_ros/srv/ResetTargets", "{target_id: cup}")
    assert "success=True" in reply and "reset 'cup'" in reply, reply
    reply = call("reset", "reasonvos_ros/srv/ResetTargets", "{target_id: nobody}")
    assert "success=False" in reply and "unknown target 'nobody'" in reply, reply
    reply = call("enable", "std_srvs/srv/SetBool", "{data: false}")
    assert "success=True" in reply and "processing paused" in reply, reply
    reply = call("enable", "std_srvs/srv/SetBool", "{data: true}")
    assert "success=True" in reply and "processing enabled" in reply, reply

    # Parameters: a valid value is set, invalid ones are refused with the configure message and change nothing.
    ok = ros2("param", "set", NODE, "lost_patience", "5")
    assert ok.stdout.strip() == "Set parameter successful", ok.stdout + ok.stderr
    assert ros2("param", "get", NODE, "lost_patience").stdout.strip() == "Integer value is: 5"
    # (ros2 param set prints a refusal on stderr and still exits 0)
    bad = ros2("param", "set", NODE, "sampler", "nonsense")
    refusal = (bad.stdout + bad.stderr).strip()
    assert refusal.startswith("Setting parameter failed: parameter 'sampler' must be one of latest, "), refusal
    assert refusal.endswith("got 'nonsense'"), refusal
    bad = ros2("param", "set", NODE, "lost_patience", "0")
    refusal = (bad.stdout + bad.stderr).strip()
    assert refusal == "Setting parameter failed: parameter 'lost_patience' must be in [1, 1000], got 0", refusal
    bad = ros2("param", "set", NODE, "tracker_options", "{oops")
    refusal = (bad.stdout + bad.stderr).strip()
    assert refusal.startswith("Setting parameter failed: parameter 'tracker_options' is not valid JSON"), refusal
    assert ros2("param", "get", NODE, "sampler").stdout.strip() == "String value is: scripted"
    assert ros2("param", "get", NODE, "lost_patience").stdout.strip() == "Integer value is: 5"
    assert "rejected parameter change: parameter 'sampler' must be one of" in proc.output()


# ------------------------------------------------------------------------------ other launch configurations


def test_launch_autostart_false_is_driven_by_ros2_lifecycle(tmp_path):
    config = params_file(tmp_path / "p.yaml", key=f"/**/{NODE_NAME}", max_targets=3)
    proc = launch("namespace:=managed", f"params_file:={config}", "autostart:=false", name="launch_lifecycle")
    node = f"/managed/{NODE_NAME}"
    try:
        proc.wait_for_output("process started", timeout=60)
        assert ros2_until(["lifecycle", "get", node], lambda out: "[" in out).strip() == "unconfigured [1]"
        for transition, state in (("configure", "inactive [2]"), ("activate", "active [3]")):
            result = ros2("lifecycle", "set", node, transition)
            assert result.stdout.strip() == "Transitioning successful", result.stdout + result.stderr
            assert ros2("lifecycle", "get", node).stdout.strip() == state
        proc.wait_for_output("active: subscribed", timeout=10)
        assert "segmenter=scripted" in proc.output()  # the '/**/reasonvos_perception' file applied
        assert ros2("param", "get", node, "max_targets").stdout.strip() == "Integer value is: 3"
        result = ros2("lifecycle", "set", node, "deactivate")
        assert result.stdout.strip() == "Transitioning successful"
        assert ros2("lifecycle", "get", node).stdout.strip() == "inactive [2]"
    finally:
        stop_launch(proc)


def test_failed_autostart_ends_the_launched_process_with_the_error(tmp_path):
    config = params_file(tmp_path / "p.yaml", sampler="nonsense")
    proc = launch("namespace:=broken", f"params_file:={config}", name="launch_fail")
    try:
        output = proc.wait_for_output("process has died", timeout=60)
        assert "configure failed: parameter 'sampler' must be one of" in output, output
        assert re.search(r"reasonvos_perception_node-1\]: process has died \[pid \d+, exit code 1,", output), output
    finally:
        proc.stop()


def test_failed_autostart_waits_for_a_fix_with_wait_for_lifecycle_manager(tmp_path):
    config = params_file(tmp_path / "p.yaml", sampler="nonsense", wait_for_lifecycle_manager=True)
    proc = launch("namespace:=waiting", f"params_file:={config}", name="launch_wait")
    node = f"/waiting/{NODE_NAME}"
    try:
        proc.wait_for_output("waiting for a lifecycle manager", timeout=60)
        assert ros2_until(["lifecycle", "get", node], lambda out: "[" in out).strip() == "unconfigured [1]"
        assert ros2("param", "set", node, "sampler", "scripted").stdout.strip() == "Set parameter successful"
        for transition in ("configure", "activate"):
            result = ros2("lifecycle", "set", node, transition)
            assert result.stdout.strip() == "Transitioning successful", result.stdout + result.stderr
        assert ros2("lifecycle", "get", node).stdout.strip() == "active [3]"
    finally:
        stop_launch(proc)


def test_launch_with_speech_turns_a_spoken_instruction_into_a_target(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (tools/setup.sh installs it)")
    wav = tmp_path / "command.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "robot, the red square"], check=True, capture_output=True)
    config = params_file(tmp_path / "p.yaml")
    proc = launch(
        "namespace:=talk",
        f"params_file:={config}",
        "speech:=true",
        "audio:=/talk_mic/audio",
        "wake_phrase:=robot",
        name="launch_speech",
    )
    try:
        proc.wait_for_output("active: subscribed", timeout=90)
        proc.wait_for_output("listening on '/talk_mic/audio'", timeout=90)
        publish = subprocess.run(
            [
                str(BIN / "reasonvos"),
                "publish-wav",
                str(wav),
                "--topic",
                "/talk_mic/audio",
                "--speed",
                "2",
                "--lead-silence",
                "0.5",
                "--trail-silence",
                "0.8",
            ],
            env=ros_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert publish.returncode == 0, publish.stdout + publish.stderr
        output = proc.wait_for_output("instruction for 'default' (speech)", timeout=30)
        line = next(x for x in output.splitlines() if "instruction for 'default' (speech)" in x)
        # Whisper tiny.en may misread a word ("the red" -> "Lorentz"); what matters here is the launch wiring:
        # the spoken words reach the perception node's target, with the wake phrase stripped.
        text = line.split("(speech): ", 1)[1].lower()
        assert "square" in text and "robot" not in text, line
    finally:
        stop_launch(proc)
