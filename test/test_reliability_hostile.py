"""Issue 18, "a hostile world", in-process: decoder bombs and exceptions in callbacks, workers that cannot stop in
time, pausing, camera resolution changes, exact key-frame stamps, topic names of odd target ids, repeated
instructions and log floods. The node runs in this process with the scripted test-double backends (colour
segmentation) and its callbacks are called directly; over-the-wire checks are in test_reliability_lifecycle.py.
"""

from __future__ import annotations

import contextlib
import struct
import threading
import time
import zlib
from typing import Any

import cv2
import numpy as np
import pytest
from scenes import square_scene
from test_engine import Harness

from reasonvos_ros.core.image_header import ImageHeaderError, declared_size
from reasonvos_ros.core.types import TargetStatus
from reasonvos_ros.ros.topic_names import target_topic_token

BASE_NS = 1_700_000_000_000_000_000
SLOW_RED = {"red": (20, 30, 1, 0, 24)}  # stays in view for 110 frames


# ----------------------------------------------------------------------------------------------- crafted headers
def png_declaring(width: int, height: int, with_end: bool = True) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` (8-bit RGB) and that holds no pixel data: 45 bytes
    (57 with the IEND chunk), like the 62-byte bomb of the issue."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")) if with_end else b""
    return b"\x89PNG\r\n\x1a\n" + chunk + end


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is rewritten to declare ``width`` x ``height``."""
    data = bytearray(cv2.imencode(".jpg", np.full((8, 8, 3), 120, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_declared_size_reads_png_and_jpeg_headers_without_decoding():
    image = np.zeros((37, 53, 3), np.uint8)
    assert declared_size(cv2.imencode(".png", image)[1].tobytes()) == ("png", 53, 37)
    assert declared_size(cv2.imencode(".jpg", image)[1].tobytes()) == ("jpeg", 53, 37)
    assert declared_size(cv2.imencode(".png", image[..., 0].astype(np.uint16))[1]) == ("png", 53, 37)
    assert declared_size(png_declaring(60000, 60000)) == ("png", 60000, 60000)
    assert declared_size(jpeg_declaring(12000, 12000)) == ("jpeg", 12000, 12000)
    assert len(png_declaring(60000, 60000)) < 64 and len(jpeg_declaring(12000, 12000)) < 1000
    # Progressive JPEG (SOF2) and a large APP1 segment before the frame header.
    progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert declared_size(progressive) == ("jpeg", 53, 37)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 30000) + bytes(30000)
    baseline = cv2.imencode(".jpg", image)[1].tobytes()
    assert declared_size(baseline[:2] + app1 + baseline[2:]) == ("jpeg", 53, 37)


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "neither"),
        (b"GIF89a" + bytes(20), "neither"),
        (png_declaring(10, 10)[:20], "truncated"),
        (png_declaring(0, 10), "zero"),
        (b"\x89PNG\r\n\x1a\n" + bytes(4) + b"IDAT" + bytes(8), "IHDR"),
        (jpeg_declaring(64, 64)[:30], "truncated|ends before"),
        (b"\xff\xd8\xff\xda" + bytes(20), "no frame header"),
        (b"\xff\xd8\xff\xe0\x00\x01", "invalid length"),
        (jpeg_declaring(0, 5), "zero"),
    ],
)
def test_declared_size_rejects_truncated_and_corrupt_headers(data, why):
    with pytest.raises(ImageHeaderError, match=why):
        declared_size(data)


# ----------------------------------------------------------------------------------------------- in-process node
class Recorder:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.lock = threading.Lock()

    def publish(self, msg: Any) -> None:
        with self.lock:
            self.messages.append(msg)

    def snapshot(self) -> list[Any]:
        with self.lock:
            return list(self.messages)


class LogLines:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def warning(self, text: str, **_: Any) -> None:
        self.warnings.append(text)

    def error(self, text: str, **_: Any) -> None:
        self.errors.append(text)

    def info(self, text: str, **_: Any) -> None:
        pass


class InProcessNode:
    """A PerceptionNode in this process, scripted backends; results and logs captured."""

    def __init__(self, **params: Any) -> None:
        from rosutil import in_process_perception_node

        values = {"reacquire_interval_s": 0.0, "debug_image_rate_hz": 0.0, **params}
        self.context, self.node = in_process_perception_node(values, "/hostile_in_process")
        self.log = LogLines()
        self.node.rejections.logger = self.log
        self.node.callback_failures.logger = self.log
        assert self.node.trigger_configure().name == "SUCCESS"
        assert self.node.trigger_activate().name == "SUCCESS"
        self.results = Recorder()
        self.history = Recorder()
        self.node.outputs.publishers["results"] = self.results
        self.node.outputs.publishers["history"] = self.history
        self.t = 0
        self.nanosec_offset = 0
        self.fed_stamps: set[tuple[int, int]] = set()

    def header(self, t: int) -> Any:
        from std_msgs.msg import Header

        from reasonvos_ros.ros.conversions import nanoseconds_to_stamp

        return Header(stamp=nanoseconds_to_stamp(BASE_NS + t * 33_333_333 + self.nanosec_offset), frame_id="cam")

    def image_callback(self):
        """The callback the executor calls (the guarded one), not the bare method."""
        return self.node.inputs.subscriptions[0].callback

    def feed(self, image: np.ndarray) -> Any:
        from reasonvos_ros.ros.conversions import numpy_to_image_msg

        msg = numpy_to_image_msg(image, "rgb8", self.header(self.t))
        self.fed_stamps.add((msg.header.stamp.sec, msg.header.stamp.nanosec))
        self.t += 1
        self.image_callback()(msg)
        return msg

    def latest(self, target_id: str) -> Any:
        for array in reversed(self.results.snapshot()):
            for result in array.results:
                if result.target_id == target_id:
                    return array, result
        return None, None

    def feed_until(self, frames, predicate, timeout: float = 15.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        i = 0
        while time.monotonic() < deadline:
            self.feed(frames[i % len(frames)])
            i += 1
            time.sleep(0.03)
            value = predicate()
            if value:
                return value
        raise AssertionError(f"timed out: {what}; targets {self.node.engine.targets()}")

    def close(self) -> None:
        try:
            self.node.trigger_deactivate()
            self.node.trigger_cleanup()
        finally:
            self.node.destroy_node()
            self.context.try_shutdown()


@pytest.fixture
def make_node():
    made: list[InProcessNode] = []

    def make(**params):
        made.append(InProcessNode(**params))
        return made[-1]

    yield make
    for n in made:
        n.close()


def compressed(data: bytes, fmt: str, t: int) -> Any:
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    from reasonvos_ros.ros.conversions import nanoseconds_to_stamp

    return CompressedImage(header=Header(stamp=nanoseconds_to_stamp(BASE_NS + t * 33_333_333)), format=fmt, data=data)


def test_compressed_bombs_are_refused_before_decoding(make_node, monkeypatch):
    n = make_node(image_transport="compressed", max_image_pixels=640 * 480)
    decoded_sizes = []
    real_imdecode = cv2.imdecode

    def spy(buf, flags):
        decoded_sizes.append(len(buf))
        return real_imdecode(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", spy)
    callback = n.image_callback()
    callback(compressed(png_declaring(60000, 60000), "png", 0))
    callback(compressed(jpeg_declaring(12000, 12000), "jpeg", 1))
    callback(compressed(jpeg_declaring(641, 480), "rgb8; jpeg compressed bgr8", 2))
    assert not decoded_sizes, "an image over max_image_pixels reached the decoder"
    assert n.node.rejections.counts == {"image_too_large": 3}
    # Truncated and corrupt data: refused (header) or rejected by the decoder; counted, never raised.
    valid = cv2.imencode(".png", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()
    callback(compressed(valid[:20], "png", 3))  # cut inside the header
    callback(compressed(valid[:60], "png", 4))  # header fine, pixel data cut
    callback(compressed(b"\x00" * 100, "jpeg", 5))
    assert n.node.rejections.counts["image"] == 3
    assert not n.node.callback_failures.counts
    # A valid image of the allowed size still goes into the window.
    callback(compressed(valid, "png", 6))
    assert len(n.node.window) == 1


def test_raw_image_over_the_limit_is_refused_on_its_declared_size(make_node):
    from sensor_msgs.msg import Image

    n = make_node(max_image_pixels=100_000)
    callback = n.image_callback()
    callback(Image(header=n.header(0), height=4320, width=7680, encoding="rgb8", step=7680 * 3, data=bytes(10)))
    assert n.node.rejections.counts == {"image_too_large": 1}
    n.feed(np.zeros((240, 320, 3), np.uint8))  # 76,800 pixels: fine
    assert len(n.node.window) == 1


def test_an_unexpected_exception_in_a_callback_is_contained_counted_and_logged_once(make_node, monkeypatch):
    from reasonvos_ros.ros import perception_node

    n = make_node()
    frames, _ = square_scene(5)

    def broken(msg):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(perception_node, "image_msg_to_rgb", broken)
    for _ in range(5):
        n.feed(frames[0])  # through the guarded callback: must not raise
    assert n.node.callback_failures.counts == {"image:RuntimeError": 5}
    assert len(n.log.errors) == 1 and "converter exploded" in n.log.errors[0]
    monkeypatch.undo()
    n.feed(frames[1])
    assert len(n.node.window) == 1
    # Diagnostics report the kind.
    diagnostics = Recorder()
    n.node.outputs.publishers["diagnostics"] = diagnostics
    n.node._publish_diagnostics()
    values = {kv.key: kv.value for kv in diagnostics.messages[-1].status[0].values}
    assert values["callback_errors[image:RuntimeError]"] == "5" and values["callback_errors"] == "5"


def test_service_callback_exception_answers_failure(make_node, monkeypatch):
    from std_srvs.srv import SetBool

    n = make_node()
    service = next(s for s in n.node._node_services if s.srv_name.endswith("/enable"))
    monkeypatch.setattr(n.node.engine, "set_enabled", lambda flag: (_ for _ in ()).throw(KeyError("boom")))
    response = service.callback(SetBool.Request(data=False), SetBool.Response())
    assert response.success is False and "KeyError" in response.message
    assert n.node.callback_failures.counts == {"enable:KeyError": 1}


# ----------------------------------------------------------------------------------------------- frame sizes
def test_stray_frames_of_another_size_are_rejected_and_tracking_goes_on(make_node):
    n = make_node()
    frames, _ = square_scene(40)
    n.feed(frames[0])
    n.node._on_instruction_text(_string("red"))
    n.feed_until(frames, lambda: (r := n.latest("default")[1]) and r.status == r.STATUS_TRACKING, what="tracking")
    n.feed(np.zeros((1, 1, 3), np.uint8))
    n.feed(np.zeros((240, 320, 3), np.uint8))
    n.feed(np.zeros((60, 80, 3), np.uint8))
    assert n.node.rejections.counts.get("frame_size") == 3
    start = len(n.results.snapshot())
    for frame in frames[:10]:
        n.feed(frame)
        time.sleep(0.03)
    n.feed_until(frames, lambda: len(n.results.snapshot()) > start + 3, what="results after the strays")
    statuses = {r.status for a in n.results.snapshot()[start:] for r in a.results}
    assert statuses == {1}, f"a stray frame disturbed tracking: statuses {statuses}"
    assert n.node.engine.targets()["default"].status == TargetStatus.TRACKING


def test_a_camera_that_changes_resolution_starts_a_new_timeline_and_reacquires(make_node):
    n = make_node()
    small, _ = square_scene(30)
    large, _ = square_scene(30, height=240, width=320, objects={"red": (40, 60, 2, 1, 40)})
    n.feed(small[0])
    n.node._on_instruction_text(_string("red"))
    n.feed_until(small, lambda: (r := n.latest("default")[1]) and r.status == r.STATUS_TRACKING, what="tracking")

    def tracking_large():
        _, r = n.latest("default")
        return r is not None and r.status == r.STATUS_TRACKING and (r.mask.height, r.mask.width) == (240, 320)

    n.feed_until(large, tracking_large, what="re-acquired at the new resolution")
    assert n.node.rejections.counts.get("frame_size") == 2  # the first frames of the new size, before it is sure
    assert n.node.engine.stats.timelines == 1
    errors = [r for a in n.results.snapshot() for r in a.results if r.status == r.STATUS_ERROR]
    assert not errors, errors[0].reason


# ----------------------------------------------------------------------------------------------- silent wrong data
def _string(text: str) -> Any:
    from std_msgs.msg import String

    return String(data=text)


def test_keyframe_stamp_is_the_key_frames_header_stamp_exactly(make_node):
    n = make_node()
    frames, _ = square_scene(30)
    # Nanoseconds that a float of seconds since 1970 cannot hold (a float has ~0.24 us resolution here): no
    # stamp of these frames survives a float round trip.
    n.nanosec_offset = 123_457
    for i in range(3):
        n.feed(frames[i])
    for sec, nanosec in n.fed_stamps:
        assert round((sec + nanosec * 1e-9) * 1e9) != sec * 1_000_000_000 + nanosec
    n.node._on_instruction_text(_string("red"))
    n.feed_until(frames, lambda: (r := n.latest("default")[1]) is not None and r.status == 1, what="tracking")
    results = [r for a in n.results.snapshot() + n.history.snapshot() for r in a.results if r.status == 1]
    assert results
    for result in results:
        key = (result.keyframe_stamp.sec, result.keyframe_stamp.nanosec)
        assert key in n.fed_stamps, f"keyframe_stamp {key} is not the header stamp of any frame sent"


def test_ids_differing_only_in_non_ascii_letters_or_punctuation_get_distinct_valid_topics(make_node):
    from rclpy.validate_topic_name import validate_topic_name

    ids = ["猫", "犬", "a-b", "a_b", "a.b", "a b", "1", "_1", "a__b", "default", "Ünïcode", "ünïcode"]
    tokens = [target_topic_token(i) for i in ids]
    assert len(set(tokens)) == len(ids), dict(zip(ids, tokens, strict=True))
    for token in tokens:
        assert validate_topic_name("/reasonvos_perception/point/" + token)
    assert target_topic_token("default") == "default" and target_topic_token("a_b") == "a_b"
    n = make_node(max_targets=len(ids))
    names = {n.node.outputs.point_publisher(i).topic_name for i in ids}
    assert len(names) == len(ids)


def test_rejection_log_lines_are_keyed_by_kind_not_by_sender_text(make_node):
    from sensor_msgs.msg import Image

    n = make_node(max_targets=1)
    callback = n.image_callback()
    for i in range(300):
        callback(Image(header=n.header(i), height=2, width=2, encoding=f"yuv{i}x", step=6, data=bytes(12)))
    n.node._on_instruction_text(_string("red"))
    for i in range(300):
        n.node._set_instruction(f"target-{i}-{'x' * (i % 7)}", "blue", "text")
    assert n.node.rejections.counts["image"] == 300 and n.node.rejections.counts["instruction"] == 300
    image_lines = [line for line in n.log.warnings if line.startswith("rejected image ")]
    instruction_lines = [line for line in n.log.warnings if line.startswith("rejected instruction ")]
    assert len(image_lines) == 1 and len(instruction_lines) == 1, n.log.warnings


# ----------------------------------------------------------------------------------------------- the engine
def feed_until_tracking(h: Harness, target_id: str, images: list[np.ndarray], timeout: float = 30.0) -> None:
    """Keep frames coming (results only come with frames) until ``target_id``'s newest result is TRACKING."""
    deadline = time.monotonic() + timeout
    while (result := h.latest(target_id)) is None or result.status != TargetStatus.TRACKING:
        assert time.monotonic() < deadline, f"{target_id!r} not tracking: {h.engine.targets()}"
        h.feed(images, period=0.02)


@contextlib.contextmanager
def slow_red_harness(segmenter_delay: float):
    """A ``Harness`` whose segmenter call takes ``segmenter_delay`` s, fed the first 3 frames of the slow red
    square's 110; yields ``(harness, frames)`` and closes the harness afterwards."""
    h = Harness(segmenter_delay=segmenter_delay)
    try:
        images, _ = square_scene(110, objects=SLOW_RED)
        h.feed(images[:3])
        yield h, images
    finally:
        h.close()


def test_a_worker_that_cannot_stop_in_time_is_not_duplicated():
    """stop() gives up on a worker inside a 0.6 s model call; start() must take it back, not add another one.
    Over many cycles the number of worker threads stays at three (acquisition, tracking, evidence)."""
    others = set(threading.enumerate())  # engine threads of earlier tests may still be finishing a call
    with slow_red_harness(0.6) as (h, images):
        for cycle in range(15):
            h.engine.set_instruction("t", "red")
            h.feed(images[3 + cycle : 5 + cycle], period=0.005)
            time.sleep(0.1)  # the acquisition worker is inside the segmenter call now
            h.engine.stop(timeout=0.05)
            h.engine.start()
            workers = [t for t in threading.enumerate() if t.name.startswith("reasonvos-") and t not in others]
            assert len(workers) <= 3, f"cycle {cycle}: {len(workers)} engine threads: {workers}"
        # And it still works: the taken-back worker serves this run.
        h.engine.set_instruction("t", "red")
        feed_until_tracking(h, "t", images[40:60])
        assert len(h.engine.worker_threads()) == 3


def test_nothing_is_emitted_and_no_state_changes_once_pause_returns():
    with slow_red_harness(0.5) as (h, images):
        h.engine.set_instruction("t", "red")
        h.feed(images[3:8])
        deadline = time.monotonic() + 5
        while not h.segmenter.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        h.engine.set_enabled(False)  # during the segmenter call
        with h.cond:
            emitted = len(h.live) + len(h.past)
        status = h.engine.targets()["t"].status
        h.feed(images[8:60], period=0.02)  # frames keep coming for ~1 s; the call returns meanwhile
        with h.cond:
            assert len(h.live) + len(h.past) == emitted, "results were emitted after the pause returned"
        assert h.engine.targets()["t"].status == status == TargetStatus.SEARCHING
        h.engine.set_enabled(True)
        feed_until_tracking(h, "t", images[60:80])


def test_an_identical_instruction_does_not_restart_the_target():
    with slow_red_harness(0.3) as (h, images):
        first = h.engine.set_instruction("t", "red")
        for i in range(20):  # a bag replayed in a loop re-sends it while the acquisition runs
            assert h.engine.set_instruction("t", "  red ") is first
            h.feed(images[3 + i : 4 + i], period=0.02)
        feed_until_tracking(h, "t", images[23:43])
        assert h.engine.stats.acquisitions_cancelled == 0
        assert len(h.segmenter.calls) == 1
        tracked = h.engine.targets()["t"]
        assert h.engine.set_instruction("t", "red") is tracked  # tracking: not restarted either
        assert h.engine.set_instruction("t", "blue") is not tracked  # a different one replaces it
        assert h.engine.stats.instructions_repeated == 21
