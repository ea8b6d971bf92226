"""The perception node in its own process, driven over real rclpy from this test process.

The node runs the deterministic scripted backends (test doubles that segment/track saturated colours, see
reasonvos_ros.backends.scripted); the real backends are tested in their own modules.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from rosutil import ros_node, spawn_python, wait_until
from scenes import square_scene

pytestmark = pytest.mark.ros

NODE = "/reasonvos_perception"


def node_args(**params):
    base = {
        "sampler": "scripted",
        "segmenter": "scripted",
        "tracker": "scripted",
        "qos_reliability": "reliable",
        "qos_depth": 50,
        "diagnostics_period_s": 0.2,
        "reacquire_interval_s": 0.0,
    }
    base.update(params)
    args = ["--ros-args", "--params-file", "config/perception.yaml"]
    for key, value in base.items():
        # A JSON object must reach the node as a YAML string, not as a YAML mapping.
        value = "'" + json.dumps(value) + "'" if isinstance(value, dict) else value
        value = str(value).lower() if isinstance(value, bool) else value
        args += ["-p", f"{key}:={value}"]
    return args


@pytest.fixture
def node_factory():
    started = []

    def start(**params):
        proc = spawn_python(module="reasonvos_ros.ros.perception_node", args=node_args(**params), name="perception")
        started.append(proc)
        proc.wait_for_output("active: subscribed", timeout=30)
        return proc

    yield start
    for proc in started:
        code = proc.stop()
        assert code in (0, -2, 130), f"node exited with {code}:\n{proc.output()[-3000:]}"


class Client:
    """Publishers/collectors of the test side."""

    def __init__(self, harness):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String

        from reasonvos_ros.msg import Instruction, TargetResultArray

        self.h = harness
        node = harness.node
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.image = node.create_publisher(Image, "/image", qos)
        self.depth = node.create_publisher(Image, "/depth", qos)
        self.info = node.create_publisher(CameraInfo, "/camera_info", qos)
        self.instruction = node.create_publisher(Instruction, "/instruction", 10)
        self.text = node.create_publisher(String, "/instruction_text", 10)
        self.results = harness.collect(TargetResultArray, f"{NODE}/results", 50)
        self.history = harness.collect(TargetResultArray, f"{NODE}/results_history", 50)
        from diagnostic_msgs.msg import DiagnosticArray

        self.diagnostics = harness.collect(DiagnosticArray, "/diagnostics", 10)
        harness.wait_for_subscribers(self.image)
        harness.wait_for_subscribers(self.instruction)
        self.sent_headers = {}

    def header(self, t):
        from std_msgs.msg import Header

        from reasonvos_ros.ros.conversions import nanoseconds_to_stamp

        return Header(stamp=nanoseconds_to_stamp(1_700_000_000_000_000_000 + t * 33_333_333), frame_id="camera_optical")

    def send_frame(self, t, image, encoding="rgb8"):
        from reasonvos_ros.ros.conversions import numpy_to_image_msg

        msg = numpy_to_image_msg(image, encoding, self.header(t))
        self.sent_headers[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = t
        self.image.publish(msg)
        return msg

    def say(self, text, target_id=None):
        from std_msgs.msg import String

        from reasonvos_ros.msg import Instruction

        if target_id is None:
            self.text.publish(String(data=text))
        else:
            self.instruction.publish(Instruction(target_id=target_id, text=text, source=Instruction.SOURCE_TEXT))

    def frame_of(self, array_msg):
        return self.sent_headers.get((array_msg.header.stamp.sec, array_msg.header.stamp.nanosec))

    def latest(self, target_id):
        for array in reversed(self.results.messages):
            for result in array.results:
                if result.target_id == target_id:
                    return array, result
        return None, None

    def wait_status(self, target_id, status, timeout=15.0, after=None, feed=None):
        """Wait until the newest result of ``target_id`` has ``status``; ``feed()`` keeps frames coming
        (statuses are only published with frames)."""

        def check():
            if feed is not None:
                feed()
            array, result = self.latest(target_id)
            return result is not None and result.status == status and (after is None or self.frame_of(array) >= after)

        wait_until(check, timeout, f"{target_id} with status {status}")
        return self.latest(target_id)

    def diagnostic_values(self):
        status = self.diagnostics.messages[-1].status[0]
        return {kv.key: kv.value for kv in status.values}


def mask_of(result):
    from reasonvos_ros.ros.conversions import image_msg_to_mask

    return image_msg_to_mask(result.mask)


def test_results_carry_source_header_and_correct_masks(node_factory):
    from reasonvos_ros.msg import TargetResult

    node_factory()
    images, masks = square_scene(40, objects={"red": (10, 20, 2, 1, 24)})
    with ros_node("client") as h:
        c = Client(h)
        for t in range(5):
            c.send_frame(t, images[t])
            time.sleep(0.02)
        c.say("the red square")
        for t in range(5, 40):
            c.send_frame(t, images[t])
            time.sleep(0.03)
        array, result = c.wait_status("default", TargetResult.STATUS_TRACKING)
        wait_until(lambda: c.frame_of(c.results.messages[-1]) == 39, 10, "result for the last frame")
        array = c.results.messages[-1]
        t = c.frame_of(array)
        assert array.header.frame_id == "camera_optical" and array.header == c.header(t)
        result = array.results[0]
        assert result.header == array.header and result.mask.header == array.header
        assert np.array_equal(mask_of(result), masks["red"][t])
        ys, xs = np.nonzero(masks["red"][t])
        assert (result.bbox_x, result.bbox_y, result.bbox_width, result.bbox_height) == (
            xs.min(),
            ys.min(),
            xs.max() - xs.min() + 1,
            ys.max() - ys.min() + 1,
        )
        assert masks["red"][t][int(result.point_y), int(result.point_x)]
        assert result.instruction == "the red square" and not result.point_3d_valid
        assert result.keyframe_stamp.sec > 0
        # What the segmenter understood travels with every result, history included.
        assert (result.target_phrase, result.understanding_confidence) == ("red object", 1.0)
        assert result.explanation == "the instruction names the colour red"
        assert len(c.history) > 0  # backward pass / catch-up results
        assert all(r.target_phrase == "red object" for a in c.history.messages for r in a.results)


def test_replacement_two_targets_and_reset(node_factory):
    from reasonvos_ros.msg import TargetResult
    from reasonvos_ros.srv import ResetTargets

    node_factory(segmenter_options={"delay_s": 0.3})
    images, masks = square_scene(
        200, objects={"red": (5, 5, 0, 0, 20), "blue": (100, 60, 0, 0, 20), "green": (60, 80, 0, 0, 16)}
    )
    with ros_node("client") as h:
        c = Client(h)
        reset = h.node.create_client(ResetTargets, f"{NODE}/reset")
        assert reset.wait_for_service(timeout_sec=10)
        t = 0

        def pump(n):
            nonlocal t
            for _ in range(n):
                c.send_frame(t, images[t])
                t += 1
                time.sleep(0.02)

        pump(3)
        c.say("the red one", "a")
        pump(2)
        c.say("the blue one", "a")  # replaces the red instruction while its segmentation is running
        c.say("the green one", "b")
        pump(10)
        c.wait_status("a", TargetResult.STATUS_TRACKING, feed=lambda: pump(1))
        c.wait_status("b", TargetResult.STATUS_TRACKING, feed=lambda: pump(1))
        pump(5)
        array = c.results.messages[-1]
        by_id = {r.target_id: r for r in array.results}
        assert set(by_id) == {"a", "b"}
        frame = c.frame_of(array)
        assert by_id["a"].instruction == "the blue one"
        assert np.array_equal(mask_of(by_id["a"]), masks["blue"][frame])
        assert np.array_equal(mask_of(by_id["b"]), masks["green"][frame])
        # No result for "a" ever carried the red instruction's mask after the replacement.
        for msg in c.results.messages:
            for r in msg.results:
                if r.target_id == "a" and r.status == TargetResult.STATUS_TRACKING:
                    assert r.instruction == "the blue one"

        response = reset.call(ResetTargets.Request(target_id="nobody"))
        assert not response.success and "unknown target" in response.message
        response = reset.call(ResetTargets.Request(target_id="a"))
        assert response.success
        count = len(c.results)
        pump(5)
        wait_until(lambda: len(c.results) >= count + 3, 10, "results after reset")
        assert {r.target_id for r in c.results.messages[-1].results} == {"b"}


def test_lifecycle_transitions_and_failed_configure(node_factory):
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    node_factory()
    images, _ = square_scene(60)
    with ros_node("client") as h:
        c = Client(h)
        change = h.node.create_client(ChangeState, f"{NODE}/change_state")
        get = h.node.create_client(GetState, f"{NODE}/get_state")
        set_params = h.node.create_client(SetParameters, f"{NODE}/set_parameters")
        for client in (change, get, set_params):
            assert client.wait_for_service(timeout_sec=10)

        def state():
            return get.call(GetState.Request()).current_state.id

        def transition(tid):
            return change.call(ChangeState.Request(transition=Transition(id=tid))).success

        assert state() == State.PRIMARY_STATE_ACTIVE
        c.say("red")
        for t in range(10):
            c.send_frame(t, images[t])
            time.sleep(0.03)
        wait_until(lambda: len(c.results) > 0, 10, "results while active")
        assert transition(Transition.TRANSITION_DEACTIVATE) and state() == State.PRIMARY_STATE_INACTIVE
        time.sleep(0.3)
        count = len(c.results)
        for t in range(10, 20):
            c.send_frame(t, images[t])
            time.sleep(0.02)
        time.sleep(0.5)
        assert len(c.results) == count  # inactive: nothing processed
        assert transition(Transition.TRANSITION_CLEANUP) and state() == State.PRIMARY_STATE_UNCONFIGURED
        # A bad value is rejected when it is set, with the message configure would give.
        bad = Parameter(
            name="sampler_options", value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="{not json")
        )
        result = set_params.call(SetParameters.Request(parameters=[bad])).results[0]
        assert not result.successful and result.reason.startswith("parameter 'sampler_options' is not valid JSON")
        # A configuration that is well-formed but cannot load: configure fails clearly, the node stays up and
        # can be fixed.
        unknown_option = Parameter(
            name="tracker_options",
            value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value='{"no_such_option": 1}'),
        )
        assert set_params.call(SetParameters.Request(parameters=[unknown_option])).results[0].successful
        assert not transition(Transition.TRANSITION_CONFIGURE)
        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        good = Parameter(
            name="tracker_options", value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="{}")
        )
        assert set_params.call(SetParameters.Request(parameters=[good])).results[0].successful
        assert transition(Transition.TRANSITION_CONFIGURE)
        assert transition(Transition.TRANSITION_ACTIVATE) and state() == State.PRIMARY_STATE_ACTIVE
        c.say("red")
        for t in range(20, 40):
            c.send_frame(t, images[t])
            time.sleep(0.03)
        wait_until(lambda: len(c.results) > count, 10, "results after re-activation")


def test_depth_to_3d_on_known_geometry(node_factory):
    """A red square on a plane 1.5 m away (background at 3 m); the 3D point must be within 1 cm."""
    from geometry_msgs.msg import PointStamped
    from sensor_msgs.msg import CameraInfo

    from reasonvos_ros.ros.conversions import numpy_to_image_msg

    node_factory(use_depth=True)
    height, width, fx, fy, cx, cy = 120, 160, 200.0, 210.0, 80.5, 60.5
    images, masks = square_scene(30, height, width, objects={"red": (30, 30, 1, 0, 30)})
    with ros_node("client") as h:
        c = Client(h)
        points = h.collect(PointStamped, f"{NODE}/point/default", 20)
        c.say("the red square")
        z_object = 1.5
        for t in range(30):
            header = c.header(t)
            c.send_frame(t, images[t])
            depth = np.full((height, width), 3.0, np.float32)
            depth[masks["red"][t]] = z_object
            depth[0:5, :] = np.nan  # invalid rows must be ignored
            c.depth.publish(numpy_to_image_msg(depth, "32FC1", header))
            info = CameraInfo(header=header, height=height, width=width)
            info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
            info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
            c.info.publish(info)
            time.sleep(0.03)
        point = points.wait_for(3, timeout=15)[-1]
        t = c.sent_headers[(point.header.stamp.sec, point.header.stamp.nanosec)]
        ys, xs = np.nonzero(masks["red"][t])
        # The interior point of a square is its centre; deproject it by hand.
        u, v = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
        expected = ((u - cx) * z_object / fx, (v - cy) * z_object / fy, z_object)
        error = np.linalg.norm(np.array([point.point.x, point.point.y, point.point.z]) - expected)
        assert error < 0.01, f"3D error {error * 100:.2f} cm"
        assert point.header.frame_id == "camera_optical"
        _, result = c.latest("default")
        assert result.point_3d_valid and abs(result.point_3d.z - z_object) < 1e-6


def test_bad_inputs_are_rejected_and_counted_without_crashing(node_factory):
    from sensor_msgs.msg import CameraInfo, Image

    from reasonvos_ros.msg import TargetResult
    from reasonvos_ros.ros.conversions import numpy_to_image_msg
    from reasonvos_ros.srv import ResetTargets

    proc = node_factory(use_depth=True)
    images, _ = square_scene(40, 60, 80, objects={"red": (10, 10, 0, 0, 12)})
    with ros_node("client") as h:
        c = Client(h)
        c.say("the red square")  # instruction before the first frame: accepted, runs once frames arrive
        c.say("")  # empty
        c.say("x" * 5000, "long")  # too long
        header = c.header(0)
        c.image.publish(Image(header=header, height=2, width=2, encoding="yuv999", step=6, data=bytes(12)))
        c.image.publish(Image(header=header, height=4, width=4, encoding="rgb8", step=5, data=bytes(20)))
        c.image.publish(Image(header=header, height=4, width=4, encoding="rgb8", step=12, data=bytes(10)))
        c.image.publish(Image(header=header, height=0, width=0, encoding="rgb8", step=0, data=b""))
        reset = h.node.create_client(ResetTargets, f"{NODE}/reset")
        assert reset.wait_for_service(timeout_sec=10)
        assert not reset.call(ResetTargets.Request(target_id="ghost")).success
        sent = [0]

        def send_next():
            t = sent[0] = sent[0] + 1
            hdr = c.header(t)
            c.send_frame(t, images[t % len(images)])
            depth = np.full((60, 80), np.nan if t % 2 else np.inf, np.float32)  # never a valid depth
            c.depth.publish(numpy_to_image_msg(depth, "32FC1", hdr))
            info = CameraInfo(header=hdr, height=60, width=80)
            info.k = [0.0, 0.0, 40.0, 0.0, 0.0, 30.0, 0.0, 0.0, 1.0]  # zero focal length
            c.info.publish(info)
            time.sleep(0.03)

        for _ in range(20):
            send_next()
        _, result = c.wait_status("default", TargetResult.STATUS_TRACKING, feed=send_next)
        assert not result.point_3d_valid  # no valid depth, no intrinsics: no 3D point, but 2D results flow
        wait_until(lambda: int(c.diagnostic_values().get("rejected_image", 0)) >= 4, 10, "image rejections counted")
        values = c.diagnostic_values()
        assert int(values["rejected_instruction"]) >= 2
        assert int(values["rejected_reset"]) >= 1
        assert int(values["rejected_camera_info"]) >= 1
        assert int(values["rejected_depth"]) >= 1
        assert proc.returncode is None
        log = proc.output()
        for text in (
            "unknown",
            "instruction is empty",
            "limit",
            "ghost",
            "before the first camera frame",
            "focal lengths must be positive",
            "no valid pixel",
        ):
            assert text in log, f"{text!r} not logged"


@pytest.mark.parametrize(
    ("bad", "code", "message"),
    [
        # a well-typed bad value: configure fails, and without a lifecycle manager the process ends with the error
        ("sampler: nonsense", 1, "configure failed: parameter 'sampler' must be one of"),
        ("segmenter_options: '{oops'", 1, "configure failed: parameter 'segmenter_options' is not valid JSON"),
        # a value of the wrong type for a declared parameter: rclpy refuses it when the node declares it
        ("window_jpeg_quality: high", 2, "bad parameter: "),
    ],
)
def test_failed_autostart_exits_with_an_error_code_and_the_error(tmp_path, bad, code, message):
    params = tmp_path / "bad.yaml"
    # Only this file: rcl drops an override whose type differs from an earlier params file's value.
    roles = [role for role in ("sampler", "segmenter", "tracker") if not bad.startswith(role + ":")]
    scripted = "".join(f"    {role}: scripted\n" for role in roles)
    params.write_text("/**:\n  ros__parameters:\n" + scripted + "    " + bad + "\n")
    args = ["--ros-args", "--params-file", str(params)]
    proc = spawn_python(module="reasonvos_ros.ros.perception_node", args=args, name="perception_bad")
    assert proc.wait(timeout=60) == code, proc.output()[-3000:]
    assert message in proc.output(), proc.output()[-3000:]


def test_unparsable_command_line_exits_with_an_error_code():
    args = [*node_args(), "-p", "segmenter_options:={oops"]  # not YAML: rcl cannot parse the override
    proc = spawn_python(module="reasonvos_ros.ros.perception_node", args=args, name="perception_bad_args")
    assert proc.wait(timeout=60) == 2, proc.output()[-3000:]
    assert "bad command line: " in proc.output()
