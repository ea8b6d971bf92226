"""Debug overlay for humans: target masks, boxes, ids, status, instructions and interior points on an RGB image.

Used by the perception node's debug image topic and by ``reasonvos bag-render``. Drawing uses OpenCV's Hershey
fonts, which only have ASCII glyphs: other characters are shown as ``?``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["PALETTE", "OverlayTarget", "assign_colours", "draw_overlay", "panel_lines"]

# Mutually distinct RGB colours (no two shades of one hue), visible on dark and bright scenes.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),  # red
    (60, 180, 75),  # green
    (0, 130, 200),  # blue
    (255, 225, 25),  # yellow
    (245, 130, 48),  # orange
    (70, 240, 240),  # cyan
    (240, 50, 230),  # magenta
    (140, 70, 255),  # violet
)


@dataclass
class OverlayTarget:
    """What to draw for one target. Every field except ``target_id`` is optional."""

    target_id: str
    mask: np.ndarray | None = None  # HxW bool, the image's size
    bbox: tuple[int, int, int, int] | None = None  # x, y, width, height in pixels
    point: tuple[float, float] | None = None  # interior point (x right, y down)
    status: str = ""  # e.g. "TRACKING", "LOST"
    score: float | None = None
    instruction: str = ""
    target_phrase: str = ""  # what the segmenter understood the instruction's target to be
    understanding_confidence: float | None = None


def assign_colours(target_ids: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """A distinct palette colour per id, stable across frames: the id's hash picks the preferred slot and a
    collision within ``target_ids`` moves to the next free slot (ids are processed in sorted order)."""
    colours: dict[str, tuple[int, int, int]] = {}
    used: set[int] = set()
    for target_id in sorted(set(target_ids)):
        slot = zlib.crc32(target_id.encode("utf-8")) % len(PALETTE)
        if len(used) < len(PALETTE):
            while slot in used:
                slot = (slot + 1) % len(PALETTE)
        used.add(slot)
        colours[target_id] = PALETTE[slot]
    return colours


def _ascii(text: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)


def _fit(text: str, font_scale: float, thickness: int, max_width: int) -> str:
    """Shorten ``text`` with '...' until it fits ``max_width`` pixels."""
    if cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)[0][0] <= max_width:
        return text
    low, high = 0, len(text)
    while low < high:  # longest prefix that fits, by bisection
        middle = (low + high + 1) // 2
        width = cv2.getTextSize(text[:middle] + "...", cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)[0][0]
        if width <= max_width:
            low = middle
        else:
            high = middle - 1
    return text[:low] + "..."


def _put_label(
    canvas: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int], font_scale: float
) -> None:
    """Text with a filled background box; ``origin`` is the box's bottom-left corner, kept inside the image."""
    thickness = max(1, round(font_scale * 2))
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    x = int(min(max(origin[0], 0), max(canvas.shape[1] - width - 4, 0)))
    y = int(min(max(origin[1], height + baseline + 4), canvas.shape[0]))
    cv2.rectangle(canvas, (x, y - height - baseline - 4), (x + width + 4, y), colour, cv2.FILLED)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(
        canvas, text, (x + 2, y - baseline - 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink, thickness, cv2.LINE_AA
    )


def panel_lines(
    targets: Sequence[OverlayTarget], status_text: str = "", colours: dict[str, tuple[int, int, int]] | None = None
) -> list[tuple[str, tuple[int, int, int]]]:
    """The text lines (ASCII) and colours of the panel at the top of the overlay (see ``draw_overlay``)."""
    colours = colours or assign_colours([target.target_id for target in targets])
    lines: list[tuple[str, tuple[int, int, int]]] = []
    if status_text:
        lines.append((_ascii(status_text), (40, 40, 40)))
    for target in targets:
        if target.instruction:
            name = _ascii(target.target_id) or "default"
            status = f" [{_ascii(target.status)}]" if target.status else ""
            understood = ""
            if target.target_phrase:
                confidence = (
                    f" ({target.understanding_confidence:.2f})" if target.understanding_confidence is not None else ""
                )
                understood = f" -> {_ascii(target.target_phrase)}{confidence}"
            lines.append((f"{name}{status}: {_ascii(target.instruction)}{understood}", colours[target.target_id]))
    return lines


def draw_overlay(
    image_rgb: np.ndarray,
    targets: Sequence[OverlayTarget],
    *,
    status_text: str = "",
    alpha: float = 0.45,
) -> np.ndarray:
    """Return a new ``HxWx3 uint8`` RGB image with ``targets`` drawn over ``image_rgb``.

    Masks are blended in each target's colour with ``alpha`` and outlined; boxes, a label
    ``"<id> <status> <score>"``, and the interior point (a cross in a circle) are drawn in the same colour. A
    panel at the top lists ``status_text`` and one ``"<id> [<status>]: <instruction> -> <target phrase>
    (<understanding confidence>)"`` line per target (the part after the arrow once something was understood).
    """
    if not isinstance(image_rgb, np.ndarray) or image_rgb.dtype != np.uint8 or image_rgb.ndim != 3:
        raise ValueError(f"draw_overlay needs an HxWx3 uint8 RGB image, got {getattr(image_rgb, 'shape', image_rgb)}")
    if image_rgb.shape[2] != 3:
        raise ValueError(f"draw_overlay needs 3 channels, got shape {image_rgb.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = image_rgb.shape[:2]
    canvas = np.ascontiguousarray(image_rgb).copy()
    colours = assign_colours([target.target_id for target in targets])
    font_scale = float(np.clip(min(height, width) / 900.0, 0.35, 1.2))
    line_thickness = max(1, round(min(height, width) / 300))

    for target in targets:
        colour = colours[target.target_id]
        if target.mask is not None and target.mask.size:
            mask = target.mask
            if mask.shape != (height, width):
                raise ValueError(
                    f"mask of target {target.target_id!r} has shape {mask.shape}, image is {(height, width)}"
                )
            mask = mask.astype(bool, copy=False)
            blended = canvas[mask].astype(np.float32) * (1.0 - alpha) + np.float32(alpha) * np.array(colour, np.float32)
            canvas[mask] = np.round(blended).astype(np.uint8)
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, colour, line_thickness, cv2.LINE_AA)

    for target in targets:
        colour = colours[target.target_id]
        anchor = None
        if target.bbox is not None and target.bbox[2] > 0 and target.bbox[3] > 0:
            x, y, box_w, box_h = (int(v) for v in target.bbox)
            cv2.rectangle(canvas, (x, y), (x + box_w - 1, y + box_h - 1), colour, line_thickness)
            anchor = (x, y)
        if target.point is not None:
            px, py = round(float(target.point[0])), round(float(target.point[1]))
            radius = max(4, round(min(height, width) / 60))
            cv2.circle(canvas, (px, py), radius, (255, 255, 255), line_thickness + 1, cv2.LINE_AA)
            cv2.drawMarker(canvas, (px, py), colour, cv2.MARKER_CROSS, 2 * radius, line_thickness + 1)
            if anchor is None:
                anchor = (px + radius, py - radius)
        if anchor is None and target.mask is not None and target.mask.any():
            rows, cols = np.nonzero(target.mask)
            anchor = (int(cols.min()), int(rows.min()))
        label = " ".join(
            part
            for part in (
                _ascii(target.target_id) or "default",
                _ascii(target.status),
                f"{target.score:.2f}" if target.score is not None else "",
            )
            if part
        )
        if anchor is not None:
            _put_label(canvas, label, anchor, colour, font_scale)

    lines = panel_lines(targets, status_text, colours)
    thickness = max(1, round(font_scale * 2))
    line_height = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)[0][1] * 2 + 4
    for row, (text, colour) in enumerate(lines):
        fitted = _fit(text, font_scale, thickness, width - 8)
        _put_label(canvas, fitted, (0, (row + 1) * line_height), colour, font_scale)
    return canvas
