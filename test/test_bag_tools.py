"""Bag tools on a real clip (vtest.avi): make a bag, read it back, replay it into live topics received by another
process, record it, render results into an mp4 and a contact sheet; plus the overlay drawing they use."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from reasonvos_ros.bag.from_video import InstructionEvent, make_bag_from_video
from reasonvos_ros.bag.render import render_bag
from reasonvos_ros.bag.types import make_typestore
from reasonvos_ros.cli import main as cli_main
from reasonvos_ros.core.overlay import PALETTE, OverlayTarget, assign_colours, draw_overlay, panel_lines
from reasonvos_ros.ros.conversions import image_msg_to_rgb, stamp_to_nanoseconds

VTEST_CANDIDATES = [
    os.environ.get("REASONVOS_VTEST", ""),
    "/usr/share/doc/opencv-doc/examples/data/vtest.avi",
    "/usr/share/opencv4/samples/data/vtest.avi",
]
FRAMES, MAX_SIDE, START = 20, 160, 1000.0
# The player waits until every topic has --min-subscribers subscriptions (the test's and the recorder's, which
# subscribes only once it discovers the player's publishers; counting one could be either), then a little more.
# Reliable delivery then needs no further luck: the player waits for acknowledgements before it exits.
WAIT_ARGS = ["--wait-for-subscribers", "20", "--delay", "0.5"]
LOOP_ARGS = [
    "--clock",
    "--qos-depth",
    "1000",
    "--min-subscribers",
    "2",
    "--remap",
    "/image:=/camera/remapped",
    *WAIT_ARGS,
]
INSTRUCTIONS = [InstructionEvent(0.45, "the person in the white coat", "walker"), InstructionEvent(1.2, "the bag")]


@pytest.fixture(scope="module")
def vtest() -> Path:
    for candidate in VTEST_CANDIDATES:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.skip("vtest.avi not found (Debian package opencv-doc, or set REASONVOS_VTEST)")


@pytest.fixture(scope="module")
def reference_frames(vtest) -> list[np.ndarray]:
    """The first frames decoded and downsized independently of the bag tools."""
    capture = cv2.VideoCapture(str(vtest))
    frames = []
    for _ in range(FRAMES):
        ok, bgr = capture.read()
        assert ok
        scale = MAX_SIDE / max(bgr.shape[:2])
        size = (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale))
        frames.append(cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


@pytest.fixture(scope="module")
def bags(vtest, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bags")
    made = {}
    for storage in ("mcap", "sqlite3"):
        made[storage] = folder / f"clip_{storage}"
        summary = make_bag_from_video(
            vtest,
            made[storage],
            max_frames=FRAMES,
            max_side=MAX_SIDE,
            start_stamp=START,
            storage=storage,
            instructions=INSTRUCTIONS,
        )
        assert (summary.frames, summary.width, summary.height, summary.instructions) == (FRAMES, 160, 120, 2)
    return made


def read_topic(bag: Path, topic: str) -> list[tuple[int, object]]:
    with AnyReader([bag], default_typestore=make_typestore()) as reader:
        connections = [conn for conn in reader.connections if conn.topic == topic]
        return [(ts, reader.deserialize(raw, conn.msgtype)) for conn, ts, raw in reader.messages(connections)]


def raw_messages(bag: Path, topic: str) -> list[bytes]:
    with Reader(bag) as reader:
        connections = [conn for conn in reader.connections if conn.topic == topic]
        return [bytes(raw) for _, _, raw in reader.messages(connections=connections)]


# ------------------------------------------------------------------------------------------- bag-from-video


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_from_video_reads_back(bags, storage, reference_frames):
    bag = bags[storage]
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["storage_identifier"] == storage
    assert metadata["message_count"] == FRAMES + len(INSTRUCTIONS)
    with Reader(bag) as reader:
        assert {conn.topic: conn.msgtype for conn in reader.connections} == {
            "/image": "sensor_msgs/msg/Image",
            "/instruction": "reasonvos_ros/msg/Instruction",
        }
    images = read_topic(bag, "/image")
    assert len(images) == FRAMES
    for index, (timestamp, message) in enumerate(images):
        expected_ns = round(START * 1e9) + round(index * 1e9 / 10.0)  # vtest.avi reports 10 fps
        assert timestamp == expected_ns == stamp_to_nanoseconds(message.header.stamp)
        assert (message.encoding, message.header.frame_id) == ("rgb8", "camera")
        np.testing.assert_array_equal(image_msg_to_rgb(message), reference_frames[index])
    instructions = read_topic(bag, "/instruction")
    assert [(m.target_id, m.text, m.source) for _, m in instructions] == [
        ("walker", "the person in the white coat", 0),
        ("", "the bag", 0),
    ]
    assert [ts for ts, _ in instructions] == [round((START + 0.45) * 1e9), round((START + 1.2) * 1e9)]
    assert [stamp_to_nanoseconds(m.stamp) for _, m in instructions] == [ts for ts, _ in instructions]


def test_bag_from_video_jpeg_and_size(vtest, tmp_path, reference_frames):
    summary = make_bag_from_video(
        vtest, tmp_path / "jpeg", max_frames=3, size=(160, 120), image_format="jpeg", jpeg_quality=95, start_stamp=5.0
    )
    assert summary.topics == {"/image": "sensor_msgs/msg/CompressedImage"}
    messages = read_topic(tmp_path / "jpeg", "/image")
    assert [m.format for _, m in messages] == ["rgb8; jpeg compressed bgr8"] * 3
    for (_, message), reference in zip(messages, reference_frames):
        decoded = image_msg_to_rgb(message)
        assert decoded.shape == (120, 160, 3)
        assert np.abs(decoded.astype(int) - reference).mean() < 3.0


def test_bag_from_video_cli_errors(vtest, tmp_path, capsys):
    assert cli_main(["bag-from-video", str(tmp_path / "missing.avi"), str(tmp_path / "out")]) == 2
    assert "missing.avi does not exist" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    assert cli_main(["bag-from-video", str(vtest), str(tmp_path / "exists")]) == 2
    assert "already exists" in capsys.readouterr().err
    args = ["bag-from-video", str(vtest), str(tmp_path / "x"), "--instruction", "soon", "text"]
    assert cli_main(args) == 2
    assert "must be a number of seconds" in capsys.readouterr().err
    args = ["bag-from-video", str(vtest), str(tmp_path / "y"), "--instruction", "1.0", "a", "b", "c"]
    assert cli_main(args) == 2
    assert "TIME TEXT or TIME TARGET_ID TEXT" in capsys.readouterr().err
    not_video = tmp_path / "not_a_video.avi"
    not_video.write_bytes(b"nothing")
    assert cli_main(["bag-from-video", str(not_video), str(tmp_path / "z")]) == 2
    assert "not_a_video.avi" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- rendering


MASK_BOX = (slice(62, 112), slice(40, 100))  # lower half: away from the text panel at the top


def write_results_bag(path: Path, image_stamps: list[int]) -> dict[int, int]:
    """TargetResultArray messages for every even frame (exact stamps) and one 2 ms off frame 5.
    Returns stamp -> frame index for the exactly matching ones."""
    typestore = make_typestore()
    types = typestore.types
    time_cls, header_cls = types["builtin_interfaces/msg/Time"], types["std_msgs/msg/Header"]
    mask = np.zeros((120, 160), dtype=np.uint8)
    mask[MASK_BOX] = 255

    def header(ns):
        return header_cls(stamp=time_cls(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="camera")

    def result_array(ns):
        mask_msg = types["sensor_msgs/msg/Image"](
            header=header(ns), height=120, width=160, encoding="mono8", is_bigendian=0, step=160, data=mask.ravel()
        )
        result = types["reasonvos_ros/msg/TargetResult"](
            header=header(ns), target_id="walker", instruction="the person in the white coat", status=1,
            reason="", target_phrase="person", explanation="target 'person' names the COCO category 'person'",
            understanding_confidence=0.95, score=0.75, bbox_x=40, bbox_y=62, bbox_width=60, bbox_height=50, point_x=70.0,
            point_y=87.0, point_3d_valid=False, point_3d=types["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
            mask=mask_msg, keyframe_stamp=time_cls(sec=0, nanosec=0),
        )  # fmt: skip
        return types["reasonvos_ros/msg/TargetResultArray"](header=header(ns), results=[result])

    exact = {}
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        type_name = "reasonvos_ros/msg/TargetResultArray"
        connection = writer.add_connection("/reasonvos/results", type_name, typestore=typestore)
        stamps = [(stamp, index) for index, stamp in enumerate(image_stamps) if index % 2 == 0]
        stamps.append((image_stamps[5] + 2_000_000, None))
        for stamp, index in sorted(stamps):
            writer.write(connection, stamp + 30_000_000, typestore.serialize_cdr(result_array(stamp), type_name))
            if index is not None:
                exact[stamp] = index
    return exact


def read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def test_render_video_and_contact_sheet(bags, tmp_path, reference_frames):
    image_stamps = [ts for ts, _ in read_topic(bags["mcap"], "/image")]
    exact = write_results_bag(tmp_path / "results", image_stamps)
    summary = render_bag(
        bags["mcap"],
        results_bag=tmp_path / "results",
        output_video=tmp_path / "out" / "overlay.mp4",
        contact_sheet=tmp_path / "out" / "sheet.png",
        sheet_frames=8,
        sheet_columns=4,
    )
    assert (summary.frames, summary.matched, summary.results) == (FRAMES, len(exact), len(exact) + 1)
    assert summary.fps == pytest.approx(10.0)
    assert summary.size == (160, 120)

    video = read_video(tmp_path / "out" / "overlay.mp4")
    assert len(video) == FRAMES and video[0].shape == (120, 160, 3)
    colour = np.array(assign_colours(["walker"])["walker"], dtype=float)
    for index, frame in enumerate(video):
        inside = frame[MASK_BOX][5:-5, 5:-5].astype(float)  # away from the outline and the label
        original = reference_frames[index][MASK_BOX][5:-5, 5:-5].astype(float)
        if index % 2 == 0:  # a result: tinted towards the target colour
            assert np.abs(inside - colour).mean() < 0.75 * np.abs(original - colour).mean(), index
        else:  # no result (frame 5's result is 2 ms off): the image itself, up to mp4 compression
            assert np.abs(inside - original).mean() < 8.0, index

    sheet = cv2.imread(str(tmp_path / "out" / "sheet.png"))
    assert sheet.shape == (2 * (120 + 22), 4 * 160, 3)
    assert summary.sheet_frames == [0, 3, 5, 8, 11, 14, 16, 19]

    # a tolerance of 5 ms also matches the result stamped 2 ms after frame 5
    tolerant = render_bag(
        bags["mcap"], results_bag=tmp_path / "results", contact_sheet=tmp_path / "s2.png", match_tolerance=0.005
    )
    assert tolerant.matched == len(exact) + 1


def test_render_cli_and_errors(bags, tmp_path, capsys):
    out = tmp_path / "preview.mp4"
    assert cli_main(["bag-render", str(bags["sqlite3"]), "-o", str(out), "--max-frames", "5"]) == 0
    assert "5 frames (0 with a result" in capsys.readouterr().out
    assert len(read_video(out)) == 5
    assert cli_main(["bag-render", str(bags["mcap"]), "-o", str(out), "--image-topic", "/nope"]) == 2
    error = capsys.readouterr().err
    assert "image topic '/nope' not in bag" in error and "/image" in error
    assert cli_main(["bag-render", str(tmp_path / "nobag"), "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["bag-render", str(bags["mcap"]), "--results-bag", str(bags["sqlite3"]), "-o", str(out)]) == 2
    assert "cannot choose the result topic" in capsys.readouterr().err
    assert cli_main(["bag-render", str(bags["mcap"])]) == 2
    assert "nothing to do" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ overlay


def test_overlay_draws_each_target_in_its_colour():
    image = np.full((120, 160, 3), 100, dtype=np.uint8)
    left, right = np.zeros((120, 160), bool), np.zeros((120, 160), bool)
    left[60:110, 10:60], right[60:110, 100:150] = True, True
    targets = [
        OverlayTarget("a", left, (10, 60, 50, 50), (35.0, 85.0), "TRACKING", 0.9, "the left box"),
        OverlayTarget("b", right, None, None, "LOST", None, "the right box — ünïcode"),
    ]
    out = draw_overlay(image, targets, status_text="frame 3", alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 100).all(), "the input image was modified"
    colours = assign_colours(["a", "b"])
    assert colours["a"] != colours["b"]
    for target_id, (row, col) in (("a", (95, 30)), ("b", (100, 140))):  # mask interiors, clear of marks
        assert left[row, col] if target_id == "a" else right[row, col]
        expected = np.round(100 * 0.5 + np.array(colours[target_id]) * 0.5)
        np.testing.assert_allclose(out[row, col], expected, atol=1)
    assert (out[5:40] != 100).any()  # the text panel
    assert (out[62:110, 70:90] == 100).all()  # between the targets nothing is drawn


def test_overlay_panel_says_what_was_understood():
    targets = [
        OverlayTarget("a", instruction="the thing I'd use to open this bottle", status="NOT_PRESENT",
                      target_phrase="bottle opener", understanding_confidence=0.9),
        OverlayTarget("b", instruction="the mug", status="SEARCHING"),
    ]  # fmt: skip
    lines = [text for text, _ in panel_lines(targets, "frame 1")]
    assert lines == [
        "frame 1",
        "a [NOT_PRESENT]: the thing I'd use to open this bottle -> bottle opener (0.90)",
        "b [SEARCHING]: the mug",
    ]
    image = np.zeros((120, 400, 3), np.uint8)
    with_phrase = draw_overlay(image, targets[:1])
    without = draw_overlay(image, [OverlayTarget("a", instruction=targets[0].instruction, status="NOT_PRESENT")])
    assert (with_phrase != without).any()  # the phrase is drawn


def test_overlay_colours_distinct_and_stable():
    ids = [f"target_{k}" for k in range(len(PALETTE))]
    colours = assign_colours(ids)
    assert len(set(colours.values())) == len(PALETTE)
    assert assign_colours(list(reversed(ids))) == colours


@pytest.mark.parametrize(
    ("image", "targets", "match"),
    [
        (np.zeros((10, 10), np.uint8), [], "HxWx3 uint8"),
        (np.zeros((10, 10, 4), np.uint8), [], "3 channels"),
        (np.zeros((10, 10, 3), np.uint8), [OverlayTarget("a", np.zeros((5, 5), bool))], r"shape \(5, 5\)"),
    ],
)
def test_overlay_rejects_bad_input(image, targets, match):
    with pytest.raises(ValueError, match=match):
        draw_overlay(image, targets)


# ---------------------------------------------------------------------------------- live replay and record


@pytest.mark.ros
def test_play_into_live_topics_and_record(bags, tmp_path):
    pytest.importorskip("rclpy", reason="needs rclpy")
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rosutil import ros_node, spawn_python
    from sensor_msgs.msg import Image

    from reasonvos_ros.msg import Instruction

    qos = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)  # no loss if slow
    recorded = tmp_path / "recorded"
    recorder = spawn_python(
        module="reasonvos_ros.cli",
        args=["bag-record", recorded, "/image", "/instruction", "--storage", "sqlite3"],
        name="recorder",
    )
    with recorder, ros_node("bag_checker") as harness:
        images = harness.collect(Image, "/image", qos)
        instructions = harness.collect(Instruction, "/instruction", qos)
        player = spawn_python(
            module="reasonvos_ros.cli",
            args=["bag-play", bags["mcap"], "--rate", "2", "--qos-depth", "100", "--min-subscribers", "2", *WAIT_ARGS],
            name="player",
        )
        assert player.wait(timeout=60) == 0, player.output()
        assert "published /image: 20, /instruction: 2" in player.output()
        received = images.wait_for(FRAMES, timeout=10)
        assert len(instructions.wait_for(2, timeout=10)) == 2
        recorder.wait_for_output("recording /instruction", timeout=10)
        assert recorder.stop() == 0, recorder.output()
    output = recorder.output()
    assert "/image: 20, /instruction: 2" in output, output
    assert "recording /image (sensor_msgs/msg/Image, reliable)" in output  # auto QoS follows the player

    # order and stamps exactly as in the bag; timing follows the recorded 10 Hz at rate 2 (0.05 s apart)
    stamps = [stamp_to_nanoseconds(message.header.stamp) for message in received]
    assert stamps == [round(START * 1e9) + k * 100_000_000 for k in range(FRAMES)]
    span = images.arrivals[FRAMES - 1] - images.arrivals[0]
    assert 0.8 * 0.95 < span < 0.95 + 2.0, span  # never ahead of schedule; generous for a loaded machine
    assert np.median(np.diff(images.arrivals[:FRAMES])) == pytest.approx(0.05, abs=0.03)
    assert [m.text for m in instructions.messages] == [event.text for event in INSTRUCTIONS]

    # the recorded bag holds the very bytes of the original
    assert raw_messages(recorded, "/image") == raw_messages(bags["mcap"], "/image")
    assert raw_messages(recorded, "/instruction") == raw_messages(bags["mcap"], "/instruction")


@pytest.mark.ros
def test_play_loop_remap_clock_interrupt_and_record_all(bags, tmp_path):
    pytest.importorskip("rclpy", reason="needs rclpy")
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from rosutil import ros_node, spawn_python
    from sensor_msgs.msg import Image

    qos = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)  # no loss if slow
    everything = tmp_path / "everything"
    recorder = spawn_python(module="reasonvos_ros.cli", args=["bag-record", everything, "--all"], name="record_all")
    with recorder, ros_node("loop_checker") as harness:
        remapped = harness.collect(Image, "/camera/remapped", qos)
        clock = harness.collect(Clock, "/clock", qos)
        player = spawn_python(
            module="reasonvos_ros.cli",
            args=["bag-play", bags["sqlite3"], "--loop", "--rate", "10", "--topics", "/image", *LOOP_ARGS],
            name="loop_player",
        )
        with player:
            received = remapped.wait_for(FRAMES + 5, timeout=30)
            for topic in ("/camera/remapped", "/clock"):  # the looping player keeps publishing meanwhile
                recorder.wait_for_output(f"recording {topic} ", timeout=20)
            time.sleep(1.0)
            assert player.stop() == 0
        assert "interrupted" in player.output(), player.output()
        clock_times = [stamp_to_nanoseconds(message.clock) for message in clock.wait_for(FRAMES, timeout=10)]
        assert recorder.stop() == 0, recorder.output()
    stamps = [stamp_to_nanoseconds(message.header.stamp) for message in received]
    first_pass = [round(START * 1e9) + k * 100_000_000 for k in range(FRAMES)]
    assert stamps[:FRAMES] == first_pass and stamps[FRAMES : FRAMES + 5] == first_pass[:5]
    assert clock_times == first_pass  # /clock carries the bag time of each played message

    with Reader(everything) as reader:
        recorded_topics = {conn.topic for conn in reader.connections}
    assert {"/camera/remapped", "/clock"} <= recorded_topics, recorder.output()
    assert not recorded_topics & {"/rosout", "/parameter_events"}
    assert len(raw_messages(everything, "/camera/remapped")) > 0


def test_play_and_record_cli_errors(bags, tmp_path, capsys):
    assert cli_main(["bag-play", str(bags["mcap"]), "--topics", "/nope"]) == 2
    error = capsys.readouterr().err
    assert "['/nope'] not in bag" in error and "/image" in error
    assert cli_main(["bag-play", str(tmp_path / "nobag")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["bag-play", str(bags["mcap"]), "--remap", "/image=/x"]) == 2
    assert "/from:=/to" in capsys.readouterr().err
    assert cli_main(["bag-record", str(tmp_path / "rec")]) == 2
    assert "at least one topic" in capsys.readouterr().err
    assert cli_main(["bag-record", str(tmp_path / "rec"), "image"]) == 2
    assert "absolute" in capsys.readouterr().err


def test_results_to_overlay_targets_scales_to_the_image():
    from types import SimpleNamespace

    from reasonvos_ros.bag.render import results_to_overlay_targets

    mask = np.zeros((60, 80), dtype=np.uint8)
    mask[10:30, 20:40] = 255
    mask_msg = SimpleNamespace(height=60, width=80, encoding="mono8", is_bigendian=0, step=80, data=mask.tobytes())
    common = dict(target_id="t", instruction="the cup", reason="", score=0.5, point_x=29.5, point_y=19.5)
    tracking = SimpleNamespace(
        status=1, bbox_x=20, bbox_y=10, bbox_width=20, bbox_height=20, mask=mask_msg, target_phrase="cup",
        understanding_confidence=0.95, **common
    )  # fmt: skip
    empty_mask = SimpleNamespace(height=0, width=0, encoding="", is_bigendian=0, step=0, data=b"")
    searching = SimpleNamespace(status=0, bbox_x=0, bbox_y=0, bbox_width=0, bbox_height=0, mask=empty_mask, **common)
    first, second = results_to_overlay_targets(SimpleNamespace(results=[tracking, searching]), (120, 160))
    assert first.mask.shape == (120, 160) and first.mask[20:60, 40:80].all() and first.mask.sum() == 40 * 40
    assert first.bbox == (40, 20, 40, 40) and first.point == (59.0, 39.0)
    assert (first.status, first.score, first.instruction) == ("TRACKING", 0.5, "the cup")
    assert second.mask is None and second.bbox is None and second.point is None and second.status == "SEARCHING"
    assert (first.target_phrase, first.understanding_confidence) == ("cup", pytest.approx(0.95))
    assert second.target_phrase == ""  # a message without the fields (an older bag) still renders
