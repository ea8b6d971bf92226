"""Image <-> numpy conversions: every encoding, padded rows, big-endian data, compression, malformed messages."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="needs the ROS 2 sensor_msgs Python package")

from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from reasonvos_ros.ros import conversions as conv
from reasonvos_ros.ros.conversions import ConversionError

RNG = np.random.default_rng(7)
SHAPES = {1: (5, 7), 3: (5, 7, 3), 4: (5, 7, 4)}


def random_array(encoding: str) -> np.ndarray:
    info = conv.ENCODINGS[encoding]
    shape = SHAPES[info.channels]
    if info.dtype == np.float32:
        return RNG.uniform(0.1, 10.0, size=shape).astype(np.float32)
    return RNG.integers(0, np.iinfo(info.dtype).max, size=shape, dtype=info.dtype, endpoint=True)


def raw_message(array: np.ndarray, encoding: str, *, pad: int = 0, bigendian: bool = False) -> SimpleNamespace:
    """A hand-built Image (independent of the code under test) with ``pad`` garbage bytes after every row."""
    order = ">" if bigendian else "<"
    typed = array.astype(array.dtype.newbyteorder(order))
    height, width = array.shape[:2]
    rows = np.frombuffer(typed.tobytes(), dtype=np.uint8).reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, pad), 0xAB, dtype=np.uint8)], axis=1)
    return SimpleNamespace(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=padded.shape[1],
        data=padded.tobytes(),
    )


@pytest.mark.parametrize("encoding", list(conv.ENCODINGS))
def test_round_trip_every_encoding(encoding):
    array = random_array(encoding)
    header = Header(frame_id="cam")
    msg = conv.numpy_to_image_msg(array, encoding, header)
    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.encoding) == (5, 7, encoding)
    assert msg.step == 7 * conv.ENCODINGS[encoding].bytes_per_pixel
    assert msg.is_bigendian == 0
    assert msg.header.frame_id == "cam"
    decoded = conv.image_msg_to_numpy(msg)
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("encoding", list(conv.ENCODINGS))
@pytest.mark.parametrize("bigendian", [False, True])
def test_padded_step_and_byte_order(encoding, bigendian):
    array = random_array(encoding)
    msg = raw_message(array, encoding, pad=5, bigendian=bigendian)
    decoded = conv.image_msg_to_numpy(msg)
    assert decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, array)


def test_big_endian_values_are_swapped():
    msg = SimpleNamespace(height=1, width=2, encoding="16UC1", is_bigendian=1, step=4, data=bytes([0x01, 0x02, 0, 7]))
    np.testing.assert_array_equal(conv.image_msg_to_numpy(msg), [[0x0102, 7]])
    msg.is_bigendian = 0
    np.testing.assert_array_equal(conv.image_msg_to_numpy(msg), [[0x0201, 0x0700]])


def test_decoded_array_does_not_alias_message_buffer():
    array = random_array("mono8")
    msg = conv.numpy_to_image_msg(array, "mono8")
    decoded = conv.image_msg_to_numpy(msg)
    decoded[:] = 0
    np.testing.assert_array_equal(conv.image_msg_to_numpy(msg), array)


def test_rosbags_deserialised_message_decodes():
    from rclpy.serialization import serialize_message
    from rosbags.typesys import Stores, get_typestore

    array = random_array("32FC1")
    raw = serialize_message(conv.numpy_to_image_msg(array, "32FC1"))
    msg = get_typestore(Stores.ROS2_JAZZY).deserialize_cdr(raw, "sensor_msgs/msg/Image")
    assert isinstance(msg.data, np.ndarray)
    np.testing.assert_array_equal(conv.image_msg_to_numpy(msg), array)


@pytest.mark.parametrize(
    ("encoding", "convert"),
    [
        ("rgb8", lambda a: a),
        ("bgr8", lambda a: a[:, :, ::-1]),
        ("rgba8", lambda a: a[:, :, :3]),
        ("bgra8", lambda a: a[:, :, [2, 1, 0]]),
        ("mono8", lambda a: np.stack([a] * 3, axis=2)),
        # cv_bridge scaling: round(v * 255 / 65535), computed here in floating point
        ("mono16", lambda a: np.stack([np.rint(a / 257.0).astype(np.uint8)] * 3, axis=2)),
    ],
)
def test_image_msg_to_rgb(encoding, convert):
    array = random_array(encoding)
    rgb = conv.image_msg_to_rgb(raw_message(array, encoding, pad=3))
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, convert(array))


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_image_msg_to_rgb_rejects_depth(encoding):
    with pytest.raises(ConversionError, match="not a colour"):
        conv.image_msg_to_rgb(conv.numpy_to_image_msg(random_array(encoding), encoding))


def test_depth_32fc1_invalid_values_become_nan():
    depth = np.array([[1.5, 0.0, np.nan], [np.inf, -1.0, 2.25]], dtype=np.float32)
    metres = conv.depth_msg_to_metres(conv.numpy_to_image_msg(depth, "32FC1"))
    assert metres.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(metres), [[False, True, True], [True, True, False]])
    assert metres[0, 0] == 1.5 and metres[1, 2] == 2.25


@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
def test_depth_millimetres_to_metres(encoding):
    depth = np.array([[0, 1000], [1234, 65535]], dtype=np.uint16)
    metres = conv.depth_msg_to_metres(raw_message(depth, encoding, bigendian=True, pad=2))
    assert np.isnan(metres[0, 0])
    np.testing.assert_allclose(metres[[0, 1, 1], [1, 0, 1]], [1.0, 1.234, 65.535], rtol=1e-6)


def test_depth_rejects_colour():
    with pytest.raises(ConversionError, match="not a depth image"):
        conv.depth_msg_to_metres(conv.numpy_to_image_msg(random_array("rgb8"), "rgb8"))


def test_mask_to_image_msg():
    mask = np.zeros((4, 6), dtype=bool)
    mask[1:3, 2:5] = True
    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = conv.mask_to_image_msg(mask, header)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("mono8", 4, 6, 6)
    assert msg.header.frame_id == "camera_color_optical_frame"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)
    values = conv.image_msg_to_numpy(msg)
    assert set(np.unique(values)) == {0, 255}
    np.testing.assert_array_equal(values == 255, mask)
    np.testing.assert_array_equal(conv.image_msg_to_mask(msg), mask)
    # a non-contiguous mask view
    np.testing.assert_array_equal(conv.image_msg_to_mask(conv.mask_to_image_msg(mask[:, ::2])), mask[:, ::2])


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((4, 6), dtype=np.uint8), "bool"),
        (np.zeros((4, 6), dtype=np.float32), "bool"),
        (np.zeros((4, 6, 1), dtype=bool), "HxW"),
        ([[True]], "bool"),
    ],
)
def test_mask_to_image_msg_rejects(bad, match):
    with pytest.raises(ConversionError, match=match):
        conv.mask_to_image_msg(bad)


def test_empty_mask_message_gives_empty_mask():
    assert conv.image_msg_to_mask(Image()).shape == (0, 0)


# --------------------------------------------------------------------------------------------- compressed


def smooth_rgb(height=48, width=64) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=2).astype(np.uint8)


def test_jpeg_rgb_round_trip_is_close():
    rgb = smooth_rgb()
    msg = conv.numpy_to_compressed_msg(rgb, "rgb8", "jpeg", jpeg_quality=95)
    assert isinstance(msg, CompressedImage)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    decoded, encoding = conv.compressed_msg_to_numpy(msg)
    assert encoding == "rgb8"
    assert np.abs(decoded.astype(int) - rgb).mean() < 2.0
    # channel order kept: the red channel follows x
    assert decoded[:, -1, 0].mean() > decoded[:, 0, 0].mean() + 100
    np.testing.assert_array_equal(conv.image_msg_to_rgb(msg), decoded)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "mono8", "16UC1", "mono16"])
def test_png_round_trip_is_lossless(encoding):
    array = random_array(encoding)
    msg = conv.numpy_to_compressed_msg(array, encoding, "png")
    decoded, decoded_encoding = conv.compressed_msg_to_numpy(msg)
    if encoding == "bgr8":
        decoded = decoded[:, :, ::-1]
    assert decoded_encoding == {"bgr8": "rgb8"}.get(encoding, encoding)
    np.testing.assert_array_equal(decoded, array)


def test_compressed_16bit_png_depth_and_format_sniffing():
    depth_mm = np.array([[0, 500], [2000, 65535]], dtype=np.uint16)
    msg = CompressedImage(format="png", data=conv.encode_compressed(depth_mm, "16UC1", "png"))
    metres = conv.depth_msg_to_metres(msg)
    assert np.isnan(metres[0, 0])
    np.testing.assert_allclose(metres.ravel()[1:], [0.5, 2.0, 65.535], rtol=1e-6)
    msg.format = ""  # unknown format: OpenCV recognises the PNG signature
    assert conv.compressed_msg_to_numpy(msg)[1] == "16UC1"
    with pytest.raises(ConversionError, match="not a colour image"):
        conv.image_msg_to_rgb(msg)


@pytest.mark.parametrize(
    ("fmt", "data", "match"),
    [
        ("16UC1; compressedDepth png", b"\x00" * 20, "compressedDepth"),
        ("tiff", b"\x00" * 20, "unsupported CompressedImage format"),
        ("jpeg", b"", "no data"),
        ("jpeg", b"definitely not a jpeg", "could not decode"),
    ],
)
def test_malformed_compressed(fmt, data, match):
    with pytest.raises(ConversionError, match=match):
        conv.compressed_msg_to_numpy(CompressedImage(format=fmt, data=data))


@pytest.mark.parametrize(
    ("array", "encoding", "codec", "match"),
    [
        (np.zeros((4, 4), np.uint16), "16UC1", "jpeg", "losslessly"),
        (np.zeros((4, 4), np.float32), "32FC1", "png", "floating point"),
        (np.zeros((4, 4, 3), np.uint8), "rgb8", "webp", "unsupported compression"),
    ],
)
def test_encode_compressed_rejects(array, encoding, codec, match):
    with pytest.raises(ConversionError, match=match):
        conv.encode_compressed(array, encoding, codec)


# ----------------------------------------------------------------------------------------------- malformed


def good_fields(**overrides):
    fields = dict(height=2, width=3, encoding="rgb8", is_bigendian=0, step=9, data=bytes(18))
    fields.update(overrides)
    return SimpleNamespace(**fields)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"encoding": "yuv422"}, r"unsupported image encoding 'yuv422'"),
        ({"encoding": ""}, r"unsupported image encoding ''"),
        ({"step": 8}, r"step 8 is smaller than width\*bytes_per_pixel = 3\*3 = 9"),
        ({"data": bytes(17)}, r"17 bytes but step\*height = 9\*2 = 18"),
        ({"data": bytes(19)}, r"19 bytes but step\*height = 9\*2 = 18"),
        ({"step": 12, "data": bytes(18)}, r"18 bytes but step\*height = 12\*2 = 24"),
        ({"width": 0, "step": 0, "data": b""}, "zero size"),
        ({"height": 0, "data": b""}, "zero size"),
        ({"data": np.zeros(18, dtype=np.float32)}, "uint8"),
        ({"data": 12345}, "unsupported type int"),
    ],
)
def test_malformed_image(overrides, match):
    with pytest.raises(ConversionError, match=match):
        conv.image_msg_to_numpy(good_fields(**overrides))


def test_conversion_error_is_value_error():
    assert issubclass(ConversionError, ValueError)
    with pytest.raises(ValueError):
        conv.image_msg_to_rgb(good_fields(encoding="weird"))


@pytest.mark.parametrize(
    ("array", "encoding", "match"),
    [
        (np.zeros((4, 4), np.uint8), "rgb8", r"HxWx3 array, got shape \(4, 4\)"),
        (np.zeros((4, 4, 4), np.uint8), "rgb8", r"HxWx3"),
        (np.zeros((4, 4, 3), np.float64), "rgb8", "dtype uint8, got float64"),
        (np.zeros((4, 4), np.uint8), "16UC1", "dtype uint16, got uint8"),
        (np.zeros((0, 4), np.uint8), "mono8", "zero size"),
        (np.zeros((4, 4), np.uint8), "8UC5", "unsupported image encoding"),
        ([[0]], "mono8", "numpy array"),
    ],
)
def test_builder_rejects(array, encoding, match):
    with pytest.raises(ConversionError, match=match):
        conv.numpy_to_image_msg(array, encoding)


def test_single_channel_accepts_trailing_axis():
    array = random_array("mono8")[:, :, None]
    np.testing.assert_array_equal(conv.image_msg_to_numpy(conv.numpy_to_image_msg(array, "mono8")), array[:, :, 0])


def test_stamp_helpers():
    stamp = conv.nanoseconds_to_stamp(1_700_000_000_123_456_789)
    assert (stamp.sec, stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert conv.stamp_to_nanoseconds(stamp) == 1_700_000_000_123_456_789
    assert conv.stamp_to_seconds(stamp) == pytest.approx(1_700_000_000.123456789, abs=1e-6)
