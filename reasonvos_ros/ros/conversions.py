"""sensor_msgs image <-> numpy conversions (this project's replacement for cv_bridge, absent on pip installs).

The node always uses these, also where cv_bridge is importable: results agree with cv_bridge's
``imgmsg_to_cv2`` / ``cv2_to_imgmsg`` (``test/test_upstream_oracles.py`` checks it) except where cv_bridge is
wrong: a ``step`` that is not a whole number of pixels (cv_bridge shears the image; here the row padding is
skipped) and big-endian 16/32-bit data (cv_bridge fails under numpy 2; here it is swapped to host order).

Readers (``image_msg_to_numpy``, ``compressed_msg_to_numpy``, ``image_msg_to_rgb``, ``depth_msg_to_metres``,
``image_msg_to_mask``) are duck-typed: they accept rclpy messages (``data`` is an ``array.array``), messages
deserialised by ``rosbags`` (``data`` is a numpy array) or any object with the same fields. Builders return rclpy
messages (``sensor_msgs`` is imported lazily, only when a message is built); ``encode_image_fields`` gives the
raw field values for callers that build messages of another type system (the bag tools use rosbags' classes).

Supported raw encodings: rgb8, bgr8, rgba8, bgra8, mono8, mono16, 16UC1, 32FC1, honouring ``step`` (row padding)
and ``is_bigendian``. Compressed images: jpeg and png through OpenCV (16-bit PNG round-trips losslessly); the
``compressedDepth`` format of compressed_depth_image_transport is rejected with an explicit error.

Every malformed input raises :class:`ConversionError`, a ``ValueError`` naming what is wrong.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ENCODINGS",
    "ConversionError",
    "EncodedImage",
    "compressed_msg_to_numpy",
    "depth_msg_to_metres",
    "encode_compressed",
    "encode_image_fields",
    "image_msg_to_mask",
    "image_msg_to_numpy",
    "image_msg_to_rgb",
    "mask_to_image_msg",
    "nanoseconds_to_stamp",
    "numpy_to_compressed_msg",
    "numpy_to_image_msg",
    "stamp_to_nanoseconds",
    "stamp_to_seconds",
]


class ConversionError(ValueError):
    """An image message or array cannot be converted; the message says exactly why."""


@dataclass(frozen=True)
class _EncodingInfo:
    dtype: np.dtype  # element type in native byte order
    channels: int

    @property
    def bytes_per_pixel(self) -> int:
        return self.dtype.itemsize * self.channels


ENCODINGS: dict[str, _EncodingInfo] = {
    "rgb8": _EncodingInfo(np.dtype(np.uint8), 3),
    "bgr8": _EncodingInfo(np.dtype(np.uint8), 3),
    "rgba8": _EncodingInfo(np.dtype(np.uint8), 4),
    "bgra8": _EncodingInfo(np.dtype(np.uint8), 4),
    "mono8": _EncodingInfo(np.dtype(np.uint8), 1),
    "mono16": _EncodingInfo(np.dtype(np.uint16), 1),
    "16UC1": _EncodingInfo(np.dtype(np.uint16), 1),
    "32FC1": _EncodingInfo(np.dtype(np.float32), 1),
}

_COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
_DEPTH_ENCODINGS = ("32FC1", "16UC1", "mono16")
_HOST_IS_BIGENDIAN = sys.byteorder == "big"


def _encoding_info(encoding: str) -> _EncodingInfo:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ConversionError(f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}") from None


def _as_byte_array(data: Any, what: str) -> np.ndarray:
    """A 1-D uint8 view of a message's ``data`` field (array.array, bytes, numpy array or list)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ConversionError(f"{what}.data must hold uint8 values, got a numpy array of {data.dtype}")
        return data.reshape(-1)
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    try:
        view = memoryview(data)
    except TypeError:
        raise ConversionError(f"{what}.data has unsupported type {type(data).__name__}") from None
    if view.itemsize != 1:
        raise ConversionError(f"{what}.data must be a byte buffer, got items of {view.itemsize} bytes")
    return np.frombuffer(view.cast("B"), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------- time stamps


def stamp_to_nanoseconds(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (``sec``, ``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def stamp_to_seconds(stamp: Any) -> float:
    """``builtin_interfaces/Time`` -> float seconds."""
    return int(stamp.sec) + int(stamp.nanosec) * 1e-9


def nanoseconds_to_stamp(nanoseconds: int, stamp_type: Any = None) -> Any:
    """Integer nanoseconds -> a ``builtin_interfaces/Time`` (rclpy's unless ``stamp_type`` is given)."""
    if stamp_type is None:
        from builtin_interfaces.msg import Time as stamp_type
    sec, nanosec = divmod(int(nanoseconds), 1_000_000_000)
    return stamp_type(sec=sec, nanosec=nanosec)


# ------------------------------------------------------------------------------------------------ raw images


def image_msg_to_numpy(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` into a new numpy array in native byte order.

    Returns ``HxW`` for single-channel encodings and ``HxWxC`` otherwise, with the channel order of the encoding
    (bgr8 stays BGR; use :func:`image_msg_to_rgb` for RGB). The result owns its memory (a copy).
    """
    encoding = str(msg.encoding)
    info = _encoding_info(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"image has zero size ({width}x{height}, encoding {encoding})")
    row_bytes = width * info.bytes_per_pixel
    if step < row_bytes:
        raise ConversionError(
            f"image step {step} is smaller than width*bytes_per_pixel = {width}*{info.bytes_per_pixel} = {row_bytes}"
            f" (encoding {encoding})"
        )
    raw = _as_byte_array(msg.data, "Image")
    if raw.size != step * height:
        raise ConversionError(
            f"image data has {raw.size} bytes but step*height = {step}*{height} = {step * height} (encoding {encoding})"
        )
    rows = raw.reshape(height, step)[:, :row_bytes]
    dtype = info.dtype.newbyteorder(">" if msg.is_bigendian else "<") if info.dtype.itemsize > 1 else info.dtype
    # ascontiguousarray copies only padded rows; .astype below always copies into native order.
    pixels = np.ascontiguousarray(rows).view(dtype).astype(info.dtype, copy=True)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    return pixels.reshape(shape)


@dataclass(frozen=True)
class EncodedImage:
    """The field values of a ``sensor_msgs/Image`` (without header), ready to assign."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


def encode_image_fields(array: np.ndarray, encoding: str) -> EncodedImage:
    """Validate ``array`` against ``encoding`` and serialise its pixels tightly packed in host byte order."""
    info = _encoding_info(encoding)
    if not isinstance(array, np.ndarray):
        raise ConversionError(f"expected a numpy array, got {type(array).__name__}")
    expected_ndim = 2 if info.channels == 1 else 3
    if info.channels == 1 and array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != expected_ndim or (info.channels > 1 and array.shape[2] != info.channels):
        wanted = "HxW" if info.channels == 1 else f"HxWx{info.channels}"
        raise ConversionError(f"encoding {encoding} needs an {wanted} array, got shape {array.shape}")
    if array.dtype != info.dtype:
        raise ConversionError(f"encoding {encoding} needs dtype {info.dtype}, got {array.dtype}")
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ConversionError(f"cannot encode an image of zero size (shape {array.shape})")
    return EncodedImage(
        height=int(height),
        width=int(width),
        encoding=encoding,
        is_bigendian=int(_HOST_IS_BIGENDIAN),
        step=int(width * info.bytes_per_pixel),
        data=np.ascontiguousarray(array).tobytes(),
    )


def numpy_to_image_msg(array: np.ndarray, encoding: str, header: Any = None) -> Any:
    """Build an rclpy ``sensor_msgs/Image`` from an array (``HxW`` or ``HxWxC`` matching ``encoding``).

    ``data`` is assigned as ``bytes`` (assigning a numpy array to an rclpy message costs ~75 ms per VGA frame).
    """
    from sensor_msgs.msg import Image

    fields = encode_image_fields(array, encoding)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding = fields.height, fields.width, fields.encoding
    msg.is_bigendian, msg.step, msg.data = fields.is_bigendian, fields.step, fields.data
    return msg


# ---------------------------------------------------------------------------------------- compressed images


def _compressed_codec(fmt: str) -> str:
    """The codec named by a CompressedImage ``format`` ("jpeg", "png", "rgb8; jpeg compressed bgr8", ...)."""
    text = fmt.lower()
    if "compresseddepth" in text:
        raise ConversionError(
            f"CompressedImage format {fmt!r} (compressed_depth_image_transport) is not supported; "
            "subscribe to the raw depth topic instead"
        )
    if "png" in text:
        return "png"
    if "jpeg" in text or "jpg" in text:
        return "jpeg"
    if text.strip() == "":
        return ""  # unknown: let OpenCV sniff the magic bytes
    raise ConversionError(f"unsupported CompressedImage format {fmt!r}; supported: jpeg, png")


def compressed_msg_to_numpy(msg: Any) -> tuple[np.ndarray, str]:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg/png) into ``(array, encoding)``.

    Colour images come back as ``rgb8`` (or ``rgba8`` for PNG with alpha), 8-bit gray as ``mono8``, 16-bit
    gray PNG as ``16UC1`` (``mono16`` when the format string names mono16).
    """
    import cv2

    fmt = str(msg.format)
    _compressed_codec(fmt)
    raw = _as_byte_array(msg.data, "CompressedImage")
    if raw.size == 0:
        raise ConversionError(f"CompressedImage (format {fmt!r}) has no data")
    decoded = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ConversionError(f"OpenCV could not decode the CompressedImage data ({raw.size} bytes, format {fmt!r})")
    if decoded.dtype == np.uint16 and decoded.ndim == 2:
        return decoded, ("mono16" if "mono16" in fmt.lower() else "16UC1")
    if decoded.dtype != np.uint8:
        raise ConversionError(f"decoded CompressedImage has unsupported pixel type {decoded.dtype}/{decoded.shape}")
    if decoded.ndim == 2:
        return decoded, "mono8"
    if decoded.shape[2] == 3:
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), "rgb8"
    if decoded.shape[2] == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA), "rgba8"
    raise ConversionError(f"decoded CompressedImage has unsupported shape {decoded.shape}")


def encode_compressed(array: np.ndarray, encoding: str, codec: str = "jpeg", jpeg_quality: int = 90) -> bytes:
    """Compress an array of ``encoding`` with OpenCV. jpeg: 8-bit colour/gray only; png: also 16-bit gray."""
    import cv2

    info = _encoding_info(encoding)
    fields = encode_image_fields(array, encoding)  # validates shape/dtype
    del fields
    if codec not in ("jpeg", "png"):
        raise ConversionError(f"unsupported compression {codec!r}; use 'jpeg' or 'png'")
    if info.dtype == np.float32:
        raise ConversionError(f"cannot compress {encoding} images (floating point) with {codec}")
    if codec == "jpeg" and info.dtype != np.uint8:
        raise ConversionError(f"jpeg cannot store {encoding} (16-bit) losslessly; use png")
    if encoding in ("rgb8", "rgba8"):
        to_bgr = cv2.COLOR_RGB2BGR if encoding == "rgb8" else cv2.COLOR_RGBA2BGRA
        array = cv2.cvtColor(array, to_bgr)
    if codec == "jpeg" and array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]  # jpeg has no alpha channel
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if codec == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buffer = cv2.imencode(".jpg" if codec == "jpeg" else ".png", np.ascontiguousarray(array), params)
    if not ok:
        raise ConversionError(f"OpenCV failed to encode a {array.shape} {array.dtype} image as {codec}")
    return buffer.tobytes()


def numpy_to_compressed_msg(
    array: np.ndarray, encoding: str, codec: str = "jpeg", header: Any = None, jpeg_quality: int = 90
) -> Any:
    """Build an rclpy ``sensor_msgs/CompressedImage``; ``format`` follows image_transport
    (e.g. ``"rgb8; jpeg compressed bgr8"``, ``"16UC1; png compressed 16UC1"``)."""
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = compressed_format_string(encoding, codec)
    msg.data = encode_compressed(array, encoding, codec, jpeg_quality)
    return msg


def compressed_format_string(encoding: str, codec: str) -> str:
    """image_transport's ``format`` text for an image of ``encoding`` compressed with ``codec``."""
    info = _encoding_info(encoding)
    if info.channels == 1:
        stored = encoding
    elif codec == "jpeg":
        stored = "bgr8"
    else:
        stored = "bgra8" if info.channels == 4 else "bgr8"
    return f"{encoding}; {codec} compressed {stored}"


# ------------------------------------------------------------------------------------------ task-level helpers


def _is_compressed(msg: Any) -> bool:
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def _raw_image_of_kind(msg: Any, allowed: tuple[str, ...], kind: str, expected: str) -> tuple[np.ndarray, str]:
    """A raw Image message's pixels and encoding, rejecting (by name) encodings that are not in ``allowed``."""
    encoding = str(msg.encoding)
    _encoding_info(encoding)
    if encoding not in allowed:
        raise ConversionError(f"encoding {encoding!r} is not {kind}; expected {expected}")
    return image_msg_to_numpy(msg), encoding


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """Any colour camera message (Image or CompressedImage) -> ``HxWx3 uint8`` RGB.

    BGR(A) is reordered, alpha dropped, mono8 replicated to three channels, mono16 scaled to 8 bits as cv_bridge
    does (``round(v * 255 / 65535)``).
    Depth encodings (16UC1, 32FC1) are rejected: they are not colour images.
    """
    if _is_compressed(msg):
        array, encoding = compressed_msg_to_numpy(msg)
    else:
        array, encoding = _raw_image_of_kind(
            msg, _COLOUR_ENCODINGS, "a colour/gray image", f"one of {', '.join(_COLOUR_ENCODINGS)}"
        )
    if encoding == "rgb8":
        return array
    if encoding == "bgr8":
        return np.ascontiguousarray(array[:, :, ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(array[:, :, :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(array[:, :, 2::-1])
    if encoding == "mono8":
        return np.repeat(array[:, :, None], 3, axis=2)
    if encoding == "mono16":
        # As cv_bridge (OpenCV convertTo with scale 255/65535, rounded): round(v / 257) = (2v + 257) // 514.
        gray = ((array.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    raise ConversionError(f"image of encoding {encoding!r} is not a colour image (16-bit depth PNG?)")


def depth_msg_to_metres(msg: Any) -> np.ndarray:
    """A depth message (REP 118) -> ``HxW float32`` metres with NaN marking invalid pixels.

    32FC1 is metres; 16UC1 (and mono16, as some drivers label it) is millimetres. Zero, negative, NaN and Inf
    depths are invalid and become NaN. A 16-bit PNG CompressedImage is accepted as millimetres.
    """
    if _is_compressed(msg):
        array, encoding = compressed_msg_to_numpy(msg)
        if encoding not in ("16UC1", "mono16"):
            raise ConversionError(
                f"compressed depth must be a 16-bit PNG (millimetres); got an image decoded as {encoding}"
            )
    else:
        array, encoding = _raw_image_of_kind(
            msg, _DEPTH_ENCODINGS, "a depth image", "32FC1 (metres) or 16UC1 (millimetres)"
        )
    if encoding == "32FC1":
        metres = array  # already a private float32 copy
    else:
        metres = array.astype(np.float32) * np.float32(0.001)
    with np.errstate(invalid="ignore"):
        metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres


def mask_to_image_msg(mask: np.ndarray, header: Any = None) -> Any:
    """A boolean ``HxW`` mask -> rclpy ``sensor_msgs/Image`` mono8 with values 0/255 and the given header."""
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        kind = f"{mask.dtype} array" if isinstance(mask, np.ndarray) else type(mask).__name__
        raise ConversionError(f"mask must be a numpy bool array (e.g. probabilities > 0.5), got {kind}")
    if mask.ndim != 2:
        raise ConversionError(f"mask must be HxW, got shape {mask.shape}")
    return numpy_to_image_msg(mask.view(np.uint8) * np.uint8(255), "mono8", header)


def image_msg_to_mask(msg: Any) -> np.ndarray:
    """A mono8 mask message -> ``HxW bool`` (non-zero is True). An empty (0x0) message gives a 0x0 mask."""
    if int(msg.width) == 0 and int(msg.height) == 0:
        return np.zeros((0, 0), dtype=bool)
    if str(msg.encoding) != "mono8":
        raise ConversionError(f"mask images must be mono8, got {msg.encoding!r}")
    return image_msg_to_numpy(msg) != 0
