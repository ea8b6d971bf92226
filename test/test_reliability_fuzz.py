"""Fuzzing every input of the perception node (issue 10): malformed and extreme messages never crash it, every
rejection is counted in /diagnostics and logged (rate-limited).

In-process (most cases): a ``PerceptionNode`` is built in this process (own rclpy context, scripted backends,
configured and activated) and its subscription and service callbacks (``_on_image``, ``_on_depth``,
``_on_camera_info``, ``_on_instruction``, ``_on_instruction_text``, ``_on_reset``, ``_on_enable``) are called
directly with messages built from hypothesis-generated specs. After every event an *oracle* (written from the
node's documented input rules, not by calling the node's converters) says which rejection counters must grow and
by how much; the node's counters must match exactly. A test fails on any exception escaping a callback, any
exception in the results path (recorded around the engine's results callback), a dead worker thread, a counter
that differs from the oracle, a rejection category never logged, diagnostics that disagree with the counters, or
a node that no longer tracks a target on clean frames afterwards.

Over the wire (``test_fuzz_over_the_wire``): a smaller run publishes malformed messages to a node in its own
process through real rclpy subscriptions (reliable QoS, so nothing is lost) and compares its /diagnostics.

The long run (10,000 cases) is ``benchmarks/fuzz_long.py``, which reuses this module's harness and strategies.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.ros

# ----------------------------------------------------------------------------------------------- input rules
# What the node documents (README, conversions docstring); the oracle below is written from these rules.
COLOUR_BPP = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2}
DEPTH_BPP = {"32FC1": 4, "16UC1": 2, "mono16": 2}
KNOWN_BPP = {**COLOUR_BPP, **DEPTH_BPP}
JPEG_MAX_SIDE = 65500  # the rolling window stores frames as JPEG
TIME_JUMP_BACK_S = 1.0  # a bigger step back starts a new time line; a smaller one is out of order
MAX_IMAGE_PIXELS = 16_777_216  # the max_image_pixels default
FRAME_SIZE_CONFIRM_FRAMES = 3  # README: frames in a row of a new size that start a new timeline
MAX_INSTRUCTION_CHARS = 2000
MAX_TARGET_ID_CHARS = 128
MAX_TARGETS = 4
UINT32_MAX = 2**32 - 1
MAX_DATA_BYTES = 64 * 1024 * 1024  # generated payloads are capped (a declared 4-gigapixel image gets short data)
BASE_DECISECONDS = 17_000_000_000  # stamps are whole tenths of a second from ~2023 (sync slop is 0.05 s)


def instruction_is_valid(text: str) -> bool:
    """Non-printable characters count as spaces, whitespace runs collapse; 1..2000 characters remain."""
    words = "".join(c if c.isprintable() else " " for c in text).split()
    return 0 < len(" ".join(words)) <= MAX_INSTRUCTION_CHARS


def target_id_of(raw: str) -> str | None:
    """The id an instruction addresses ("" -> "default"), or None when the id itself is invalid."""
    tid = raw.strip() or "default"
    return tid if len(tid) <= MAX_TARGET_ID_CHARS and tid.isprintable() else None


# ----------------------------------------------------------------------------------------------- message specs
@dataclass(frozen=True)
class StampSpec:
    """How an event's stamp relates to the harness clock (whole deciseconds) or a raw (sec, nanosec)."""

    kind: str  # next | same | back_small | jump_back | far_future | raw
    amount: int = 1
    raw: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class ImageSpec:
    encoding: str
    height: int
    width: int
    step: int
    data_len: int
    is_bigendian: int
    fill: str  # zeros | ones | noise | scene | depth:<kind>
    seed: int = 0


@dataclass(frozen=True)
class CompressedSpec:
    fmt: str
    payload: str  # jpeg | png | png16 | gray_png | truncated_jpeg | garbage | empty
    size: tuple[int, int] = (24, 32)
    seed: int = 0


@dataclass(frozen=True)
class InfoSpec:
    k: tuple[float, ...]
    p: tuple[float, ...]
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class Event:
    kind: str  # image | compressed | frameset | depth | info | instruction | text | reset | enable
    stamp: StampSpec | None = None
    image: Any = None
    depth: ImageSpec | None = None
    info: InfoSpec | None = None
    order: tuple[int, ...] = (0, 1, 2)
    target_id: str = ""
    text: str = ""
    source: int = 0
    flag: bool = True


def _row_bytes(spec: ImageSpec) -> int:
    return spec.width * KNOWN_BPP.get(spec.encoding, 3)


@st.composite
def image_specs(
    draw, encodings=tuple(COLOUR_BPP), allow_unknown=True, allow_extreme=True, allow_large=True
) -> ImageSpec:
    if allow_unknown and draw(st.integers(0, 9)) == 0:
        encoding = draw(
            st.one_of(
                st.sampled_from(["", "RGB8", "yuv422", "bayer_rggb8", "8UC3", "rgb8 ", "jpeg", "32FC3", "16UC3"]),
                st.text(max_size=12),
            )
        )
    else:
        encoding = draw(st.sampled_from(encodings))
    size_class = draw(st.integers(0, 99))
    if size_class < 70 or not allow_extreme:
        height, width = draw(st.integers(0, 48)), draw(st.integers(0, 64))
    elif size_class < 85:
        height, width = draw(st.integers(1, 480)), draw(st.integers(1, 640))
    elif size_class < 95:
        height, width = draw(st.sampled_from([(1, 65501), (65501, 1), (1, 65500), (2, 40000), (40000, 2)]))
    elif size_class < 98:
        height, width = draw(st.sampled_from([(UINT32_MAX, UINT32_MAX), (2**31, 1), (1, 2**31), (100_000, 100_000)]))
    elif allow_large:
        height, width = draw(st.sampled_from([(2160, 3840), (3000, 4000)]))
    else:
        height, width = 1, 1
    row = width * KNOWN_BPP.get(encoding, 3)
    step_kind = draw(st.sampled_from(["exact"] * 5 + ["padded", "short", "zero", "huge"]))
    step = {
        "exact": row,
        "padded": row + draw(st.integers(1, 16)),
        "short": max(row - 1, 0),
        "zero": 0,
        "huge": UINT32_MAX,
    }[step_kind]
    step = min(step, UINT32_MAX)
    data_kind = draw(st.sampled_from(["exact"] * 5 + ["short", "long", "empty"]))
    exact = step * height
    data_len = {"exact": exact, "short": max(exact - draw(st.integers(1, 64)), 0), "long": exact + 7, "empty": 0}[
        data_kind
    ]
    if data_len > MAX_DATA_BYTES:
        data_len = draw(st.integers(0, 4096))
    fill = draw(st.sampled_from(["zeros", "ones", "noise", "scene"]))
    return ImageSpec(
        encoding, height, width, step, data_len, draw(st.sampled_from([0, 0, 1, 255])), fill, draw(st.integers(0, 999))
    )


def image_is_valid(spec: ImageSpec, colour: bool = True) -> bool:
    encodings = COLOUR_BPP if colour else DEPTH_BPP
    return (
        spec.encoding in encodings
        and spec.height > 0
        and spec.width > 0
        and spec.step >= _row_bytes(spec)
        and spec.data_len == spec.step * spec.height
    )


def build_image(spec: ImageSpec, header: Any) -> Any:
    from sensor_msgs.msg import Image

    drawable = spec.data_len == spec.step * spec.height > 0 and spec.step >= _row_bytes(spec) > 0
    if drawable and spec.encoding in KNOWN_BPP and spec.fill == "scene":
        data = _scene_bytes(spec)
    elif drawable and spec.fill.startswith("depth:") and spec.encoding in DEPTH_BPP:
        data = _depth_bytes(spec)
    elif spec.fill == "noise" and spec.data_len <= 4 * 1024 * 1024:
        data = np.random.default_rng(spec.seed).integers(0, 256, spec.data_len, dtype=np.uint8).tobytes()
    else:
        data = (b"\xff" if spec.fill == "ones" else b"\x00") * spec.data_len
    return Image(
        header=header,
        height=spec.height,
        width=spec.width,
        encoding=spec.encoding,
        is_bigendian=spec.is_bigendian,
        step=spec.step,
        data=data,
    )


def _pad_rows(pixels: np.ndarray, spec: ImageSpec) -> bytes:
    rows = pixels.reshape(spec.height, -1).view(np.uint8).reshape(spec.height, -1)
    padded = np.zeros((spec.height, spec.step), np.uint8)
    padded[:, : rows.shape[1]] = rows
    return padded.tobytes()


def _scene_bytes(spec: ImageSpec) -> bytes:
    """A red square on grey in the spec's encoding (something the scripted backends can track)."""
    bpp = KNOWN_BPP[spec.encoding]
    rgb = np.full((spec.height, spec.width, 3), 110, np.uint8)
    rgb[spec.height // 4 : spec.height // 2 + 1, spec.width // 4 : spec.width // 2 + 1] = (230, 20, 20)
    order = {"rgb8": rgb, "bgr8": rgb[..., ::-1]}
    if spec.encoding in order:
        pixels = order[spec.encoding]
    elif spec.encoding in ("rgba8", "bgra8"):
        base = rgb if spec.encoding == "rgba8" else rgb[..., ::-1]
        pixels = np.concatenate([base, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=2)
    else:
        gray = rgb.mean(axis=2)
        pixels = (
            gray.astype(np.uint8)
            if bpp == 1
            else (gray * (257 if bpp == 2 else 0.01)).astype({2: np.uint16, 4: np.float32}[bpp])
        )
        if bpp > 1 and spec.is_bigendian:
            pixels = pixels.byteswap()
    return _pad_rows(np.ascontiguousarray(pixels), spec)


DEPTH_CONTENTS = ("valid", "nan", "inf", "zero", "negative", "mixed", "huge")


def depth_content_has_valid_pixel(kind: str, encoding: str) -> bool:
    if encoding == "32FC1":
        return kind in ("valid", "mixed", "huge")
    return kind in ("valid", "mixed", "huge", "nan", "inf", "negative")  # 16-bit: only 0 is invalid


def _depth_bytes(spec: ImageSpec) -> bytes:
    kind = spec.fill.split(":", 1)[1]
    shape = (spec.height, spec.width)
    if spec.encoding == "32FC1":
        values = {"valid": 1.5, "nan": np.nan, "inf": np.inf, "zero": 0.0, "negative": -2.0, "huge": 3e38}.get(kind)
        depth = np.full(shape, values if values is not None else 1.5, np.float32)
        if kind == "mixed":
            depth.reshape(-1)[::2] = np.nan
            depth.reshape(-1)[1::4] = -np.inf
    else:
        value = {"zero": 0, "huge": 65535}.get(kind, 1500)
        depth = np.full(shape, value, np.uint16)
        if kind == "mixed":
            depth.reshape(-1)[::2] = 0
    if spec.is_bigendian:
        depth = depth.byteswap()
    return _pad_rows(depth, spec)


@st.composite
def compressed_specs(draw) -> CompressedSpec:
    fmt = draw(
        st.one_of(
            st.sampled_from(
                ["jpeg", "png", "", "rgb8; jpeg compressed bgr8", "16UC1; compressedDepth png", "tiff", "PNG", "jpg"]
            ),
            st.text(max_size=16),
        )
    )
    payload = draw(st.sampled_from(["jpeg", "png", "png16", "gray_png", "truncated_jpeg", "garbage", "empty"]))
    size = draw(st.sampled_from([(24, 32), (1, 1), (1, 300), (120, 160)]))
    return CompressedSpec(fmt, payload, size, draw(st.integers(0, 999)))


def compressed_format_ok(fmt: str) -> bool:
    text = fmt.lower()
    if "compresseddepth" in text:
        return False
    return "png" in text or "jpeg" in text or "jpg" in text or text.strip() == ""


def compressed_is_valid(spec: CompressedSpec) -> bool | None:
    """True/False when the outcome is defined; None for a truncated JPEG (libjpeg may decode part of it)."""
    if not compressed_format_ok(spec.fmt):
        return False
    if spec.payload == "truncated_jpeg":
        return None
    return spec.payload in ("jpeg", "png", "gray_png")


def build_compressed(spec: CompressedSpec, header: Any) -> Any:
    import cv2
    from sensor_msgs.msg import CompressedImage

    rng = np.random.default_rng(spec.seed)
    image = rng.integers(0, 256, (*spec.size, 3), dtype=np.uint8)
    if spec.payload in ("jpeg", "truncated_jpeg"):
        data = cv2.imencode(".jpg", image)[1].tobytes()
        if spec.payload == "truncated_jpeg":
            data = data[: len(data) // 2]
    elif spec.payload == "png":
        data = cv2.imencode(".png", image)[1].tobytes()
    elif spec.payload == "gray_png":
        data = cv2.imencode(".png", image[..., 0])[1].tobytes()
    elif spec.payload == "png16":
        data = cv2.imencode(".png", image[..., 0].astype(np.uint16) * 200)[1].tobytes()
    elif spec.payload == "garbage":
        data = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    else:
        data = b""
    return CompressedImage(header=header, format=spec.fmt, data=data)


FINITE_OR_NOT = st.sampled_from([0.0, -1.0, -300.0, float("nan"), float("inf"), float("-inf"), 1e-300, 1e300])


@st.composite
def info_specs(draw) -> InfoSpec:
    kind = draw(st.sampled_from(["valid_k", "valid_p", "zero", "negative_f", "nan", "random"]))
    fx, fy, cx, cy = 200.0, 210.0, 80.0, 60.0
    k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    p = [0.0] * 12
    if kind == "valid_p":
        p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        k = [0.0] * 9
    elif kind == "zero":
        k = [0.0] * 9
    elif kind == "negative_f":
        k[0 if draw(st.booleans()) else 4] = -draw(st.floats(0.1, 1e4))
    elif kind == "nan":
        k[draw(st.sampled_from([0, 2, 4, 5]))] = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    elif kind == "random":
        k = [draw(st.one_of(FINITE_OR_NOT, st.floats(-1e4, 1e4))) for _ in range(9)]
        p = [draw(st.one_of(FINITE_OR_NOT, st.floats(-1e4, 1e4))) for _ in range(12)]
    return InfoSpec(tuple(k), tuple(p), draw(st.sampled_from([0, 160, 10**6])), draw(st.sampled_from([0, 120])))


def intrinsics_are_valid(spec: InfoSpec) -> bool:
    """P (rectified) when P[0] > 0, else K; all four values finite and both focal lengths positive."""
    p, k = spec.p, spec.k
    fx, fy, cx, cy = (p[0], p[5], p[2], p[6]) if p[0] > 0 else (k[0], k[4], k[2], k[5])
    return all(math.isfinite(v) for v in (fx, fy, cx, cy)) and fx > 0 and fy > 0


def build_info(spec: InfoSpec, header: Any) -> Any:
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(header=header, width=spec.width, height=spec.height, distortion_model="plumb_bob")
    info.k = list(spec.k)
    info.p = list(spec.p)
    return info


STAMPS = st.one_of(
    st.builds(StampSpec, st.just("next"), st.integers(1, 3)),
    st.builds(StampSpec, st.just("next"), st.integers(1, 3)),
    st.builds(StampSpec, st.just("next"), st.integers(1, 3)),
    st.just(StampSpec("same")),
    st.builds(StampSpec, st.just("back_small"), st.integers(1, 10)),
    st.builds(StampSpec, st.just("jump_back"), st.integers(11, 3000)),
    st.just(StampSpec("far_future", 10**9)),
)
RAW_STAMPS = st.builds(
    StampSpec,
    st.just("raw"),
    st.just(0),
    st.tuples(
        st.sampled_from([0, -5, -(2**31), 2**31 - 1, 1_700_000_000]), st.sampled_from([0, 999_999_999, UINT32_MAX])
    ),
)

TARGET_IDS = st.one_of(
    st.sampled_from(["", "default", "a", "b", "cup", " a ", "1", "1st", "x/y", "ü", "a" * 128, "b" * 129]),
    st.text(max_size=20),
    st.builds(lambda n: "t" * n, st.integers(120, 400)),
    st.sampled_from(["a\x00b", "\x07", "line\nbreak", "tab\tid"]),
)
TEXTS = st.one_of(
    st.sampled_from(
        [
            "red",
            "the red one",
            "blue",
            "green cup",
            "red fail",
            "red nan",
            "red oom",
            "",
            "   ",
            "\x00\x07\x1b[31m",
            "r" * 2000,
            "r" * 2001,
            "red " + "\x01" * 3000,
            "MEGABYTE",
        ]
    ),
    st.text(max_size=60),
)


def expand_text(text: str) -> str:
    return "x" * 1_000_000 if text == "MEGABYTE" else text


CONTROL_EVENTS = st.one_of(
    st.builds(Event, st.just("instruction"), target_id=TARGET_IDS, text=TEXTS, source=st.integers(0, 255)),
    st.builds(Event, st.just("text"), text=TEXTS),
    st.builds(Event, st.just("reset"), target_id=TARGET_IDS),
    st.builds(Event, st.just("enable"), flag=st.booleans()),
)
IMAGE_EVENTS = st.one_of(
    st.builds(Event, st.just("image"), stamp=st.one_of(STAMPS, RAW_STAMPS), image=image_specs()),
    st.builds(Event, st.just("image"), stamp=STAMPS, image=image_specs(allow_unknown=False, allow_extreme=False)),
    st.builds(Event, st.just("compressed"), stamp=STAMPS, image=compressed_specs()),
)


@st.composite
def depth_specs(draw, shape: tuple[int, int] | None) -> ImageSpec:
    if shape is None or draw(st.integers(0, 4)) == 0:
        spec = draw(image_specs(encodings=tuple(DEPTH_BPP), allow_extreme=False))
    else:
        encoding = draw(st.sampled_from([*DEPTH_BPP, "rgb8"]))
        height, width = shape
        if draw(st.integers(0, 5)) == 0:  # not registered to the colour image
            height, width = height + 1, max(width - 1, 1)
        step = width * KNOWN_BPP[encoding]
        spec = ImageSpec(encoding, height, width, step, step * height, draw(st.sampled_from([0, 1])), "zeros")
    return ImageSpec(**{**spec.__dict__, "fill": "depth:" + draw(st.sampled_from(DEPTH_CONTENTS))})


@st.composite
def frameset_events(draw) -> Event:
    if draw(st.integers(0, 3)) == 0:
        image = draw(image_specs(allow_extreme=False))
    else:
        height, width = draw(st.sampled_from([(6, 8), (24, 32), (30, 40)]))
        encoding = draw(st.sampled_from(list(COLOUR_BPP)))
        step = width * COLOUR_BPP[encoding]
        image = ImageSpec(encoding, height, width, step, step * height, draw(st.sampled_from([0, 1])), "scene")
    shape = (image.height, image.width) if image_is_valid(image) else None
    stamp = draw(st.one_of(STAMPS.filter(lambda s: s.kind != "far_future"), st.just(StampSpec("next", 1))))
    return Event(
        "frameset",
        stamp=stamp,
        image=image,
        depth=draw(depth_specs(shape)),
        info=draw(info_specs()),
        order=tuple(draw(st.permutations([0, 1, 2]))),
    )


STANDALONE_DEPTH_EVENTS = st.one_of(
    st.builds(Event, st.just("depth"), stamp=st.one_of(STAMPS, RAW_STAMPS), depth=depth_specs(None)),
    st.builds(Event, st.just("info"), stamp=st.one_of(STAMPS, RAW_STAMPS), info=info_specs()),
)


# ----------------------------------------------------------------------------------------------- the harness
class StampClock:
    """Event stamps in whole tenths of a second: distinct stamps are at least 0.1 s apart (more than the
    synchroniser's slop) and equal ones are exactly equal, so which messages pair up is predictable."""

    MAX_TENTHS = (2**31 - 1) * 10  # builtin_interfaces/Time.sec is an int32

    def __init__(self, tenths: int = BASE_DECISECONDS) -> None:
        self.tenths = tenths

    def header(self, spec: StampSpec, frame_id: str) -> Any:
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header

        if spec.kind == "raw":
            sec, nanosec = spec.raw
            return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)
        if spec.kind in ("next", "far_future"):  # far_future: a driver whose clock jumped ahead
            self.tenths += spec.amount
        elif spec.kind == "jump_back":  # a bag loop: the clock itself goes back
            self.tenths -= spec.amount
        self.tenths = max(min(self.tenths, self.MAX_TENTHS), 0)
        tenths = max(self.tenths - spec.amount, 0) if spec.kind == "back_small" else self.tenths
        return Header(stamp=Time(sec=tenths // 10, nanosec=(tenths % 10) * 100_000_000), frame_id=frame_id)


class RecordingLogger:
    """Stands in for the rejection counter's logger: keeps every line it would have logged."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def warning(self, text: str, **_: Any) -> None:
        with self._lock:
            self.lines.append(text)

    def logged_categories(self) -> set[str]:
        with self._lock:
            return {line.split(" ", 2)[1] for line in self.lines if line.startswith("rejected ")}


class CapturingPublisher:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def publish(self, msg: Any) -> None:
        self.messages.append(msg)


@dataclass
class Oracle:
    """Expected node state from the documented rules: per-stream newest stamps and time lines, targets."""

    last: dict[str, float] = field(default_factory=dict)
    newest: float = -math.inf  # newest accepted stamp on any stream since the last jump back
    time_jumps: int = 0
    targets: set[str] = field(default_factory=set)
    expected: dict[str, int] = field(default_factory=dict)
    # Latest accepted depth/info per stamp (the synchroniser keeps the latest message of a stamp).
    queued_image: dict[float, tuple[int, int]] = field(default_factory=dict)
    queued_depth: dict[float, ImageSpec] = field(default_factory=dict)
    queued_info: dict[float, InfoSpec] = field(default_factory=dict)
    # Frame sizes (README: a frame of another size is rejected as a stray; FRAME_SIZE_CONFIRM_FRAMES in a row
    # of one new size start a new timeline at that size).
    size: tuple[int, int] | None = None
    new_size: tuple[int, int] | None = None
    new_size_run: int = 0

    def frame_size_ok(self, size: tuple[int, int]) -> bool:
        """Whether a frame of ``size`` reaching the window is kept (else it counts as ``frame_size``)."""
        if self.size is None or size == self.size:
            self.size, self.new_size, self.new_size_run = size, None, 0
            return True
        self.new_size_run = self.new_size_run + 1 if size == self.new_size else 1
        self.new_size = size
        if self.new_size_run == FRAME_SIZE_CONFIRM_FRAMES:
            self.size, self.new_size, self.new_size_run = size, None, 0
            return True
        self.count("frame_size")
        return False

    def count(self, category: str, n: int = 1) -> None:
        self.expected[category] = self.expected.get(category, 0) + n

    def accept_stamp(self, stream: str, stamp: float) -> bool:
        last = self.last.get(stream)
        if last is not None and stamp <= last:
            if last - stamp <= TIME_JUMP_BACK_S:
                self.count(stream)
                return False
            if stamp < self.newest - TIME_JUMP_BACK_S:  # a new time line (else: this stream catching up)
                self.newest = stamp
                self.time_jumps += 1
                for queue in (self.queued_image, self.queued_depth, self.queued_info):
                    queue.clear()
        self.last[stream] = stamp
        self.newest = max(self.newest, stamp)
        return True


class FuzzNode:
    """A PerceptionNode in this process with scripted backends, driven by direct callback calls."""

    def __init__(self, use_depth: bool, **params: Any) -> None:
        import rclpy
        from rclpy.logging import LoggingSeverity
        from rclpy.parameter import Parameter
        from rclpy.signals import SignalHandlerOptions
        from rosutil import configure_this_process, ros_domain_id

        from reasonvos_ros.ros.perception_node import PerceptionNode

        configure_this_process()
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=ros_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
        values = {
            "sampler": "scripted",
            "segmenter": "scripted",
            "tracker": "scripted",
            "use_depth": use_depth,
            "reacquire_interval_s": 0.0,
            "not_present_retry_s": 0.2,
            "max_targets": MAX_TARGETS,
            "debug_image_rate_hz": 0.0,
            **params,
        }
        overrides = [Parameter(name, value=value) for name, value in values.items()]
        # Its own namespace: a node process of another test in this domain must not share its topics/services.
        self.node = PerceptionNode(context=self.context, parameter_overrides=overrides, namespace="/fuzz_in_process")
        self.node.get_logger().set_level(LoggingSeverity.ERROR)  # the recorder below keeps the rejections
        self.log = RecordingLogger()
        self.node.rejections.logger = self.log
        assert self.node.trigger_configure().name == "SUCCESS"
        assert self.node.trigger_activate().name == "SUCCESS"
        self.diagnostics = CapturingPublisher()
        self.node._outputs["diagnostics"] = self.diagnostics
        self.use_depth = use_depth
        self.oracle = Oracle()
        self.clock = StampClock()
        self.results_errors: list[str] = []
        self.live_results: list[tuple[int, dict[str, Any]]] = []
        self._results_lock = threading.Lock()
        engine = self.node.engine
        publish = engine.on_results

        def record(frame, results, live):
            try:
                publish(frame, results, live)
            except Exception as exc:
                self.results_errors.append(f"{type(exc).__name__}: {exc}")
                raise
            if live:
                with self._results_lock:
                    self.live_results.append((frame.index, {r.target_id: r for r in results}))

        engine.on_results = record
        self.events = 0
        self.history: deque[Event] = deque(maxlen=12)
        self.started = time.monotonic()
        # Once standalone depth/info messages are mixed in, which queued messages pair up is not modelled: the
        # depth/camera_info counts are then only checked to be at least the oracle's stamp rejections.
        self.skip_sync_oracle = False

    def close(self) -> None:
        node = self.node
        node.trigger_deactivate()
        node.trigger_cleanup()
        node.destroy_node()
        self.context.try_shutdown()

    # ---- stamps
    def header_for(self, spec: StampSpec) -> Any:
        return self.clock.header(spec, "fuzz")

    # ---- one event
    def apply(self, event: Event) -> None:
        self.events += 1
        self.history.append(event)
        try:
            self._apply(event)
        except AssertionError as exc:
            recent = "\n".join(f"  {e}" for e in self.history)
            raise AssertionError(f"{exc}\nlast events, oldest first:\n{recent}") from None

    def _apply(self, event: Event) -> None:
        from reasonvos_ros.ros.conversions import stamp_to_seconds

        o = self.oracle
        node = self.node
        if event.kind in ("image", "compressed"):
            header = self.header_for(event.stamp)
            stamp = stamp_to_seconds(header.stamp)
            if event.kind == "image":
                spec = event.image
                msg = build_image(spec, header)
                valid = image_is_valid(spec)
                too_big = max(spec.height, spec.width) > JPEG_MAX_SIDE
            else:
                msg = build_compressed(event.image, header)
                valid = compressed_is_valid(event.image)
                too_big = False
            before = dict(node.rejections.counts)
            node._on_image(msg)
            if event.kind == "image" and spec.height * spec.width > MAX_IMAGE_PIXELS:
                o.count("image_too_large")  # refused on its declared size, before any conversion
                self.check()
                return
            if valid is None:
                # libjpeg may or may not decode a truncated file. A rejection (either way) leaves the stream's
                # newest stamp unchanged, so the node's own count tells the oracle which case it was.
                valid = node.rejections.counts.get("image", 0) == before.get("image", 0)
            if not valid:
                o.count("image")
            elif o.accept_stamp("image", stamp) and not self.use_depth:
                size = (spec.height, spec.width) if event.kind == "image" else event.image.size
                if o.frame_size_ok(size) and too_big:
                    o.count("image")  # decoded, but the window cannot store a side over 65500 px (JPEG)
        elif event.kind == "frameset":
            self._apply_frameset(event)
        elif event.kind == "depth":
            header = self.header_for(event.stamp)
            o.accept_stamp("depth", stamp_to_seconds(header.stamp))
            node._on_depth(build_image(event.depth, header))
            self.skip_sync_oracle = True
        elif event.kind == "info":
            header = self.header_for(event.stamp)
            o.accept_stamp("camera_info", stamp_to_seconds(header.stamp))
            node._on_camera_info(build_info(event.info, header))
            self.skip_sync_oracle = True
        elif event.kind in ("instruction", "text"):
            from std_msgs.msg import String

            from reasonvos_ros.msg import Instruction

            text = expand_text(event.text)
            raw_id = event.target_id if event.kind == "instruction" else "default"
            tid = target_id_of(raw_id)
            ok = instruction_is_valid(text) and tid is not None and (tid in o.targets or len(o.targets) < MAX_TARGETS)
            if ok:
                o.targets.add(tid)
            else:
                o.count("instruction")
            if event.kind == "instruction":
                node._on_instruction(Instruction(target_id=event.target_id, text=text, source=event.source))
            else:
                node._on_instruction_text(String(data=text))
        elif event.kind == "reset":
            from reasonvos_ros.srv import ResetTargets

            tid = event.target_id.strip()
            response = node._on_reset(ResetTargets.Request(target_id=event.target_id), ResetTargets.Response())
            if not tid:
                expected_ok = True
                o.targets.clear()
            elif tid in o.targets:
                expected_ok = True
                o.targets.discard(tid)
            else:
                expected_ok = False
                o.count("reset")
            assert response.success == expected_ok, (event, response.message)
            assert response.message, "a reset response always says what happened"
        elif event.kind == "enable":
            from std_srvs.srv import SetBool

            response = node._on_enable(SetBool.Request(data=event.flag), SetBool.Response())
            assert response.success and response.message
        else:
            raise AssertionError(f"unknown event kind {event.kind}")
        self.check()

    def _apply_frameset(self, event: Event) -> None:
        from reasonvos_ros.ros.conversions import stamp_to_seconds

        o, node = self.oracle, self.node
        header = self.header_for(event.stamp)
        stamp = stamp_to_seconds(header.stamp)
        image_ok = image_is_valid(event.image)
        messages = [build_image(event.image, header), build_image(event.depth, header), build_info(event.info, header)]
        callbacks = [node._on_image, node._on_depth, node._on_camera_info]
        synced_before = node._sync.delivered
        accepted = {}
        for position in event.order:
            stream = ("image", "depth", "camera_info")[position]
            if position == 0 and not image_ok:
                o.count("image")
                accepted[stream] = False
            else:
                accepted[stream] = o.accept_stamp(stream, stamp)
            if accepted[stream]:
                queue = (o.queued_image, o.queued_depth, o.queued_info)[position]
                queue[stamp] = ((event.image.height, event.image.width), event.depth, event.info)[position]
            callbacks[position](messages[position])
        delivered = node._sync.delivered - synced_before
        if self.skip_sync_oracle:
            return
        if all(accepted.values()):
            assert delivered == 1, f"a fresh, accepted colour/depth/info set was not synchronised: {event}"
        assert delivered <= 1
        if delivered:
            # The set is the newest accepted message of each stream at this stamp (possibly from earlier events).
            shape = o.queued_image.pop(stamp)
            depth = o.queued_depth.pop(stamp)
            info = o.queued_info.pop(stamp)
            for queue in (o.queued_image, o.queued_depth, o.queued_info):
                for old in [s for s in queue if s < stamp]:
                    del queue[old]  # the synchroniser drops what is older than a delivered set
            depth_ok = image_is_valid(depth, colour=False) and (depth.height, depth.width) == shape
            if not o.frame_size_ok(shape):
                pass  # dropped before its depth is looked at
            elif not depth_ok:
                o.count("depth")
            else:
                if not depth_content_has_valid_pixel(depth.fill.split(":", 1)[1], depth.encoding):
                    o.count("depth")
                if not intrinsics_are_valid(info):
                    o.count("camera_info")

    # ---- checks
    def check(self) -> None:
        node, o = self.node, self.oracle
        counts = {k: v for k, v in node.rejections.counts.items() if k != "unsynchronised_image"}
        if self.skip_sync_oracle:
            # frame_size too: which sets are delivered (and so which frame sizes reach the window) is not modelled
            for category in ("depth", "camera_info", "frame_size"):
                assert counts.get(category, 0) >= o.expected.get(category, 0), (category, counts, o.expected)
                if category in counts:
                    o.expected[category] = counts[category]
        assert counts == o.expected, f"rejection counts {counts} != expected {o.expected} after {self.events} events"
        assert node._time_jumps == o.time_jumps
        assert set(node.engine.targets()) == o.targets
        assert not self.results_errors, self.results_errors
        assert len(node.engine.worker_threads()) == 2, "an engine worker thread died"

    def check_diagnostics_and_logs(self) -> dict[str, str]:
        node = self.node
        node._publish_diagnostics()
        values = {kv.key: kv.value for kv in self.diagnostics.messages[-1].status[0].values}
        for category, count in node.rejections.counts.items():
            assert values[f"rejected_{category}"] == str(count)
        assert values["frames_rejected"] == str(node.rejections.total())
        assert values["time_jumps_back"] == str(node._time_jumps)
        missing = set(node.rejections.counts) - self.log.logged_categories()
        assert not missing, f"rejections counted but never logged: {missing}"
        # Rate limiting: one line per kind of problem per 5 s period at most (kinds are few; floods are many).
        periods = 1 + (time.monotonic() - self.started) / node.rejections.period_s
        kinds = len({line.split(" ", 2)[1] + _masked(line) for line in self.log.lines})
        assert len(self.log.lines) <= kinds * periods
        return values

    # ---- clean traffic after the fuzzing
    def feed_clean_frame(self, t: int, start_s: float) -> None:
        from std_msgs.msg import Header

        from reasonvos_ros.ros.conversions import nanoseconds_to_stamp, numpy_to_image_msg

        header = Header(stamp=nanoseconds_to_stamp(int((start_s + t * 0.1) * 1e9)), frame_id="fuzz")
        self.node._on_image(numpy_to_image_msg(CLEAN_RGB, "rgb8", header))
        if self.use_depth:
            self.node._on_depth(numpy_to_image_msg(np.full(CLEAN_RGB.shape[:2], 1.5, np.float32), "32FC1", header))
            self.node._on_camera_info(build_info(CLEAN_INFO, header))

    def wait_tracking(self, target_id: str, timeout: float = 20.0) -> Any:
        """Feed clean frames (newer than anything seen) until ``target_id`` has a TRACKING result."""
        start_s = max([*self.oracle.last.values(), BASE_DECISECONDS / 10]) + 10.0
        deadline = time.monotonic() + timeout
        for t in itertools.count():
            self.feed_clean_frame(t, start_s)
            if not self.skip_sync_oracle:
                self.oracle.frame_size_ok(CLEAN_RGB.shape[:2])
            for stream in ("image", "depth", "camera_info") if self.use_depth else ("image",):
                self.oracle.last[stream] = start_s + t * 0.1
                self.oracle.newest = max(self.oracle.newest, start_s + t * 0.1)
            time.sleep(0.05)
            with self._results_lock:
                tracked = [r[target_id] for _, r in self.live_results if target_id in r]
            # Only results on the clean frames count (the engine may still be on a frame of a previous test).
            tracked = [r for r in tracked if r.status.name == "TRACKING" and r.mask.shape == CLEAN_RGB.shape[:2]]
            if tracked:
                assert tracked[-1].mask is not None and tracked[-1].mask[30, 40]
                assert not self.results_errors, self.results_errors
                return tracked[-1]
            assert time.monotonic() < deadline, f"no TRACKING result for {target_id!r}; {self.node.engine.targets()}"

    def check_still_tracks(self) -> None:
        """After the fuzzing: with processing enabled and targets reset, a clean instruction on clean frames must
        give TRACKING results again."""
        from std_srvs.srv import SetBool

        from reasonvos_ros.msg import Instruction
        from reasonvos_ros.srv import ResetTargets

        self.node._on_enable(SetBool.Request(data=True), SetBool.Response())
        self.node._on_reset(ResetTargets.Request(target_id=""), ResetTargets.Response())
        self.oracle.targets = {"liveness"}
        with self._results_lock:
            self.live_results.clear()
        self.node._on_instruction(Instruction(target_id="liveness", text="the red square"))
        self.wait_tracking("liveness")
        self.check()


CLEAN_RGB = np.full((60, 80, 3), 110, np.uint8)
CLEAN_RGB[20:40, 30:50] = (230, 20, 20)
CLEAN_INFO = InfoSpec((100.0, 0.0, 40.0, 0.0, 100.0, 30.0, 0.0, 0.0, 1.0), (0.0,) * 12)


def _masked(line: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "#", line.split(": ", 1)[-1])[:80]


# No shrinking: the node keeps its state from case to case, so a shorter replay is not the same experiment; a
# failure reports the events that led to it instead (FuzzNode.history).
FUZZ_SETTINGS = dict(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    phases=(Phase.explicit, Phase.generate),
    print_blob=False,
)


def fuzz_events(harness: FuzzNode, strategy: st.SearchStrategy, max_examples: int, seed: int | None = None) -> int:
    """Run ``max_examples`` hypothesis cases (each a short list of events) against ``harness``; returns the count.
    ``seed`` None: derandomised (the same cases every run, as the default suite wants)."""
    cases = [0]
    options = dict(FUZZ_SETTINGS, max_examples=max_examples)
    if seed is not None:
        options["derandomize"] = False

    @settings(**options)
    @given(st.lists(strategy, min_size=1, max_size=6))
    def run(events):
        cases[0] += 1
        for event in events:
            harness.apply(event)

    if seed is not None:
        from hypothesis import seed as hypothesis_seed

        run = hypothesis_seed(seed)(run)
    run()
    return cases[0]


COLOUR_NODE_EVENTS = st.one_of(IMAGE_EVENTS, IMAGE_EVENTS, CONTROL_EVENTS)
DEPTH_NODE_EVENTS = st.one_of(frameset_events(), frameset_events(), CONTROL_EVENTS)
DEPTH_NODE_MIXED_EVENTS = st.one_of(STANDALONE_DEPTH_EVENTS, frameset_events(), CONTROL_EVENTS)


# ----------------------------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def colour_node():
    harness = FuzzNode(use_depth=False)
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def depth_node():
    harness = FuzzNode(use_depth=True)
    yield harness
    harness.close()


def test_fuzz_images_and_controls(colour_node):
    """Raw and compressed colour images (encodings, sizes, steps, stamps) mixed with instructions and services."""
    fuzz_events(colour_node, COLOUR_NODE_EVENTS, max_examples=200)
    values = colour_node.check_diagnostics_and_logs()
    assert int(values["rejected_image"]) > 50 and int(values["rejected_instruction"]) > 10, values
    colour_node.check_still_tracks()


def test_fuzz_depth_camera_info_sets(depth_node):
    """Colour + depth + CameraInfo sets (NaN/Inf/zero depth, bad focal lengths, size mismatches, stamps out of
    order, duplicated or looping back, any arrival order); every accepted fresh set must be synchronised."""
    fuzz_events(depth_node, DEPTH_NODE_EVENTS, max_examples=150)
    values = depth_node.check_diagnostics_and_logs()
    for category in ("image", "depth", "camera_info"):
        assert int(values[f"rejected_{category}"]) > 5, values
    assert int(values["time_jumps_back"]) > 0
    depth_node.check_still_tracks()


def test_fuzz_standalone_depth_and_info_then_recovers(depth_node):
    """Depth and CameraInfo without matching colour frames, at any stamp, between sets; afterwards clean sets
    must be synchronised and tracked again."""
    fuzz_events(depth_node, DEPTH_NODE_MIXED_EVENTS, max_examples=80)
    assert depth_node.skip_sync_oracle
    depth_node.check_diagnostics_and_logs()
    depth_node.check_still_tracks()


def test_rejection_flood_is_counted_exactly_and_logged_rate_limited(colour_node):
    from sensor_msgs.msg import Image

    node = colour_node.node
    before_lines, before = len(colour_node.log.lines), node.rejections.counts.get("image", 0)
    node.rejections._last_log.clear()  # a fresh period for every kind of problem
    for _ in range(300):
        node._on_image(Image(height=2, width=2, encoding="yuv999", step=6, data=bytes(12)))
    for _ in range(300):
        node._on_image(Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(10)))
    assert node.rejections.counts["image"] == before + 600
    new_lines = colour_node.log.lines[before_lines:]
    assert len(new_lines) == 2, new_lines  # two kinds of problem, each logged once in the 5 s period
    assert "yuv999" in new_lines[0] and "step*height" in new_lines[1]
    node._publish_diagnostics()
    values = {kv.key: kv.value for kv in colour_node.diagnostics.messages[-1].status[0].values}
    assert values["rejected_image"] == str(before + 600)


def test_bag_loop_restarts_the_time_line_with_depth(depth_node):
    """Time jumping back (a looping bag) must not stall the synchroniser; small steps back are rejected."""
    h = depth_node
    node = h.node
    good_image = ImageSpec("rgb8", 24, 32, 96, 96 * 24, 0, "scene")
    good_depth = ImageSpec("32FC1", 24, 32, 128, 128 * 24, 0, "depth:valid")
    start_tenths = int(max([*h.oracle.last.values(), BASE_DECISECONDS / 10]) * 10) + 100
    synced, jumps = node._sync.delivered, node._time_jumps
    for loop in range(3):
        for t in range(10):  # 2.7 s of camera time, then back to the start: a jump of more than 1 s
            h.clock.tenths = start_tenths + 3 * t
            h.apply(Event("frameset", StampSpec("same"), good_image, good_depth, CLEAN_INFO))
        assert node._sync.delivered == synced + 10 * (loop + 1), f"loop {loop}: sets stopped being synchronised"
        h.apply(Event("frameset", StampSpec("back_small", 2), good_image, good_depth, CLEAN_INFO))
    assert node._time_jumps == jumps + 2
    assert {"image", "depth", "camera_info"} <= h.log.logged_categories()


def test_digit_first_target_id_gets_a_valid_point_topic(depth_node):
    """Target "1" with depth: its ~/point topic must be a valid ROS name (it used to kill the tracking thread)."""
    from reasonvos_ros.msg import Instruction

    h = depth_node
    h.check_still_tracks()
    h.node._on_instruction(Instruction(target_id="1", text="red"))
    h.oracle.targets.add("1")
    h.wait_tracking("1")
    wait_until_true(lambda: "1" in h.node._point_outputs, 10)
    assert h.node._point_outputs["1"].topic_name.endswith(
        "/point/t_1_" + hashlib.blake2b(b"1", digest_size=4).hexdigest()
    )
    assert len(h.node.engine.worker_threads()) == 2
    h.check()


def wait_until_true(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# ----------------------------------------------------------------------------------------------- over the wire
@st.composite
def wire_events(draw) -> Event:
    kind = draw(st.sampled_from(["image", "image", "image", "set", "set", "instruction", "text", "reset", "enable"]))
    if kind == "image":  # extreme sizes only without depth: a set of them would be judged by the window
        return Event("image", stamp=draw(STAMPS), image=draw(image_specs(allow_large=False)))
    if kind == "set":
        event = draw(frameset_events())
        return Event("frameset", event.stamp, event.image, event.depth, event.info)
    if kind == "reset":
        return Event("reset", target_id=draw(TARGET_IDS).replace("\x00", " "))
    if kind == "enable":
        return Event("enable", flag=draw(st.booleans()))
    # rclpy cannot serialise NUL characters in strings; the in-process run covers them.
    text = draw(TEXTS).replace("\x00", " ")
    return Event(kind, target_id=draw(TARGET_IDS).replace("\x00", " "), text=text, source=draw(st.integers(0, 255)))


# Slow and flaky in CI: one exact-count comparison over DDS was off by one on a fresh machine (under
# investigation); the same inputs are fuzzed in-process in the default suite.
@pytest.mark.slow
def test_fuzz_over_the_wire():
    """Malformed messages on the real topics and service calls of a node process (reliable QoS, nothing lost;
    the compressed-image subscription is covered in-process only): it stays up, counts exactly the colour-image,
    instruction and reset rejections the oracle predicts and at least the stamp rejections of depth and
    camera_info, lists the expected targets, and tracks with 3D points afterwards."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosutil import ros_node, spawn_python, wait_until
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String
    from std_srvs.srv import SetBool

    from reasonvos_ros.msg import Instruction, TargetResultArray
    from reasonvos_ros.ros.conversions import stamp_to_seconds
    from reasonvos_ros.srv import ResetTargets

    params = {
        "sampler": "scripted",
        "segmenter": "scripted",
        "tracker": "scripted",
        "use_depth": "true",
        "qos_reliability": "reliable",
        "qos_depth": 100,
        "sync_queue_size": 20,
        "diagnostics_period_s": 0.1,
        "max_targets": MAX_TARGETS,
    }
    args = ["--ros-args"] + [item for key, value in params.items() for item in ("-p", f"{key}:={value}")]
    proc = spawn_python(module="reasonvos_ros.ros.perception_node", args=args, name="perception_fuzz")
    oracle = Oracle()
    sent = {"image": 0}
    try:
        proc.wait_for_output("active: subscribed", timeout=40)
        with ros_node("fuzz_client") as h:
            qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
            pubs = {
                "image": h.node.create_publisher(Image, "/image", qos),
                "depth": h.node.create_publisher(Image, "/depth", qos),
                "info": h.node.create_publisher(CameraInfo, "/camera_info", qos),
                "instruction": h.node.create_publisher(Instruction, "/instruction", qos),
                "text": h.node.create_publisher(String, "/instruction_text", qos),
            }
            diagnostics = h.collect(DiagnosticArray, "/diagnostics", 10)
            results = h.collect(TargetResultArray, "/reasonvos_perception/results", 50)
            reset = h.node.create_client(ResetTargets, "/reasonvos_perception/reset")
            enable = h.node.create_client(SetBool, "/reasonvos_perception/enable")
            assert reset.wait_for_service(timeout_sec=20) and enable.wait_for_service(timeout_sec=20)
            for pub in pubs.values():
                h.wait_for_subscribers(pub, timeout=20)
            clock = StampClock()

            def diagnostic_values():
                wait_until(lambda: diagnostics.messages, 10, "diagnostics")
                return {kv.key: kv.value for kv in diagnostics.messages[-1].status[0].values}

            def publish(event: Event) -> None:
                if event.kind in ("image", "frameset"):
                    header = clock.header(event.stamp, "wire")
                    stamp = stamp_to_seconds(header.stamp)
                    if image_is_valid(event.image):
                        oracle.accept_stamp("image", stamp)
                    else:
                        oracle.count("image")
                    pubs["image"].publish(build_image(event.image, header))
                    sent["image"] += 1
                    if event.kind == "frameset":
                        oracle.accept_stamp("depth", stamp)
                        oracle.accept_stamp("camera_info", stamp)
                        pubs["depth"].publish(build_image(event.depth, header))
                        pubs["info"].publish(build_info(event.info, header))
                elif event.kind in ("instruction", "text"):
                    text = expand_text(event.text)
                    tid = target_id_of(event.target_id if event.kind == "instruction" else "default")
                    known = tid in oracle.targets or len(oracle.targets) < MAX_TARGETS
                    if instruction_is_valid(text) and tid is not None and known:
                        oracle.targets.add(tid)
                    else:
                        oracle.count("instruction")
                    if event.kind == "instruction":
                        pubs["instruction"].publish(Instruction(target_id=event.target_id, text=text))
                    else:
                        pubs["text"].publish(String(data=text))

                    # The two instruction topics and the reset service are separate channels, and the node keeps
                    # the 10 newest unread instructions (a burst of identical ones would overwrite each other):
                    # wait until the node lists the expected targets and rejections, so order and count hold.
                    def node_agrees():
                        values = diagnostic_values()
                        targets = {key[7:-1] for key in values if key.startswith("target[")}
                        rejected = int(values.get("rejected_instruction", 0))
                        return targets == oracle.targets and rejected == oracle.expected.get("instruction", 0)

                    try:
                        wait_until(node_agrees, 15, f"targets {oracle.targets} and {oracle.expected} rejections")
                    except AssertionError as exc:
                        raise AssertionError(f"{exc}; the node reports {diagnostic_values()}") from None
                elif event.kind == "enable":
                    response = enable.call(SetBool.Request(data=event.flag), timeout_sec=10)
                    assert response is not None and response.success, "enable service failed"
                else:
                    tid = event.target_id.strip()
                    response = reset.call(ResetTargets.Request(target_id=event.target_id), timeout_sec=10)
                    assert response is not None, "reset service did not answer"
                    expected_ok = not tid or tid in oracle.targets
                    assert response.success == expected_ok, (event.target_id, response.message)
                    if not tid:
                        oracle.targets.clear()
                    elif expected_ok:
                        oracle.targets.discard(tid)
                    else:
                        oracle.count("reset")
                time.sleep(0.005)

            @settings(max_examples=40, **FUZZ_SETTINGS)
            @given(st.lists(wire_events(), min_size=1, max_size=5))
            def fuzz(events):
                for event in events:
                    publish(event)

            fuzz()

            def settled():
                values = diagnostic_values()
                if int(values["frames_received"]) < sent["image"]:
                    return None
                lower_bounds = all(
                    int(values.get(f"rejected_{c}", 0)) >= oracle.expected.get(c, 0) for c in ("depth", "camera_info")
                )
                return values if lower_bounds else None

            wait_until(settled, 30, "the node to receive every message")
            values = diagnostic_values()
            for category in ("image", "instruction", "reset"):
                got, expected = int(values.get(f"rejected_{category}", 0)), oracle.expected.get(category, 0)
                assert got == expected, (category, got, expected, values)
            assert proc.returncode is None
            assert sent["image"] > 50 and oracle.expected.get("image", 0) > 10

            # Still alive and tracking, with 3D points: a clean target on clean frames.
            assert reset.call(ResetTargets.Request(target_id=""), timeout_sec=10).success
            assert enable.call(SetBool.Request(data=True), timeout_sec=10).success
            pubs["instruction"].publish(Instruction(target_id="wire", text="red"))
            start_s = max([*oracle.last.values(), clock.tenths / 10]) + 10
            frame = [0]

            def tracked_with_point():
                from std_msgs.msg import Header

                from reasonvos_ros.ros.conversions import nanoseconds_to_stamp, numpy_to_image_msg

                frame[0] += 1
                header = Header(stamp=nanoseconds_to_stamp(int((start_s + frame[0] * 0.1) * 1e9)), frame_id="w")
                pubs["image"].publish(numpy_to_image_msg(CLEAN_RGB, "rgb8", header))
                pubs["depth"].publish(numpy_to_image_msg(np.full((60, 80), 2.0, np.float32), "32FC1", header))
                pubs["info"].publish(build_info(CLEAN_INFO, header))
                time.sleep(0.05)
                return any(
                    r.target_id == "wire" and r.status == r.STATUS_TRACKING and r.point_3d_valid
                    for msg in results.messages[-5:]
                    for r in msg.results
                )

            wait_until(tracked_with_point, 30, "TRACKING results with a 3D point after the fuzzing")
    finally:
        code = proc.stop()
    log = proc.output()
    assert code in (0, -2, 130), f"node exited with {code}:\n{log[-3000:]}"
    assert "Traceback" not in log, log[-5000:]
    for category in ("image", "instruction", "depth", "camera_info"):
        assert f"rejected {category}" in log
