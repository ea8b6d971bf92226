"""Fuzzing every input of the perception node (issues 10 and 14) against an independent oracle: invariants of
what may come out, taken from the documented contract (README, msg/*.msg, srv/*.srv), never a copy of the node's
acceptance rules or its own counts.

In-process (most cases): a ``PerceptionNode`` is built in this process (own rclpy context, scripted backends,
configured and activated) and driven only through its ROS interface: the callbacks of its own subscriptions,
services and diagnostics timer as rclpy lists them, called with messages built from hypothesis-generated specs,
so every message is handled when the call returns. Its results and diagnostics are received through DDS by an
observer node; nothing of the node's own attributes is read. After every event:
- counters (``/diagnostics``): ``frames_received`` = colour images sent; at most one rejection per image
  (image, image_too_large, frame_size) and so no more such rejections than images; no more depth/camera_info
  rejections than such messages; ``rejected_reset`` = the resets answered ``success: false``; every counter
  monotonic; no callback error; the engine keeps its worker threads; ``time_jumps_back`` grows only on a message
  more than 1 s older than one sent before; the targets listed were all addressed, at most ``max_targets``;
- inputs README judges whatever the state: a malformed image (unknown encoding, empty, step/size mismatch) is
  rejected once as ``image``, one over ``max_image_pixels`` as ``image_too_large``; a stamp at most 0.9 s older
  than the previous accepted image's is rejected; a well-formed image newer than every image sent passes; an
  empty, over-long or badly addressed instruction is rejected, a valid one accepted (its target listed); a reset
  of a listed target succeeds and removes it, of an unknown one fails and is counted;
- results: ContractChecker (headers of images sent and not rejected, send order, no result while paused or for a
  reset target, consistent masks, boxes, points and 3D points).
Afterwards every rejection category counted was logged (on /rosout), and a clean instruction on clean frames is
tracked again.

Over the wire (``test_fuzz_over_the_wire``): a node process gets a fixed, seeded sequence of inputs whose outcome
README fixes through real topics and service calls, synchronised on conditions, and must count them exactly.

The long run (10,000 cases) is ``benchmarks/fuzz_long.py``, which reuses this module's harness and strategies.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rosutil import wait_until

pytestmark = pytest.mark.ros

# ----------------------------------------------------------------------------------------------- input rules
# Limits the documentation states (README, Instruction.msg); the generators below aim at and around them.
COLOUR_BPP = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2}
DEPTH_BPP = {"32FC1": 4, "16UC1": 2, "mono16": 2}
KNOWN_BPP = {**COLOUR_BPP, **DEPTH_BPP}
TIME_JUMP_BACK_S = 1.0  # a bigger step back starts a new time line; a smaller one is out of order
MAX_IMAGE_PIXELS = 16_777_216  # the max_image_pixels default
MAX_INSTRUCTION_CHARS = 2000
MAX_TARGET_ID_CHARS = 128
MAX_TARGETS = 4
UINT32_MAX = 2**32 - 1
MAX_DATA_BYTES = 64 * 1024 * 1024  # generated payloads are capped (a declared 4-gigapixel image gets short data)
BASE_DECISECONDS = 17_000_000_000  # stamps are whole tenths of a second from ~2023 (sync slop is 0.05 s)


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
    shape = (image.height, image.width) if raw_image_is_clean(image) else None
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


# ----------------------------------------------------------------------------------------------- the contract
# What a sender may rely on, from README ("Bad inputs never stop the node", "A hostile world"), msg/*.msg and
# srv/*.srv. Inputs are judged only where the documentation leaves no doubt; every other input may be accepted or
# rejected, and only the invariants below (at most one rejection per frame, what may come out) hold for it.
COLOUR_CATEGORIES = ("image", "image_too_large", "frame_size")  # rejections of one colour frame
DEPTH_CATEGORIES = ("depth", "depth_too_large")
STALE_MARGIN_S = 0.9  # a stamp less than this much older than the previous accepted one is surely out of order
SAFE_SIDE = 4096  # a well-formed frame with no side over this is surely storable (README: max_image_pixels default)
TRACKING, STATUSES = 1, range(5)  # TargetResult.STATUS_TRACKING and the five STATUS_* constants


def stamp_key(stamp: Any) -> tuple[int, int]:
    return int(stamp.sec), int(stamp.nanosec)


def stamp_value(stamp: Any) -> float:
    """builtin_interfaces/Time as seconds (sec + nanosec / 1e9, as the message defines it)."""
    return int(stamp.sec) + int(stamp.nanosec) * 1e-9


def raw_image_problem(spec: ImageSpec, max_pixels: int) -> str | None:
    """The rejection category README promises for this raw image whatever its stamp, or None when it names none.

    Over ``max_image_pixels`` by its declared size: ``image_too_large`` (judged before decoding). Otherwise an
    unknown encoding (none of the eight README's conversions know, in any letter case), an empty image or a
    step/size mismatch: ``image``."""
    if spec.height * spec.width > max_pixels:
        return "image_too_large"
    known = spec.encoding.strip().lower() in {name.lower() for name in KNOWN_BPP}
    if not known or spec.height == 0 or spec.width == 0 or spec.data_len != spec.step * spec.height:
        return "image"
    if spec.encoding in COLOUR_BPP and spec.step < _row_bytes(spec):
        return "image"
    return None


def raw_image_is_clean(spec: ImageSpec) -> bool:
    """A listed encoding, rows at least one pixel row long, data = step * height, a storable size."""
    return (
        spec.encoding in COLOUR_BPP
        and 0 < spec.height <= SAFE_SIDE
        and 0 < spec.width <= SAFE_SIDE
        and spec.step >= _row_bytes(spec)
        and spec.data_len == spec.step * spec.height
    )


def compressed_problem(spec: CompressedSpec) -> str | None:
    """README: compressed data that is neither PNG nor JPEG counts as ``rejected_image``."""
    return "image" if spec.payload in ("garbage", "empty") else None


def compressed_is_clean(spec: CompressedSpec) -> bool:
    return (spec.fmt, spec.payload) in (("jpeg", "jpeg"), ("png", "png"))


def instruction_must_be_rejected(raw_id: str, text: str) -> bool:
    """README/Instruction.msg: an empty text, one over 2000 characters, a target id over 128 characters."""
    long_text = len(text) > MAX_INSTRUCTION_CHARS and text.isprintable() and not any(c.isspace() for c in text)
    long_id = len(raw_id) > MAX_TARGET_ID_CHARS and raw_id == raw_id.strip()
    return text.strip() == "" or long_text or long_id


def instruction_must_be_accepted(raw_id: str, text: str, listed: set[str], max_targets: int) -> bool:
    """A printable text of 1..2000 characters for a printable id of at most 128 characters, the target already
    known or fewer than max_targets known (README parameter table)."""
    tid = normalised_id(raw_id)
    text_ok = text.isprintable() and text.strip() != "" and len(text) <= MAX_INSTRUCTION_CHARS
    id_ok = raw_id == raw_id.strip() and tid.isprintable() and len(tid) <= MAX_TARGET_ID_CHARS
    return text_ok and id_ok and (tid in listed or len(listed) < max_targets)


def normalised_id(raw_id: str) -> str:
    """Instruction.msg: an empty target_id means "default" (surrounding blanks are not part of an id)."""
    return raw_id.strip() or "default"


def valid_depth_metres(spec: ImageSpec) -> float | None:
    """The one value (metres) the valid pixels of a generated depth image have, None when it has none: 32FC1 is
    metres, 16-bit depth millimetres (README input table); NaN, Inf, 0 and negative values are invalid."""
    kind = spec.fill.split(":", 1)[-1]
    if spec.encoding == "32FC1":
        return {"valid": 1.5, "mixed": 1.5, "huge": float(np.float32(3e38))}.get(kind)
    if spec.encoding in ("16UC1", "mono16"):
        return {"zero": None, "huge": 65.535}.get(kind, 1.5)
    return None


def intrinsics_of(spec: InfoSpec) -> tuple[float, float, float, float] | None:
    """(fx, fy, cx, cy) from P when P is set (rectified), else from K (README input table); None when unusable."""
    p, k = spec.p, spec.k
    fx, fy, cx, cy = (p[0], p[5], p[2], p[6]) if p[0] > 0 else (k[0], k[4], k[2], k[5])
    usable = all(math.isfinite(v) for v in (fx, fy, cx, cy)) and fx > 0 and fy > 0
    return (fx, fy, cx, cy) if usable else None


@dataclass
class SentFrame:
    """A colour image as sent: its header identifies it (every image gets its own frame_id)."""

    seq: int
    stamp: tuple[int, int]
    shape: tuple[int, int] | None  # (height, width) of the decoded image, None when not known
    passed_callback: bool | None = None  # not rejected by its own callback (None: not observed, over the wire)
    accepted: bool | None = None  # no rejection at all (observed without depth only, where acceptance is final)
    must_be_rejected: bool = False  # README says so whatever the node's state


class ContractChecker:
    """Everything sent to the node (in order) and the invariants of what may come out of it.

    Results (``~/results``, ``~/results_history``) are checked against the record of what was sent:
    - the header equals the header of a colour image that was sent (stamp and frame_id), and that image was not
      one the node rejected (or had to reject);
    - live results come one per frame, in the order the frames were sent, and their stamps never go back unless
      the node counted a time jump back (``time_jumps_back``) after the earlier frame was sent;
    - no result is about a frame sent after an ``~/enable`` false was acknowledged when it arrived before the
      ``~/enable`` true was sent (a pause is synchronous: nothing is published while paused);
    - no result names a target on a frame sent after that target's reset was acknowledged, unless an instruction
      for it was sent after the reset; and only targets some instruction addressed appear;
    - each TargetResult is consistent (TargetResult.msg): same header as the array, target ids unique and in order,
      a mask only while TRACKING, mono8 0/255 of the source image's size, bbox = the mask's bounding box (all zero
      without a mask), the interior point on the mask, scores in [0, 1], a key-frame stamp that was sent, and a 3D
      point only with a mask, at the depth and camera intrinsics sent with that frame.
    """

    def __init__(self, max_targets: int) -> None:
        self.max_targets = max_targets
        self._lock = threading.Lock()
        self.seq = 0
        self.frames: dict[str, SentFrame] = {}
        self.colour_stamps: set[tuple[int, int]] = set()
        self.depth_at: dict[tuple[int, int], list[ImageSpec]] = {}
        self.info_at: dict[tuple[int, int], list[InfoSpec]] = {}
        self.addressed: set[str] = set()
        self.last_instruction_seq: dict[str, int] = {}
        self.reset_seq: dict[str, int] = {}
        self.reset_all_seq = -1
        self.paused_since: int | None = None
        self.jump_seqs: list[int] = []
        self.live: list[tuple[int, float]] = []  # (seq, stamp) of each ~/results frame, in arrival order
        self.pending: deque[tuple[str, Any, int | None]] = deque()
        self.violations: list[str] = []
        self.results_checked = {"results": 0, "results_history": 0}
        self.tracking: dict[str, list[tuple[SentFrame, Any]]] = {}  # live TRACKING results per target

    # ---- what was sent
    def next_seq(self) -> int:
        with self._lock:
            self.seq += 1
            return self.seq

    def frame(self, header: Any, shape: tuple[int, int] | None, must_be_rejected: bool = False) -> SentFrame:
        frame = SentFrame(self.next_seq(), stamp_key(header.stamp), shape, must_be_rejected=must_be_rejected)
        with self._lock:
            self.frames[header.frame_id] = frame
            self.colour_stamps.add(frame.stamp)
        return frame

    def depth_sent(self, header: Any, spec: ImageSpec) -> None:
        self.next_seq()
        with self._lock:
            self.depth_at.setdefault(stamp_key(header.stamp), []).append(spec)

    def info_sent(self, header: Any, spec: InfoSpec) -> None:
        self.next_seq()
        with self._lock:
            self.info_at.setdefault(stamp_key(header.stamp), []).append(spec)

    def instruction_sent(self, raw_id: str) -> None:
        seq = self.next_seq()
        with self._lock:
            tid = normalised_id(raw_id)
            self.addressed.add(tid)
            self.last_instruction_seq[tid] = seq

    def reset_acknowledged(self, raw_id: str) -> None:
        """After a successful ``~/reset`` answered: later frames must not carry the target(s)."""
        seq = self.next_seq()
        with self._lock:
            if raw_id.strip():
                self.reset_seq[raw_id.strip()] = seq
            else:
                self.reset_all_seq = seq

    def pause_acknowledged(self) -> None:
        seq = self.next_seq()
        with self._lock:
            if self.paused_since is None:
                self.paused_since = seq

    def resume_requested(self) -> None:
        self.next_seq()
        with self._lock:
            self.paused_since = None

    def time_jump_counted(self, seq: int) -> None:
        with self._lock:
            self.jump_seqs.append(seq)

    # ---- what came out
    def on_results(self, topic: str) -> Any:
        def record(msg: Any) -> None:
            with self._lock:  # the pause state when it arrived: what arrives while paused was published paused
                self.pending.append((topic, msg, self.paused_since))

        return record

    def check_pending(self) -> None:
        """Check every result array that arrived since the last call; AssertionError on a violation."""
        while True:
            with self._lock:
                if not self.pending:
                    break
                topic, msg, paused_since = self.pending.popleft()
            problems = self._array_problems(topic, msg, paused_since)
            self.violations += [f"{topic}: {p}" for p in problems]
            self.results_checked[topic] += 1
        assert not self.violations, "\n".join(self.violations[:10])

    def _array_problems(self, topic: str, msg: Any, paused_since: int | None) -> list[str]:
        header = msg.header
        frame = self.frames.get(header.frame_id)
        if frame is None or frame.stamp != stamp_key(header.stamp):
            return [f"header {header.frame_id!r} {stamp_key(header.stamp)} is not the header of any image sent"]
        where = f"frame {header.frame_id!r} (stamp {frame.stamp})"
        problems = []
        if frame.must_be_rejected or frame.passed_callback is False or frame.accepted is False:
            problems.append(f"{where}: a result on a frame that was (or had to be) rejected")
        if paused_since is not None and frame.seq > paused_since:
            problems.append(f"{where}: published while processing was paused (sent after the pause was answered)")
        if topic == "results":
            if self.live and frame.seq <= self.live[-1][0]:
                problems.append(f"{where}: live results out of send order or twice (previous: #{self.live[-1][0]})")
            newest_jump = max([j for j in self.jump_seqs if j <= frame.seq], default=-1)
            stamp = stamp_value(header.stamp)
            for seq, earlier in reversed(self.live):
                if seq < newest_jump:
                    break
                if earlier > stamp:
                    problems.append(f"{where}: stamp {stamp} after a published {earlier} with no time jump between")
                    break
            self.live.append((frame.seq, stamp))
        ids = [r.target_id for r in msg.results]
        if ids != sorted(ids) or len(set(ids)) != len(ids):
            problems.append(f"{where}: target ids not unique and in order: {ids}")
        if len(ids) > self.max_targets:
            problems.append(f"{where}: {len(ids)} targets, max_targets is {self.max_targets}")
        for result in msg.results:
            problems += [
                f"{where}, target {result.target_id!r}: {p}" for p in self._result_problems(result, msg, frame)
            ]
            if topic == "results" and result.status == TRACKING:
                self.tracking.setdefault(result.target_id, []).append((frame, result))
        return problems

    def _result_problems(self, r: Any, array: Any, frame: SentFrame) -> list[str]:
        problems = []
        if stamp_key(r.header.stamp) != frame.stamp or r.header.frame_id != array.header.frame_id:
            problems.append("header differs from the array's")
        tid = r.target_id
        if tid not in self.addressed:
            problems.append("no instruction ever addressed this target")
        barrier = max(self.reset_seq.get(tid, -1), self.reset_all_seq)
        if 0 <= barrier < frame.seq and self.last_instruction_seq.get(tid, -1) < barrier:
            problems.append("result on a frame sent after the target's reset was acknowledged (no new instruction)")
        if r.status not in STATUSES:
            problems.append(f"unknown status {r.status}")
        for name in ("score", "understanding_confidence"):
            value = getattr(r, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                problems.append(f"{name} {value} not in [0, 1]")
        if stamp_key(r.keyframe_stamp) not in self.colour_stamps | {(0, 0)}:
            problems.append(f"keyframe_stamp {stamp_key(r.keyframe_stamp)} is the stamp of no image sent")
        mask = r.mask
        bbox = (r.bbox_x, r.bbox_y, r.bbox_width, r.bbox_height)
        if mask.width == 0 or mask.height == 0:
            if bbox != (0, 0, 0, 0):
                problems.append(f"bbox {bbox} without a mask")
            if r.point_3d_valid:
                problems.append("a 3D point without a mask")
            return problems
        if r.status != TRACKING:
            problems.append(f"a mask with status {r.status} (only TRACKING carries one)")
        if mask.encoding != "mono8" or stamp_key(mask.header.stamp) != frame.stamp:
            problems.append(f"mask encoding {mask.encoding!r} / header {stamp_key(mask.header.stamp)}")
        if frame.shape is not None and (mask.height, mask.width) != frame.shape:
            problems.append(f"mask {mask.height}x{mask.width}, source image {frame.shape[0]}x{frame.shape[1]}")
        if mask.step < mask.width or len(mask.data) != mask.step * mask.height:
            return [*problems, f"mask step {mask.step} / data {len(mask.data)} do not fit {mask.width}x{mask.height}"]
        pixels = np.frombuffer(bytes(mask.data), np.uint8).reshape(mask.height, mask.step)[:, : mask.width]
        if not set(np.unique(pixels).tolist()) <= {0, 255}:
            problems.append("mask values other than 0/255")
        rows, cols = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
        expected_bbox = (
            (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
            if rows.size
            else (0, 0, 0, 0)
        )
        if bbox != expected_bbox:
            problems.append(f"bbox {bbox}, the mask's bounding box is {expected_bbox}")
        if rows.size:
            x, y = math.floor(r.point_x), math.floor(r.point_y)
            if not (0 <= x < mask.width and 0 <= y < mask.height and pixels[y, x]):
                problems.append(f"interior point ({r.point_x}, {r.point_y}) is not on the mask")
        if r.point_3d_valid:
            problems += self._point_problems(r, frame)
        return problems

    def _point_problems(self, r: Any, frame: SentFrame) -> list[str]:
        x, y, z = r.point_3d.x, r.point_3d.y, r.point_3d.z
        if not all(math.isfinite(v) for v in (x, y, z)) or z <= 0:
            return [f"3D point ({x}, {y}, {z}) not finite with z > 0"]
        depths = {valid_depth_metres(spec) for spec in self.depth_at.get(frame.stamp, [])} - {None}
        if not any(math.isclose(z, d, rel_tol=1e-4) for d in depths):
            return [f"3D point z = {z}, the depth sent with this frame is {depths or 'none'}"]
        for spec in self.info_at.get(frame.stamp, []):
            intrinsics = intrinsics_of(spec)
            if intrinsics is None:
                continue
            fx, fy, cx, cy = intrinsics
            expected = ((r.point_x - cx) * z / fx, (r.point_y - cy) * z / fy)
            if all(math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) for a, b in zip((x, y), expected, strict=True)):
                return []
        return [f"3D point ({x}, {y}, {z}) is not the interior point deprojected with any camera_info sent with it"]


# ----------------------------------------------------------------------------------------------- counters
# Diagnostics values that count events since activation: never smaller in a later status.
MONOTONIC_KEYS = (
    "frames_received",
    "frames_rejected",
    "time_jumps_back",
    "callback_errors",
    "instructions_repeated",
    "instructions_lost",
    "frames_processed",
    "frames_skipped_by_tracker",
    "acquisitions",
    "timelines_by_resolution",
)


def counter(values: dict[str, str], key: str) -> int:
    return int(values.get(key, 0))


def rejected(values: dict[str, str], *categories: str) -> int:
    return sum(counter(values, f"rejected_{c}") for c in categories)


def categories(values: dict[str, str]) -> list[str]:
    return [key[len("rejected_") :] for key in values if key.startswith("rejected_")]


def listed_targets(values: dict[str, str]) -> set[str]:
    return {key[len("target[") : -1] for key in values if key.startswith("target[")}


def counter_regressions(before: dict[str, str], after: dict[str, str]) -> list[str]:
    keys = [*MONOTONIC_KEYS, *(k for k in before if k.startswith("rejected_"))]
    return [
        f"{k} went from {before[k]} to {after.get(k)}"
        for k in keys
        if k in before and counter(after, k) < int(before[k])
    ]


# ----------------------------------------------------------------------------------------------- the harness
class InProcessNode:
    """A PerceptionNode in this process (own rclpy context, scripted backends, configured and activated),
    driven only through its ROS interface: the callbacks of its own subscriptions, services and diagnostics
    timer as rclpy lists them (``Node.subscriptions``/``services``/``timers``, found by topic, service name and
    period), called from this thread, so that every message is handled when the call returns. Its outputs
    (``~/results``, ``~/results_history``, its ``/diagnostics``, ``/rosout``) are received by an observer node
    through DDS. Nothing of the node's own attributes is used: the node's internals can move freely.

    After every event a diagnostics status is taken (the timer's callback, called here: the node is not spun,
    so the timer never fires by itself) and the counter invariants are checked, then every result that arrived
    is checked (ContractChecker)."""

    DIAGNOSTICS_PERIOD_S = 59.0  # never fires (not spun); also how the diagnostics timer is told from others

    def __init__(self, use_depth: bool, log_level: str = "ERROR", **params: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rcl_interfaces.msg import Log
        from rclpy.logging import LoggingSeverity
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rosutil import MessageCollector, in_process_perception_node, ros_node

        from reasonvos_ros.msg import TargetResultArray

        values = {
            "use_depth": use_depth,
            "reacquire_interval_s": 0.0,
            "not_present_retry_s": 0.2,
            "max_targets": MAX_TARGETS,
            "debug_image_rate_hz": 0.0,
            "diagnostics_period_s": self.DIAGNOSTICS_PERIOD_S,
            **params,
        }
        self.max_targets = int(values["max_targets"])
        self.max_image_pixels = int(values.get("max_image_pixels", MAX_IMAGE_PIXELS))
        self.use_depth = use_depth
        self.image_topic = "image/compressed" if values.get("image_transport") == "compressed" else "image"
        # Its own namespace and diagnostics topic: other nodes in this domain (node processes of other tests, the
        # other harnesses of this module) stay apart.
        self.namespace = f"/fuzz_in_process_{next(IN_PROCESS_NODES)}"
        self.context, self.node = in_process_perception_node(
            values, self.namespace, ["--ros-args", "-r", f"/diagnostics:={self.namespace}/diagnostics"]
        )
        self.logger_name = self.node.get_logger().name
        # ERROR while fuzzing keeps the output small; rejection log lines are checked at WARN in
        # test_rejections_are_counted_and_logged_rate_limited, and an error followed by a warning at INFO in
        # test_engine_warning_after_an_error_keeps_the_workers.
        self.node.get_logger().set_level(getattr(LoggingSeverity, log_level))
        assert self.node.trigger_configure().name == "SUCCESS"
        assert self.node.trigger_activate().name == "SUCCESS"
        prefix = self.namespace + "/"
        self.inputs = {sub.topic_name[len(prefix) :]: sub.callback for sub in self.node.subscriptions}
        self.services = {srv.srv_name.rsplit("/", 1)[-1]: srv.callback for srv in self.node.services}
        period_ns = int(self.DIAGNOSTICS_PERIOD_S * 1e9)
        (self.diagnostics_timer,) = [t for t in self.node.timers if t.timer_period_ns == period_ns]

        self._observer_scope = contextlib.ExitStack()
        observer = self._observer_scope.enter_context(ros_node("fuzz_observer"))
        self.checker = ContractChecker(self.max_targets)
        deep = QoSProfile(depth=10_000, reliability=ReliabilityPolicy.RELIABLE)
        results_topic = f"{self.namespace}/reasonvos_perception/"
        subs = [
            observer.node.create_subscription(
                TargetResultArray, results_topic + topic, self.checker.on_results(topic), deep
            )
            for topic in ("results", "results_history")
        ]
        self.diagnostics = observer.collect(DiagnosticArray, f"{self.namespace}/diagnostics", deep)
        # Transient local, as rosout is published: lines logged before the match arrive as well.
        kept = QoSProfile(
            depth=10_000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.rosout = MessageCollector(observer.node, Log, "/rosout", kept)
        for sub in [*subs, self.diagnostics.subscription, self.rosout.subscription]:
            observer.wait_for_publishers(sub, timeout=30)
        # Both ends must have matched (a volatile message sent before the writer saw the reader is lost).
        watched = {sub.topic_name for sub in [*subs, self.diagnostics.subscription]}
        for publisher in self.node.publishers:
            if publisher.topic_name in watched:
                observer.wait_for_subscribers(publisher, timeout=30)
        self.observer = observer
        self.clock = StampClock()
        self.events = 0
        self.history: deque[Event] = deque(maxlen=12)
        self.sent = {"colour": 0, "depth": 0, "info": 0, "instruction": 0, "reset_refused": 0}
        self.classified = {"must_reject": 0, "stale": 0, "clean_fresh": 0}
        self.max_stamp = -math.inf  # newest stamp sent on any camera stream
        # The last image that passed (accepted; with depth: passed its callback) and the lowest and highest stamp
        # of it and every image since: the stream's newest stamp is one of them.
        self.previous_passed: SentFrame | None = None
        self.stamp_candidates = (math.inf, -math.inf)
        self.last_frame: SentFrame | None = None
        self.event_first_seq = 0
        self.values = self.snapshot()
        self.engine_threads = self.values["engine_threads"]

    def close(self) -> None:
        self._observer_scope.close()
        self.node.trigger_deactivate()
        self.node.trigger_cleanup()
        self.node.destroy_node()
        self.context.try_shutdown()

    # ---- observing
    def snapshot(self) -> dict[str, str]:
        """The node's diagnostics values now (its timer's callback, called here, publishes them)."""
        count = len(self.diagnostics)
        self.diagnostics_timer.callback()
        status = self.diagnostics.wait_for(count + 1, 10)[-1].status[0]
        return {kv.key: kv.value for kv in status.values}

    def logged_categories(self) -> set[str]:
        lines = [m.msg for m in list(self.rosout.messages) if m.name == self.logger_name]
        return {line.split(" ", 2)[1] for line in lines if line.startswith("rejected ")}

    # ---- sending
    def _new_frame_header(self, spec: StampSpec) -> Any:
        return self.clock.header(spec, f"fuzz_{self.checker.seq + 1}")

    def apply(self, event: Event) -> None:
        self.events += 1
        self.history.append(event)
        try:
            self._apply(event)
            self.checker.check_pending()
        except AssertionError as exc:
            recent = "\n".join(f"  {e}" for e in self.history)
            raise AssertionError(f"{exc}\nlast events, oldest first:\n{recent}") from None

    def _apply(self, event: Event) -> None:
        self.event_first_seq = self.checker.seq + 1
        if event.kind in ("image", "compressed"):
            header = self._new_frame_header(event.stamp)
            self._send_colour(event, header)
        elif event.kind == "burst":  # order: 0 = a frame (set) at the next stamp, 1 = one again at the same stamp
            for again in event.order:
                stamp = StampSpec("same") if again else event.stamp
                if event.depth is None:
                    self._send_colour(Event("image", stamp, event.image), self._new_frame_header(stamp))
                else:
                    self._apply(Event("frameset", stamp, event.image, event.depth, event.info))
        elif event.kind == "frameset":
            header = self._new_frame_header(event.stamp)
            for position in event.order:
                if position == 0:
                    self._send_colour(event, header)
                elif position == 1:
                    self._send_depth(event.depth, header)
                else:
                    self._send_info(event.info, header)
        elif event.kind == "depth":
            self._send_depth(event.depth, self.clock.header(event.stamp, "fuzz_depth"))
        elif event.kind == "info":
            self._send_info(event.info, self.clock.header(event.stamp, "fuzz_info"))
        elif event.kind in ("instruction", "text"):
            self._send_instruction(event)
        elif event.kind == "reset":
            self.reset(event.target_id)
        elif event.kind == "enable":
            self.enable(event.flag)
        else:
            raise AssertionError(f"unknown event kind {event.kind}")

    def _observe(self, stamp: float = math.inf) -> tuple[dict[str, str], dict[str, str]]:
        """Take a status after one message (a camera message: its ``stamp``); check the counter invariants and
        move the newest stamp sent on; returns the statuses (before, after)."""
        before, after = self.values, self.snapshot()
        self.values = after
        problems = counter_regressions(before, after)
        jumps = counter(after, "time_jumps_back") - counter(before, "time_jumps_back")
        if jumps:
            # Recorded at the event's first message: which of a set's messages starts the time line is open.
            self.checker.time_jump_counted(self.event_first_seq)
            if jumps > 1 or not stamp < self.max_stamp - TIME_JUMP_BACK_S:
                problems.append(f"time_jumps_back +{jumps} on a message at {stamp} (newest sent {self.max_stamp})")
        if math.isfinite(stamp):
            self.max_stamp = max(self.max_stamp, stamp)
        if after.get("callback_errors") != "0" or any(k.startswith("callback_errors[") for k in after):
            problems.append(f"an exception escaped a callback: {after}")
        if after["engine_threads"] != self.engine_threads:
            problems.append(f"engine threads {self.engine_threads} -> {after['engine_threads']}")
        if counter(after, "frames_received") != self.sent["colour"]:
            problems.append(f"frames_received {after['frames_received']}, colour images sent {self.sent['colour']}")
        colour, everything = rejected(after, *COLOUR_CATEGORIES), rejected(after, *categories(after))
        if colour > self.sent["colour"]:
            problems.append(f"{colour} colour-image rejections for {self.sent['colour']} images")
        if not colour <= counter(after, "frames_rejected") <= everything:
            problems.append(f"frames_rejected {after['frames_rejected']} outside [{colour}, {everything}]")
        if rejected(after, *DEPTH_CATEGORIES) > self.sent["depth"]:
            problems.append(f"more depth rejections than depth images ({self.sent['depth']})")
        if rejected(after, "camera_info") > self.sent["info"]:
            problems.append(f"more camera_info rejections than messages ({self.sent['info']})")
        if rejected(after, "reset") != self.sent["reset_refused"]:
            problems.append(f"rejected_reset {rejected(after, 'reset')}, refused resets {self.sent['reset_refused']}")
        handled = rejected(after, "instruction") + counter(after, "instructions_repeated")
        if handled > self.sent["instruction"]:
            problems.append(f"{handled} instructions rejected or repeated of {self.sent['instruction']} sent")
        targets = listed_targets(after)
        if len(targets) > self.max_targets or not targets <= self.checker.addressed:
            problems.append(f"targets listed {sorted(targets)}; addressed {sorted(self.checker.addressed)}")
        assert not problems, "; ".join(problems)
        return before, after

    def _send_colour(self, event: Event, header: Any) -> None:
        spec = event.image
        stamp = stamp_value(header.stamp)
        if isinstance(spec, CompressedSpec):
            msg, problem, clean = build_compressed(spec, header), compressed_problem(spec), compressed_is_clean(spec)
            shape = spec.size if clean else None
        else:
            msg, problem = build_image(spec, header), raw_image_problem(spec, self.max_image_pixels)
            clean = raw_image_is_clean(spec)
            shape = (spec.height, spec.width) if clean else None
        previous = self.previous_passed
        # The stream's newest stamp is the last passed image's or one of the later ones (rejected images may or
        # may not have been judged by their stamp first): below all of these by less than STALE_MARGIN_S is a
        # duplicate or out of order, above all of them is new (README).
        low, high = self.stamp_candidates
        stale = previous is not None and high - STALE_MARGIN_S < stamp <= low
        fresh = stamp > high
        frame = self.checker.frame(header, shape, must_be_rejected=problem is not None or stale)
        self.sent["colour"] += 1
        self.inputs[self.image_topic](msg)
        before, after = self._observe(stamp)
        delta = {c: rejected(after, c) - rejected(before, c) for c in COLOUR_CATEGORIES}
        at_callback = delta["image"] + delta["image_too_large"]
        assert sum(delta.values()) <= 1, f"one image, {delta} rejections"
        if problem is not None:
            self.classified["must_reject"] += 1
            assert delta[problem] == 1, f"{spec}: README says rejected_{problem}; counted {delta}"
        elif stale:
            self.classified["stale"] += 1
            assert at_callback == 1, f"stamp {stamp} after an accepted {previous.stamp}: not rejected ({delta})"
        elif clean and fresh:
            self.classified["clean_fresh"] += 1
            assert at_callback == 0, f"a well-formed image with the newest stamp was rejected ({delta})"
            same_size = previous is not None and previous is self.last_frame and previous.shape == shape
            if same_size and not self.use_depth:
                assert delta["frame_size"] == 0, "a well-formed, newest frame of the stream's size was dropped"
        frame.passed_callback = at_callback == 0
        frame.accepted = None if self.use_depth else sum(delta.values()) == 0
        if frame.passed_callback if self.use_depth else frame.accepted:
            self.previous_passed, self.stamp_candidates = frame, (stamp, stamp)
        else:
            self.stamp_candidates = (min(low, stamp), max(high, stamp))
        self.last_frame = frame

    def _send_depth(self, spec: ImageSpec, header: Any) -> None:
        self.checker.depth_sent(header, spec)
        self.sent["depth"] += 1
        self.inputs["depth"](build_image(spec, header))
        self._observe(stamp_value(header.stamp))

    def _send_info(self, spec: InfoSpec, header: Any) -> None:
        self.checker.info_sent(header, spec)
        self.sent["info"] += 1
        self.inputs["camera_info"](build_info(spec, header))
        self._observe(stamp_value(header.stamp))

    def _send_instruction(self, event: Event) -> None:
        from std_msgs.msg import String

        from reasonvos_ros.msg import Instruction

        text = expand_text(event.text)
        raw_id = event.target_id if event.kind == "instruction" else ""
        listed_before = listed_targets(self.values)
        must_reject = instruction_must_be_rejected(raw_id, text)
        must_accept = instruction_must_be_accepted(raw_id, text, listed_before, self.max_targets)
        self.checker.instruction_sent(raw_id)
        self.sent["instruction"] += 1
        if event.kind == "instruction":
            self.inputs["instruction"](Instruction(target_id=event.target_id, text=text, source=event.source))
        else:
            self.inputs["instruction_text"](String(data=text))
        before, after = self._observe()
        refused = rejected(after, "instruction") - rejected(before, "instruction")
        repeated = counter(after, "instructions_repeated") - counter(before, "instructions_repeated")
        assert refused + repeated <= 1 and refused >= 0, f"one instruction: {refused} rejected, {repeated} repeated"
        if must_reject:
            assert refused == 1, f"README says this instruction is rejected: id {raw_id[:40]!r}, text {text[:40]!r}"
        if must_accept:
            assert refused == 0, f"a valid instruction was rejected: id {raw_id[:40]!r}, text {text[:40]!r}"
        if refused:
            assert listed_targets(after) == listed_before, "a rejected instruction changed the targets"
        else:
            assert normalised_id(raw_id) in listed_targets(after), "an accepted instruction's target is not listed"

    def reset(self, raw_id: str) -> Any:
        from reasonvos_ros.srv import ResetTargets

        listed_before = listed_targets(self.values)
        self.checker.next_seq()
        response = self.services["reset"](ResetTargets.Request(target_id=raw_id), ResetTargets.Response())
        if response.success:
            self.checker.reset_acknowledged(raw_id)
        else:
            self.sent["reset_refused"] += 1
        _, after = self._observe()
        assert response.message, "a reset response always says what it did"
        tid = raw_id.strip()
        if not tid:
            assert response.success and not listed_targets(after), ("reset all", response.message)
        elif tid == raw_id:  # an id with surrounding blanks: which target it names is not specified
            assert response.success == (tid in listed_before), (raw_id, response.message, sorted(listed_before))
            assert listed_targets(after) == listed_before - {tid}, "a reset changed other targets"
        return response

    def enable(self, flag: bool) -> None:
        from std_srvs.srv import SetBool

        if flag:
            self.checker.resume_requested()
        response = self.services["enable"](SetBool.Request(data=flag), SetBool.Response())
        if not flag:
            self.checker.pause_acknowledged()
        assert response.success and response.message, response
        self._observe()

    # ---- clean traffic after the fuzzing
    def clean_event(self) -> Event:
        image = ImageSpec("rgb8", 60, 80, 240, 240 * 60, 0, "scene")
        if not self.use_depth:
            return Event("image", StampSpec("next", 1), image)
        depth = ImageSpec("32FC1", 60, 80, 320, 320 * 60, 0, "depth:valid")
        return Event("frameset", StampSpec("next", 1), image, depth, CLEAN_INFO)

    def restart_clock(self) -> int:
        """Move the harness clock 10 s on (or back to its start when that would leave builtin_interfaces/Time:
        a jump back, a new time line); returns it in tenths of a second."""
        self.clock.tenths += 100
        if self.clock.tenths + 10_000 > StampClock.MAX_TENTHS:
            self.clock.tenths = BASE_DECISECONDS
        return self.clock.tenths

    def wait_tracking(self, target_id: str, timeout: float = 30.0) -> Any:
        """Send clean frames (newer than anything sent) until a live TRACKING result with a mask for
        ``target_id`` arrives on one of them; returns it."""
        self.restart_clock()
        first_clean_seq = self.checker.seq + 1
        deadline = time.monotonic() + timeout
        while True:
            self.apply(self.clean_event())
            try:  # a frame every 0.1 s at most, until the result is there
                return wait_until(lambda: self._clean_tracking(target_id, first_clean_seq), 0.1, "a result")
            except AssertionError:
                assert time.monotonic() < deadline, f"no TRACKING result for {target_id!r}: {self.snapshot()}"

    def _clean_tracking(self, target_id: str, since_seq: int) -> Any:
        self.checker.check_pending()
        for frame, result in reversed(self.checker.tracking.get(target_id, [])):
            if frame.seq >= since_seq and frame.shape == (60, 80) and result.mask.width:
                return result
        return None

    def check_still_tracks(self) -> Any:
        """After the fuzzing: processing enabled, targets reset, a clean instruction on clean frames must give
        TRACKING results again, with the scene's red square in the mask (and a 3D point with depth)."""

        self.enable(True)
        self.reset("")
        self.apply(Event("instruction", target_id="liveness", text="the red square"))
        result = self.wait_tracking("liveness")
        pixels = np.frombuffer(bytes(result.mask.data), np.uint8).reshape(60, -1)
        assert pixels[22, 30] == 255, "the red square is not in the mask"
        if self.use_depth:
            assert wait_until(lambda: self._point_result("liveness"), 20, "a TRACKING result with a 3D point")
        return result

    def _point_result(self, target_id: str) -> bool:
        self.apply(self.clean_event())
        return any(r.point_3d_valid for _, r in self.checker.tracking.get(target_id, [])[-5:])


IN_PROCESS_NODES = itertools.count(1)
CLEAN_INFO = InfoSpec((100.0, 0.0, 40.0, 0.0, 100.0, 30.0, 0.0, 0.0, 1.0), (0.0,) * 12)


# No shrinking: the node keeps its state from case to case, so a shorter replay is not the same experiment; a
# failure reports the events that led to it instead (InProcessNode.history). A fixed seed rather than
# derandomize: derandomize derives the cases from the test function's source, so any edit of this module would
# draw other cases; a seed draws the same ones (for one hypothesis version).
FUZZ_SETTINGS = dict(
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=list(HealthCheck),
    phases=(Phase.explicit, Phase.generate),
    print_blob=False,
)
DEFAULT_SEED = 14  # issue 14


def fuzz_events(
    harness: InProcessNode, strategy: st.SearchStrategy, max_examples: int, seed: int = DEFAULT_SEED
) -> int:
    """Run ``max_examples`` hypothesis cases (each a short list of events) against ``harness``; returns the count.
    The same ``seed`` draws the same cases, as the default suite wants."""
    from hypothesis import seed as hypothesis_seed

    cases = [0]

    @hypothesis_seed(seed)
    @settings(**FUZZ_SETTINGS, max_examples=max_examples)
    @given(st.lists(strategy, min_size=1, max_size=6))
    def run(events):
        cases[0] += 1
        for event in events:
            harness.apply(event)

    run()
    return cases[0]


RAW_IMAGE_EVENTS = st.one_of(
    st.builds(Event, st.just("image"), stamp=st.one_of(STAMPS, RAW_STAMPS), image=image_specs()),
    st.builds(Event, st.just("image"), stamp=STAMPS, image=image_specs(allow_unknown=False, allow_extreme=False)),
)


@st.composite
def camera_frame_events(draw) -> Event:
    """The camera's own stream between the hostile messages: a burst of well-formed 24x32 frames at the next
    stamps (enough in a row for a new frame size to be taken, README), sometimes one again at its stamp."""
    encoding = draw(st.sampled_from(list(COLOUR_BPP)))
    step = 32 * COLOUR_BPP[encoding]
    image = ImageSpec(encoding, 24, 32, step, step * 24, draw(st.sampled_from([0, 1])), "scene")
    return Event(
        "burst", StampSpec("next", 1), image, order=(0,) * draw(st.integers(3, 5)) + (1,) * draw(st.integers(0, 1))
    )


COLOUR_NODE_EVENTS = st.one_of(RAW_IMAGE_EVENTS, RAW_IMAGE_EVENTS, camera_frame_events(), CONTROL_EVENTS)
COMPRESSED_CAMERA_EVENTS = st.builds(
    Event,
    st.just("burst"),
    st.just(StampSpec("next", 1)),
    st.builds(CompressedSpec, st.sampled_from(["jpeg", "png"]), st.sampled_from(["jpeg", "png"]), st.just((24, 32))),
    order=st.sampled_from([(0, 0, 0), (0, 0, 0, 1)]),
)
COMPRESSED_NODE_EVENTS = st.one_of(
    st.builds(Event, st.just("compressed"), stamp=STAMPS, image=compressed_specs()),
    COMPRESSED_CAMERA_EVENTS,
    CONTROL_EVENTS,
)


@st.composite
def camera_set_events(draw) -> Event:
    """The camera's own sets between the hostile ones: 24x32 colour + depth + CameraInfo at the next stamps,
    with depth in metres or millimetres, sometimes without a valid pixel, and sometimes a CameraInfo without
    usable intrinsics (no 3D point may come out of those)."""
    encoding = draw(st.sampled_from(["rgb8", "bgr8", "rgba8"]))
    step = 32 * COLOUR_BPP[encoding]
    image = ImageSpec(encoding, 24, 32, step, step * 24, 0, "scene")
    depth_encoding = draw(st.sampled_from(list(DEPTH_BPP)))
    depth_step = 32 * DEPTH_BPP[depth_encoding]
    fill = "depth:" + draw(st.sampled_from(["valid", "valid", "mixed", "nan", "zero", "huge"]))
    depth = ImageSpec(depth_encoding, 24, 32, depth_step, depth_step * 24, draw(st.sampled_from([0, 1])), fill)
    info = draw(st.one_of(st.just(CLEAN_INFO), st.just(CLEAN_INFO), info_specs()))
    order = (0,) * draw(st.integers(3, 5)) + (1,) * draw(st.integers(0, 1))
    return Event("burst", StampSpec("next", 1), image, depth, info, order=order)


DEPTH_NODE_EVENTS = st.one_of(frameset_events(), frameset_events(), camera_set_events(), CONTROL_EVENTS)
DEPTH_NODE_MIXED_EVENTS = st.one_of(STANDALONE_DEPTH_EVENTS, frameset_events(), CONTROL_EVENTS)


# ----------------------------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def colour_node():
    harness = InProcessNode(use_depth=False)
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def depth_node():
    harness = InProcessNode(use_depth=True)
    yield harness
    harness.close()


def test_fuzz_images_and_controls(colour_node):
    """Raw colour images (encodings, sizes, steps, stamps) mixed with instructions, resets and pauses."""
    h = colour_node
    fuzz_events(h, COLOUR_NODE_EVENTS, max_examples=150)
    values = h.values
    assert rejected(values, "image") > 30 and rejected(values, "instruction") > 10, values
    # The contract judged a good share of the inputs exactly, and results were checked.
    assert h.classified["must_reject"] > 30 and h.classified["clean_fresh"] > 20, h.classified
    assert h.classified["stale"] > 3, h.classified
    h.check_still_tracks()
    assert h.checker.results_checked["results"] > 0


def test_fuzz_compressed_images():
    """Compressed images (formats, payloads that are not PNG/JPEG, truncated files) with controls, on a node
    subscribed to image/compressed."""
    h = InProcessNode(use_depth=False, image_transport="compressed")
    try:
        fuzz_events(h, COMPRESSED_NODE_EVENTS, max_examples=50)
        assert rejected(h.values, "image") > 5 and h.classified["clean_fresh"] > 5, (h.values, h.classified)
    finally:
        h.close()


def test_fuzz_depth_camera_info_sets(depth_node):
    """Colour + depth + CameraInfo sets (NaN/Inf/zero depth, bad focal lengths, size mismatches, stamps out of
    order, duplicated or looping back, any arrival order): every 3D point published is the interior point at the
    depth and intrinsics sent with its frame."""
    h = depth_node
    fuzz_events(h, DEPTH_NODE_EVENTS, max_examples=120)
    for category in ("image", "depth", "camera_info"):
        assert rejected(h.values, category) > 5, h.values
    assert counter(h.values, "time_jumps_back") > 0
    points = [r for results in h.checker.tracking.values() for _, r in results if r.point_3d_valid]
    assert points, "no 3D point was judged while fuzzing"
    h.check_still_tracks()


def test_fuzz_standalone_depth_and_info_then_recovers(depth_node):
    """Depth and CameraInfo without matching colour frames, at any stamp, between sets; afterwards clean sets
    must be synchronised and tracked again, with 3D points."""
    h = depth_node
    fuzz_events(h, DEPTH_NODE_MIXED_EVENTS, max_examples=60)
    h.check_still_tracks()


def test_rejections_are_counted_and_logged_rate_limited():
    """600 bad images of two kinds in a burst: each is counted, and the log has one line per kind (README:
    rejection log lines are rate-limited per kind of problem, 5 s periods). Then one rejection of every other
    category; each is counted and logged (a warning on /rosout)."""
    from sensor_msgs.msg import Image

    h = InProcessNode(use_depth=True, log_level="WARN")
    try:
        started = time.monotonic()
        for _ in range(300):
            h.inputs["image"](Image(height=2, width=2, encoding="yuv999", step=6, data=bytes(12)))
        for _ in range(300):
            h.inputs["image"](Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(10)))
        elapsed = time.monotonic() - started
        h.sent["colour"] += 600
        values = h.snapshot()
        assert rejected(values, "image") == 600 and counter(values, "frames_received") == 600, values
        # A reset of an unknown id is logged after the flood (another category): once its line is in, every
        # earlier line is (one publisher, reliable, in order).
        h.reset("nobody")
        wait_until(lambda: "reset" in h.logged_categories(), 10, "the reset's log line")
        lines = [m.msg for m in h.rosout.messages if m.name == h.logger_name and m.msg.startswith("rejected image")]
        periods = 1 + int(elapsed / 5.0)
        assert 2 <= len(lines) <= 2 * periods, lines
        assert "yuv999" in lines[0] and "step" in lines[1], lines

        image = ImageSpec("rgb8", 24, 32, 96, 96 * 24, 0, "scene")
        small = ImageSpec("rgb8", 12, 16, 48, 48 * 12, 0, "scene")
        depth = ImageSpec("32FC1", 24, 32, 128, 128 * 24, 0, "depth:valid")
        nan_depth = ImageSpec("32FC1", 24, 32, 128, 128 * 24, 0, "depth:nan")
        huge_depth = ImageSpec("32FC1", 5000, 5000, 20000, 0, 0, "depth:valid")
        bad_info = InfoSpec((0.0,) * 9, (0.0,) * 12)
        for event in [
            Event("frameset", StampSpec("next", 1), image, depth, CLEAN_INFO),
            Event("frameset", StampSpec("next", 1), small, ImageSpec(**{**depth.__dict__, "height": 12}), CLEAN_INFO),
            Event("frameset", StampSpec("next", 1), image, nan_depth, CLEAN_INFO),
            Event("frameset", StampSpec("next", 1), image, depth, bad_info),
            Event("depth", StampSpec("next", 1), depth=huge_depth),
            Event("image", StampSpec("next", 1), ImageSpec("rgb8", 5000, 5000, 15000, 0, 0, "zeros")),
            Event("instruction", target_id="a", text=""),
        ]:
            h.apply(event)
        once = ("frame_size", "depth", "camera_info", "depth_too_large", "image_too_large", "instruction")
        assert all(rejected(h.values, c) == 1 for c in once), h.values
        counted = {c for c in categories(h.values) if counter(h.values, f"rejected_{c}")}
        wait_until(lambda: counted <= h.logged_categories(), 10, f"log lines for {sorted(counted)}")
    finally:
        h.close()


def test_bag_loop_restarts_the_time_line_with_depth(depth_node):
    """A bag played in a loop with depth: each jump back (more than 1 s) is counted once and the sets of the new
    loop are synchronised and processed (results with 3D points keep coming); a small step back is rejected on
    each of the three streams."""
    h = depth_node
    h.check_still_tracks()  # a tracked target, so that every processed frame gives a result
    image = ImageSpec("rgb8", 60, 80, 240, 240 * 60, 0, "scene")
    depth = ImageSpec("32FC1", 60, 80, 320, 320 * 60, 0, "depth:valid")
    start_tenths = h.restart_clock()
    for loop in range(3):
        jumps = counter(h.values, "time_jumps_back")
        first_seq = h.checker.seq + 1
        for t in range(10):  # 2.7 s of camera time, then back to the start: a jump of more than 1 s
            h.clock.tenths = start_tenths + 3 * t
            h.apply(Event("frameset", StampSpec("same"), image, depth, CLEAN_INFO))
        assert counter(h.values, "time_jumps_back") == jumps + (1 if loop else 0), f"loop {loop}"

        def loop_processed(first_seq=first_seq):
            h.checker.check_pending()
            return any(f.seq >= first_seq and r.point_3d_valid for f, r in h.checker.tracking.get("liveness", []))

        wait_until(loop_processed, 20, f"a TRACKING result with a 3D point on a frame of loop {loop}")
        before = h.values
        h.apply(Event("frameset", StampSpec("back_small", 2), image, depth, CLEAN_INFO))
        for category in ("image", "depth", "camera_info"):
            assert rejected(h.values, category) == rejected(before, category) + 1, (loop, category, h.values)


def test_digit_first_target_id_gets_a_valid_point_topic(depth_node):
    """Target "1" with depth: its 3D points come out on ~/point/t_1_<hash> (README: ids that are not valid
    topic names are turned into one), and the node keeps its worker threads (it used to lose one)."""
    from geometry_msgs.msg import PointStamped

    h = depth_node
    token = "t_1_" + hashlib.blake2b(b"1", digest_size=4).hexdigest()
    points = h.observer.collect(PointStamped, f"{h.namespace}/reasonvos_perception/point/{token}", 100)
    h.check_still_tracks()
    h.apply(Event("instruction", target_id="1", text="red"))
    h.wait_tracking("1")

    def point_arrived():
        h.apply(h.clean_event())
        return len(points) > 0

    wait_until(point_arrived, 20, f"a PointStamped on point/{token}")
    point = points.messages[0]
    assert point.header.frame_id in h.checker.frames and math.isclose(point.point.z, 1.5, rel_tol=1e-4)
    assert h.snapshot()["engine_threads"] == h.engine_threads


# ----------------------------------------------------------------------------------------------- over the wire
WIRE_SEED = 20_261_202
WIRE_STEPS = 80
WIRE_IDS = ("default", "a", "b")  # fewer than max_targets: every valid instruction is accepted
WIRE_TEXTS = ("red", "the red one", "red square")
WIRE_BAD_INSTRUCTIONS = (("a", ""), ("b", "   "), ("a", "r" * 2001), ("b" * 129, "red"))
WIRE_MALFORMED = (
    ImageSpec("yuv999", 24, 32, 96, 96 * 24, 0, "zeros"),
    ImageSpec("rgb8", 24, 32, 96, 100, 0, "zeros"),  # data shorter than step * height
    ImageSpec("rgb8", 0, 32, 96, 0, 0, "zeros"),  # empty
    ImageSpec("rgb8", 24, 32, 90, 90 * 24, 0, "zeros"),  # step shorter than a row
)
WIRE_OVERSIZED = ImageSpec("rgb8", 5000, 5000, 15000, 0, 0, "zeros")  # declared 25 MP, no data


def wire_plan(rng: random.Random) -> list[tuple[str, Any]]:
    """A fixed sequence of (kind, argument) steps drawn from ``rng``; every input's outcome is fixed by README:
    well-formed sets at ever newer stamps (24x32, so no frame-size change; in colour, so the red target is always
    found), malformed or oversized images, exact duplicates of the previous set's colour stamp, valid and invalid
    instructions on at most three ids (a listed target gets its own instruction again: a repeat), resets of known
    and unknown ids, pauses and resumes."""
    kinds = ["set"] * 8 + ["malformed"] * 2 + ["stale", "oversized", "instruction", "instruction", "bad"]
    kinds += ["text", "reset", "reset", "enable"]
    plan, previous = [], None
    for _ in range(WIRE_STEPS):
        kind = rng.choice(kinds)
        if kind == "stale" and previous != "set":
            kind = "set"
        if kind == "set":
            encoding = rng.choice(["rgb8", "bgr8", "rgba8", "bgra8"])  # in colour: red is always found
            step = 32 * COLOUR_BPP[encoding]
            image = ImageSpec(encoding, 24, 32, step, step * 24, 0, "scene")
            depth_kind = rng.choice(["valid", "valid", "valid", "nan", "mixed"])
            depth_encoding = rng.choice(["32FC1", "16UC1"])
            depth_step = 32 * DEPTH_BPP[depth_encoding]
            depth = ImageSpec(depth_encoding, 24, 32, depth_step, depth_step * 24, 0, f"depth:{depth_kind}")
            info = rng.choice([CLEAN_INFO, CLEAN_INFO, CLEAN_INFO, InfoSpec((0.0,) * 9, (0.0,) * 12)])
            plan.append(("set", (image, depth, info)))
        elif kind == "malformed":
            plan.append(("malformed", rng.choice(WIRE_MALFORMED)))
        elif kind == "oversized":
            plan.append(("oversized", WIRE_OVERSIZED))
        elif kind == "stale":
            plan.append(("stale", None))
        elif kind == "instruction":
            plan.append(("instruction", (rng.choice(WIRE_IDS), rng.choice(WIRE_TEXTS))))
        elif kind == "bad":
            plan.append(("instruction", rng.choice(WIRE_BAD_INSTRUCTIONS)))
        elif kind == "text":
            plan.append(("text", rng.choice(WIRE_TEXTS)))
        elif kind == "reset":
            plan.append(("reset", rng.choice([*WIRE_IDS, "nobody", ""])))
        else:
            plan.append(("enable", rng.random() < 0.5))
        previous = kind
    return plan


def test_fuzz_over_the_wire():
    """A node process fed through real topics (reliable QoS) and service calls with a fixed, seeded sequence of
    good and bad inputs whose outcome README fixes: it stays up; every colour image is received and counted
    exactly (malformed and duplicate-stamp images as rejected_image, oversized ones as rejected_image_too_large);
    instructions and resets are accepted or rejected as documented; no time jump is seen where none was sent;
    everything published obeys the ContractChecker invariants (pause and reset included); afterwards a clean
    target is tracked with 3D points. Synchronised on conditions (diagnostics values, service answers), never on
    sleeps: the same sequence gives the same verdict on a loaded machine."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosutil import ros_node, spawn_python
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String
    from std_srvs.srv import SetBool

    from reasonvos_ros.msg import Instruction, TargetResultArray
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
        "not_present_retry_s": 0.2,
    }
    # A namespace of its own, diagnostics included: nothing else in the ROS domain can reach its topics.
    ns = f"/fuzz_wire_{os.getpid()}"
    args = ["--ros-args", "-r", f"__ns:={ns}", "-r", f"/diagnostics:={ns}/diagnostics"]
    args += [item for key, value in params.items() for item in ("-p", f"{key}:={value}")]
    proc = spawn_python(module="reasonvos_ros.ros.perception_node", args=args, name="perception_fuzz")
    checker = ContractChecker(MAX_TARGETS)
    expected = {"frames": 0, "image": 0, "image_too_large": 0, "instruction": 0, "reset": 0, "repeated": 0}
    targets: dict[str, str] = {}  # target -> its instruction
    try:
        proc.wait_for_output("active: subscribed", timeout=40)
        with ros_node("fuzz_client") as h:
            qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
            pubs = {
                "image": h.node.create_publisher(Image, f"{ns}/image", qos),
                "depth": h.node.create_publisher(Image, f"{ns}/depth", qos),
                "info": h.node.create_publisher(CameraInfo, f"{ns}/camera_info", qos),
                "instruction": h.node.create_publisher(Instruction, f"{ns}/instruction", qos),
                "text": h.node.create_publisher(String, f"{ns}/instruction_text", qos),
            }
            diagnostics = h.collect(DiagnosticArray, f"{ns}/diagnostics", qos)
            outputs = [
                h.node.create_subscription(
                    TargetResultArray, f"{ns}/reasonvos_perception/{topic}", checker.on_results(topic), qos
                )
                for topic in ("results", "results_history")
            ]
            reset = h.node.create_client(ResetTargets, f"{ns}/reasonvos_perception/reset")
            enable = h.node.create_client(SetBool, f"{ns}/reasonvos_perception/enable")
            assert reset.wait_for_service(timeout_sec=20) and enable.wait_for_service(timeout_sec=20)
            for pub in pubs.values():
                h.wait_for_subscribers(pub, timeout=20)
            for sub in [*outputs, diagnostics.subscription]:
                h.wait_for_publishers(sub, timeout=20)

            def values() -> dict[str, str]:
                wait_until(lambda: diagnostics.messages, 10, "diagnostics")
                return {kv.key: kv.value for kv in diagnostics.messages[-1].status[0].values}

            def node_shows(what: str, condition) -> dict[str, str]:
                try:
                    return wait_until(lambda: condition(values()) and values(), 15, what)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; the node reports {values()}") from None

            def instructions_settled(v: dict[str, str]) -> bool:
                return (
                    listed_targets(v) == set(targets)
                    and rejected(v, "instruction") == expected["instruction"]
                    and counter(v, "instructions_repeated") == expected["repeated"]
                )

            tenths = [BASE_DECISECONDS]
            last_set_header = [None]

            def header(stamp_tenths: int) -> Any:
                from builtin_interfaces.msg import Time
                from std_msgs.msg import Header

                frame_id = f"wire_{checker.seq + 1}"
                return Header(
                    stamp=Time(sec=stamp_tenths // 10, nanosec=(stamp_tenths % 10) * 100_000_000), frame_id=frame_id
                )

            def send_colour(spec: ImageSpec, stamp_tenths: int, must_be_rejected: bool) -> Any:
                head = header(stamp_tenths)
                shape = None if must_be_rejected else (spec.height, spec.width)
                checker.frame(head, shape, must_be_rejected=must_be_rejected)
                pubs["image"].publish(build_image(spec, head))
                expected["frames"] += 1
                return head

            def send_set(image: ImageSpec, depth: ImageSpec, info: InfoSpec, stamp_tenths: int) -> None:
                head = send_colour(image, stamp_tenths, False)
                checker.depth_sent(head, depth)
                pubs["depth"].publish(build_image(depth, head))
                checker.info_sent(head, info)
                pubs["info"].publish(build_info(info, head))
                last_set_header[0] = head

            for kind, arg in wire_plan(random.Random(WIRE_SEED)):
                if kind in ("set", "malformed", "oversized"):
                    tenths[0] += 1  # every image newer than all before (malformed ones too: no stamp is ambiguous)
                    if kind == "set":
                        send_set(*arg, tenths[0])
                    else:
                        send_colour(arg, tenths[0], True)
                        expected["image" if kind == "malformed" else "image_too_large"] += 1
                elif kind == "stale":  # the previous set's colour image again, same stamp, new frame_id
                    image = ImageSpec("rgb8", 24, 32, 96, 96 * 24, 0, "scene")
                    send_colour(image, tenths[0], True)
                    expected["image"] += 1
                elif kind in ("instruction", "text"):
                    raw_id, text = arg if kind == "instruction" else ("", arg)
                    tid = normalised_id(raw_id)
                    checker.instruction_sent(raw_id)
                    if instruction_must_be_rejected(raw_id, text):
                        expected["instruction"] += 1
                    elif tid in targets:  # its instruction again: counted as repeated (README), so observable
                        text = targets[tid]
                        expected["repeated"] += 1
                    else:
                        targets[tid] = text
                    if kind == "instruction":
                        pubs["instruction"].publish(Instruction(target_id=raw_id, text=text))
                    else:
                        pubs["text"].publish(String(data=text))
                    # Instructions, images and services are separate channels: a reset must not overtake an
                    # instruction, so each is waited for until the node lists it (or counts its rejection).
                    node_shows(f"targets {sorted(targets)}, counts {expected}", instructions_settled)
                elif kind == "reset":
                    checker.next_seq()
                    response = reset.call(ResetTargets.Request(target_id=arg), timeout_sec=10)
                    assert response is not None and response.message, "reset service did not answer"
                    assert response.success == (arg == "" or arg in targets), (arg, response.message, sorted(targets))
                    if response.success:
                        checker.reset_acknowledged(arg)
                        for tid in list(targets) if arg == "" else [arg]:
                            del targets[tid]
                    else:
                        expected["reset"] += 1
                else:
                    if arg:
                        checker.resume_requested()
                    response = enable.call(SetBool.Request(data=arg), timeout_sec=10)
                    assert response is not None and response.success, "enable service failed"
                    if not arg:
                        checker.pause_acknowledged()
                checker.check_pending()

            def counts_reached(v: dict[str, str]) -> bool:
                return (
                    counter(v, "frames_received") == expected["frames"]
                    and counter(v, "instructions_repeated") == expected["repeated"]
                    and all(rejected(v, c) == expected[c] for c in ("image", "image_too_large", "instruction", "reset"))
                )

            node_shows(f"the counts {expected}", counts_reached)

            # Still alive and tracking, with 3D points: a clean target on clean sets.
            checker.resume_requested()
            assert enable.call(SetBool.Request(data=True), timeout_sec=10).success
            checker.next_seq()
            assert reset.call(ResetTargets.Request(target_id=""), timeout_sec=10).success
            checker.reset_acknowledged("")
            checker.instruction_sent("wire")
            pubs["instruction"].publish(Instruction(target_id="wire", text="red"))
            first_clean = checker.seq + 1
            clean = ImageSpec("rgb8", 24, 32, 96, 96 * 24, 0, "scene")
            clean_depth = ImageSpec("32FC1", 24, 32, 128, 128 * 24, 0, "depth:valid")

            def tracked_with_point() -> bool:
                checker.check_pending()
                return any(f.seq >= first_clean and r.point_3d_valid for f, r in checker.tracking.get("wire", []))

            deadline = time.monotonic() + 30
            while not tracked_with_point():
                assert time.monotonic() < deadline, f"no TRACKING result with a 3D point; {values()}"
                tenths[0] += 1
                send_set(clean, clean_depth, CLEAN_INFO, tenths[0])
                with contextlib.suppress(AssertionError):
                    wait_until(tracked_with_point, 0.1, "a result")

            # Final: the exact counts still hold (clean sets add no rejection: nothing was counted twice), no
            # time jump, no frame-size change, no callback error; depth/camera_info counts within what was sent.
            final = node_shows(f"the final counts {expected}", counts_reached)
            assert counter(final, "time_jumps_back") == 0 and rejected(final, "frame_size") == 0, final
            assert final["callback_errors"] == "0", final
            assert rejected(final, *DEPTH_CATEGORIES) <= len(checker.depth_at)
            assert rejected(final, "camera_info") <= len(checker.info_at)
            statuses = [{kv.key: kv.value for kv in m.status[0].values} for m in list(diagnostics.messages)]
            for earlier, later in itertools.pairwise(statuses):
                assert not counter_regressions(earlier, later), counter_regressions(earlier, later)
            checker.check_pending()
            assert checker.results_checked["results"] > 0
            assert proc.returncode is None
    finally:
        code = proc.stop()
    log = proc.output()
    assert code in (0, -2, 130), f"node exited with {code}:\n{log[-3000:]}"
    assert "Traceback" not in log, log[-5000:]
    for category in ("image", "image_too_large", "instruction", "reset"):
        assert f"rejected {category}" in log, category


def test_engine_warning_after_an_error_keeps_the_workers():
    """At the default log level (INFO): a backend failure (an error event: "red fail" makes the scripted segmenter
    raise) and then a lost track (a warning event: the red object leaves the scene) must leave every engine
    worker alive (diagnostics ``engine_threads``) and the node tracking."""

    h = InProcessNode(use_depth=False, log_level="INFO")
    try:
        red = Event("image", StampSpec("next", 1), ImageSpec("rgb8", 60, 80, 240, 240 * 60, 0, "scene"))
        empty = Event("image", StampSpec("next", 1), ImageSpec("rgb8", 60, 80, 240, 240 * 60, 0, "zeros"))
        h.apply(red)
        h.apply(Event("instruction", target_id="broken", text="red fail"))
        wait_until(lambda: counter(h.snapshot(), "backend_errors") > 0, 20, "the backend failure")
        h.apply(Event("instruction", target_id="a", text="red"))
        h.wait_tracking("a")

        def lost_reported() -> bool:
            h.apply(empty)
            return counter(h.values, "lost_events") > 0

        wait_until(lost_reported, 20, "a lost track")
        values = h.snapshot()
        assert values["engine_threads"] == h.engine_threads, values
    finally:
        h.close()


def test_contract_checker_flags_forged_results():
    """The result invariants are not vacuous: forged result arrays that break one rule each are flagged, a
    consistent one is not (no node: the checker alone, with messages built here)."""
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import Point
    from std_msgs.msg import Header

    from reasonvos_ros.msg import TargetResult, TargetResultArray

    def header(tenths: int, frame_id: str) -> Any:
        return Header(stamp=Time(sec=tenths // 10, nanosec=(tenths % 10) * 100_000_000), frame_id=frame_id)

    def array(head: Any, target: str = "a", status: int = TRACKING, box: tuple | None = None, **fields) -> Any:
        """A 6x8 frame whose mask is the 2x3 block at rows 2-3, columns 4-6 (bbox (4, 2, 3, 2), point (5, 2))."""
        pixels = np.zeros((6, 8), np.uint8)
        pixels[2:4, 4:7] = 255
        result = TargetResult(header=head, target_id=target, status=status, score=0.9)
        result.mask.header, result.mask.encoding = head, "mono8"
        result.mask.height, result.mask.width, result.mask.step = 6, 8, 8
        result.mask.data = pixels.tobytes()
        result.bbox_x, result.bbox_y, result.bbox_width, result.bbox_height = box or (4, 2, 3, 2)
        result.point_x, result.point_y = 5.0, 2.0
        for name, value in fields.items():
            setattr(result, name, value)
        return TargetResultArray(header=head, results=[result])

    def verdict(checker: ContractChecker, topic: str, msg: Any) -> str:
        checker.on_results(topic)(msg)
        try:
            checker.check_pending()
        except AssertionError as exc:
            checker.violations.clear()
            return str(exc)
        return ""

    checker = ContractChecker(max_targets=4)
    checker.instruction_sent("a")
    frames = []
    for n in range(6):
        frames.append(header(100 + n, f"f{n}"))
        checker.frame(frames[-1], (6, 8)).passed_callback = True
    assert verdict(checker, "results", array(frames[0])) == ""  # consistent: nothing to say
    assert "not the header of any image sent" in verdict(checker, "results", array(header(100, "forged")))
    assert "out of send order" in verdict(checker, "results", array(frames[0]))  # the same frame twice
    assert "no instruction ever addressed" in verdict(checker, "results", array(frames[1], target="b"))
    assert "a mask with status" in verdict(checker, "results", array(frames[2], status=0))
    assert "bbox (4, 2, 3, 3)" in verdict(checker, "results_history", array(frames[2], box=(4, 2, 3, 3)))
    assert "not on the mask" in verdict(checker, "results_history", array(frames[2], point_x=1.0))
    no_depth_sent = dict(point_3d_valid=True, point_3d=Point(x=0.1, y=0.1, z=2.0))
    assert "3D point z" in verdict(checker, "results_history", array(frames[2], **no_depth_sent))
    assert "score" in verdict(checker, "results_history", array(frames[2], score=1.5))
    rejected_frame = checker.frame(header(110, "rejected"), (6, 8))
    rejected_frame.passed_callback = False
    assert "rejected" in verdict(checker, "results_history", array(header(110, "rejected")))

    checker.reset_acknowledged("a")
    after_reset = header(111, "after_reset")
    checker.frame(after_reset, (6, 8)).passed_callback = True
    assert "reset was acknowledged" in verdict(checker, "results", array(after_reset))
    assert verdict(checker, "results_history", array(frames[3])) == ""  # sent before the reset: may come out

    checker.instruction_sent("a")
    checker.pause_acknowledged()
    while_paused = header(112, "while_paused")
    checker.frame(while_paused, (6, 8)).passed_callback = True
    assert "paused" in verdict(checker, "results", array(while_paused))
    checker.resume_requested()
    later = header(99, "later")  # older than what came out, with no time jump counted since
    checker.frame(later, (6, 8)).passed_callback = True
    assert "no time jump" in verdict(checker, "results", array(later))
