"""Declared image size of compressed data (PNG, JPEG), read from the header *before* anything is decoded.

A 62-byte PNG can declare 60000x60000 pixels and a 631-byte JPEG 12000x12000: a decoder allocates what the
header declares, so the only safe place to refuse such an image is before decoding. Only PNG and JPEG are
recognised (the formats the node accepts); anything else, or a header cut short, raises
:class:`ImageHeaderError`. ROS-free and dependency-free.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["DeclaredSize", "ImageHeaderError", "declared_size"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers carry the frame size: SOF0-3, 5-7, 9-11, 13-15 (not DHT C4, JPG C8, DAC CC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Markers without a length field: TEM, RST0-7, SOI, EOI.
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8), 0xD8}
# The frame header follows the APPn/DQT/DHT segments (EXIF thumbnails included); it is never this far in.
HEADER_SCAN_BYTES = 1 << 20


class ImageHeaderError(ValueError):
    """The data is not a PNG or JPEG with a readable size; the message says why."""


class DeclaredSize(NamedTuple):
    codec: str  # "png" or "jpeg"
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def declared_size(data: bytes | bytearray | memoryview) -> DeclaredSize:
    """The codec and the width x height the header of ``data`` declares (nothing is decoded)."""
    data = bytes(memoryview(data).cast("B")[:HEADER_SCAN_BYTES])
    if data.startswith(PNG_SIGNATURE):
        return _png_size(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    raise ImageHeaderError(f"data is neither PNG nor JPEG (starts with {data[:8].hex() or 'nothing'})")


def _png_size(data: bytes) -> DeclaredSize:
    # The first chunk must be IHDR: length (4), type (4), width (4, big-endian), height (4).
    if len(data) < 24:
        raise ImageHeaderError(f"PNG header is truncated ({len(data)} bytes)")
    if data[12:16] != b"IHDR":
        raise ImageHeaderError("PNG does not start with an IHDR chunk")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if width == 0 or height == 0:
        raise ImageHeaderError(f"PNG declares zero size ({width}x{height})")
    return DeclaredSize("png", width, height)


def _jpeg_size(data: bytes) -> DeclaredSize:
    position = 2
    while True:
        # Markers are 0xFF + code; any number of 0xFF fill bytes may precede the code.
        while position < len(data) and data[position] != 0xFF:
            position += 1  # tolerate garbage between segments like decoders do
        while position < len(data) and data[position] == 0xFF:
            position += 1
        if position >= len(data):
            raise ImageHeaderError("JPEG ends before its frame header (truncated)")
        marker = data[position]
        position += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # EOI or start of scan before any frame header
            raise ImageHeaderError("JPEG has no frame header before its image data")
        if position + 2 > len(data):
            raise ImageHeaderError("JPEG segment length is truncated")
        length = int.from_bytes(data[position : position + 2], "big")
        if length < 2:
            raise ImageHeaderError(f"JPEG segment 0x{marker:02X} has an invalid length {length}")
        if marker in _JPEG_SOF:
            if position + 7 > len(data):
                raise ImageHeaderError("JPEG frame header is truncated")
            height = int.from_bytes(data[position + 3 : position + 5], "big")
            width = int.from_bytes(data[position + 5 : position + 7], "big")
            if width == 0 or height == 0:
                # height 0 means "defined later by a DNL marker"; nobody sends that, and it hides the size
                raise ImageHeaderError(f"JPEG declares zero size ({width}x{height})")
            return DeclaredSize("jpeg", width, height)
        position += length
