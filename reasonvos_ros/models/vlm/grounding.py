"""The structured question a VLM answers about the window, and a strict parser for its answer.

The question shows the window's frames, each labelled ``Frame <n>`` (references first, small; the candidate key
frame last, at full detail), quotes the instruction and asks for ONE JSON object::

    {"frame": 7, "bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y], "label": "bottle opener",
     "explanation": "one sentence", "confidence": 0.8}
    {"frame": 7, "not_present": true, "label": "bottle opener", "explanation": "why not"}

``bbox_2d`` / ``point_2d`` / ``label`` are the keys of Qwen's own grounding JSON (the Qwen2.5-VL and Qwen3-VL
spatial-understanding cookbooks answer ``[{"bbox_2d": [...], "label": ...}]`` and ``{"point_2d": [x, y], ...}``),
so the models are asked for the format they were trained to produce. The coordinate convention differs by family
(``CoordinateConvention``):

* **Qwen2.5-VL: absolute pixels of the image the model was given** (after its ``smart_resize``). Qwen's maintainer,
  QwenLM/Qwen2.5-VL issue #676 (2025-01-28): "we will output absolute coordinates based on the actual input size of
  the image. However, it's important to note that this is the size after processer"; the Qwen2.5-VL blog
  (qwenlm.github.io/blog/qwen2.5-vl) lists "stable JSON outputs for coordinates". The parser therefore needs the
  size (w, h) of the key frame as the model saw it and rescales to the frame's own size.
* **Qwen3-VL: relative coordinates normalised to 0..1000**, independent of the image size. Qwen3-VL README
  (github.com/QwenLM/Qwen3-VL, quoted in its issue #1741): "Qwen3-VL's default coordinate system has been changed
  from the absolute coordinates used in Qwen2.5-VL to relative coordinates ranging from 0 to 1000". Alibaba Cloud's
  Model Studio page says 0..999; both ends are accepted (a value of 1000 is the right/bottom edge).

Parsing never guesses: malformed or truncated JSON, several objects, non-numeric / non-finite / out-of-range /
degenerate boxes, points outside the image and a frame label that was not shown all give ``status="invalid"``
with a reason; a frame label of a reference frame (the object was seen there, not on the key frame) gives
``status="other_frame"``. Only ``status="found"`` carries a box/points, already in key-frame pixels. The model
output is only ever read as data (``json.loads``; ``ast.literal_eval`` for Python-style dicts), never executed.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_ANSWER_CHARS = 8000  # longer answers are cut before parsing (bounds the parser's work on runaway generations)
MAX_LABEL_CHARS = 80
MAX_EXPLANATION_CHARS = 300
# Coordinates slightly outside the image are clipped (models often answer 1001 or width + 1 for an object touching
# the border); beyond this fraction of the image side the answer is rejected as not meant for this image.
OUT_OF_RANGE_TOLERANCE = 0.02

CONVENTIONS = ("absolute_input", "relative_1000")


@dataclass(frozen=True)
class CoordinateConvention:
    """How a family's coordinates map to image pixels.

    ``kind``: "absolute_input" (pixels of the image as the model saw it, Qwen2.5-VL) or "relative_1000" (0..1000 of
    the image's width/height, Qwen3-VL)."""

    kind: str

    def __post_init__(self) -> None:
        if self.kind not in CONVENTIONS:
            raise ValueError(f"unknown coordinate convention {self.kind!r}; expected one of {', '.join(CONVENTIONS)}")

    def extent(self, seen_size: tuple[int, int]) -> tuple[float, float]:
        """(x extent, y extent) of the model's coordinate space for an image seen at ``seen_size`` (w, h)."""
        if self.kind == "relative_1000":
            return 1000.0, 1000.0
        return float(seen_size[0]), float(seen_size[1])

    def prompt_sentence(self, seen_size: tuple[int, int]) -> str:
        if self.kind == "relative_1000":
            return "Coordinates are relative: x and y from 0 to 1000 (0,0 top-left, 1000,1000 bottom-right)."
        return (
            f"Coordinates are absolute pixels of the key frame image as you see it ({seen_size[0]}x{seen_size[1]}, "
            "0,0 top-left)."
        )


CONVENTION_BY_FAMILY = {
    "qwen2_5_vl": CoordinateConvention("absolute_input"),
    "qwen3_vl": CoordinateConvention("relative_1000"),
}


@dataclass
class GroundingAnswer:
    """A parsed answer. ``status``: "found" (box and/or points set, in key-frame pixels), "not_present",
    "other_frame" (the model placed the object on another frame than the key frame) or "invalid" (``reason`` says
    why; nothing else may be used)."""

    status: str
    reason: str = ""
    frame: str | None = None
    box_xyxy: tuple[float, float, float, float] | None = None  # key-frame pixels, x1 < x2, y1 < y2
    points_xy: list[tuple[float, float]] = field(default_factory=list)  # key-frame pixels, positive clicks
    label: str = ""
    explanation: str = ""
    confidence: float | None = None  # the model's own figure in [0, 1], None when absent or unusable
    notes: list[str] = field(default_factory=list)  # harmless repairs made (clipping, swapped corners, fences)


@dataclass(frozen=True)
class PromptFrame:
    """One frame in the question: its label (what the model must answer in "frame"), its role and its time offset
    from the key frame."""

    label: str
    is_key: bool
    offset_s: float


def build_question(
    instruction: str, frames: Sequence[PromptFrame], convention: CoordinateConvention, key_seen_size: tuple[int, int]
) -> tuple[list[str], str]:
    """Text around the images: (one caption per frame, in order, shown before that frame's image; the text after
    all images). The instruction is embedded as a JSON string literal so quotes in it cannot break the format."""
    captions = []
    key_label = None
    for frame in frames:
        if frame.is_key:
            key_label = frame.label
            captions.append(f"Frame {frame.label} (key frame, t = {frame.offset_s:+.1f} s):")
        else:
            captions.append(f"Frame {frame.label} (reference, t = {frame.offset_s:+.1f} s):")
    if key_label is None:
        raise ValueError("the question needs exactly one key frame")
    example_found = (
        f'{{"frame": {key_label}, "bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y], "label": "short noun phrase", '
        '"explanation": "one sentence: which words name the target and why this object", "confidence": 0.8}'
    )
    example_absent = (
        f'{{"frame": {key_label}, "not_present": true, "label": "short noun phrase", '
        '"explanation": "one sentence: why it is not visible on the key frame"}'
    )
    tail = (
        "These are frames from a robot's camera, oldest first; t is the time relative to the key frame.\n"
        f"Instruction: {json.dumps(instruction, ensure_ascii=False)}\n"
        f"Find the single object the instruction refers to and locate it on the key frame (Frame {key_label}). "
        "Use the other frames only as context. "
        f"{convention.prompt_sentence(key_seen_size)} "
        "bbox_2d is [x1, y1, x2, y2] (top-left, bottom-right); point_2d is a point inside the object.\n"
        "Answer with one JSON object and nothing else, either\n"
        f"{example_found}\nor, if the object is not visible on the key frame,\n{example_absent}"
    )
    return captions, tail


# ------------------------------------------------------------------------------------------------------- parsing
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def _candidate_texts(text: str) -> list[str]:
    """JSON-looking spans: fenced blocks first, then every outermost balanced {...} or [...] span, in text order
    (brackets inside JSON strings are skipped; an unbalanced tail -- a truncated answer -- yields nothing)."""
    spans = [m.group(1).strip() for m in _FENCE.finditer(text)]
    pairs = {"{": "}", "[": "]"}
    position = 0
    while True:
        starts = [i for i in (text.find("{", position), text.find("[", position)) if i != -1]
        if not starts:
            return spans
        start = min(starts)
        stack: list[str] = []
        in_string = escaped = False
        end = None
        for index in range(start, len(text)):
            char = text[index]
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char in pairs:
                stack.append(pairs[char])
            elif char in "}]":
                if not stack or stack.pop() != char:
                    break  # mismatched bracket: not JSON from here
                if not stack:
                    end = index
                    break
        if end is None:
            return spans  # everything after an unclosed bracket is inside it: a truncated answer
        spans.append(text[start : end + 1])
        position = end + 1


def _load(span: str) -> Any:
    try:
        return json.loads(span)
    except (json.JSONDecodeError, RecursionError):
        pass
    # Python-style dicts ('single quotes', True/None) and trailing commas: literal_eval only builds literals.
    pythonish = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", span)))
    try:
        return ast.literal_eval(pythonish)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def parse_json_object(text: str) -> dict | list | None:
    """The first JSON-looking span of ``text`` that parses to an object (or a list holding one), else None."""
    for span in _candidate_texts(text):
        parsed = _load(span)
        if isinstance(parsed, dict) or (isinstance(parsed, list) and any(isinstance(i, dict) for i in parsed)):
            return parsed
    return None


def _numbers(value: Any, count: int, what: str) -> list[float]:
    if isinstance(value, str):
        found = re.findall(r"-?\d+(?:\.\d+)?", value)
        value = [float(v) for v in found]
    if not isinstance(value, (list, tuple)) or len(value) != count:
        raise ValueError(f"{what} must be {count} numbers, got {value!r}"[:200])
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ValueError(f"{what} must be numbers, got {item!r}"[:200])
        if not math.isfinite(float(item)):
            raise ValueError(f"{what} has a non-finite value")
        out.append(float(item))
    return out


def _to_pixels(value: float, extent: float, size: int, what: str, notes: list[str]) -> float:
    """One model coordinate -> frame pixels; small overshoots are clipped, larger ones rejected."""
    tolerance = OUT_OF_RANGE_TOLERANCE * extent
    if value < -tolerance or value > extent + tolerance:
        raise ValueError(f"{what} {value:g} is outside the coordinate range 0..{extent:g}")
    if value < 0 or value > extent:
        notes.append(f"{what} {value:g} clipped to 0..{extent:g}")
        value = min(max(value, 0.0), extent)
    return value / extent * size


def _text_field(obj: dict, key: str, limit: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        return ""
    value = " ".join(value.split())
    return value[:limit]


def parse_answer(
    text: str,
    *,
    key_label: str,
    frame_labels: Sequence[str],
    convention: CoordinateConvention,
    seen_size: tuple[int, int],
    frame_size: tuple[int, int],
    min_box_side_px: float = 2.0,
) -> GroundingAnswer:
    """Parse a model answer (see the module docstring).

    ``seen_size`` (w, h): the key frame as the model saw it (only used by "absolute_input"); ``frame_size`` (w, h):
    the key frame's real size, the space of the returned box/points; ``min_box_side_px``: boxes thinner than this
    in frame pixels are degenerate."""
    if not isinstance(text, str):
        return GroundingAnswer("invalid", f"the answer is not text ({type(text).__name__})")
    notes: list[str] = []
    if len(text) > MAX_ANSWER_CHARS:
        text = text[:MAX_ANSWER_CHARS]
        notes.append(f"answer cut to {MAX_ANSWER_CHARS} characters")
    text = _THINK.sub("", text).strip()
    if not text:
        return GroundingAnswer("invalid", "empty answer")
    parsed = parse_json_object(text)
    if parsed is None:
        return GroundingAnswer("invalid", f"no JSON object in the answer: {text[:120]!r}")
    if isinstance(parsed, list):
        objects = [item for item in parsed if isinstance(item, dict)]
        if len(objects) != 1 or len(parsed) != 1:
            return GroundingAnswer(
                "invalid", f"the answer lists {len(parsed)} items; the instruction needs exactly one object"
            )
        parsed = objects[0]
        notes.append("single-element list unwrapped")
    obj = parsed
    label = _text_field(obj, "label", MAX_LABEL_CHARS)
    explanation = _text_field(obj, "explanation", MAX_EXPLANATION_CHARS)
    confidence = obj.get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 <= confidence <= 1:
        if confidence is not None:
            notes.append(f"confidence {confidence!r} ignored (not a number in [0, 1])")
        confidence = None
    else:
        confidence = float(confidence)
    base = {"label": label, "explanation": explanation, "confidence": confidence, "notes": notes}

    frame = obj.get("frame")
    if frame is None:
        frame_label = key_label
        notes.append("no frame given: taken as the key frame")
    else:
        if isinstance(frame, bool) or not isinstance(frame, (int, float, str)):
            return GroundingAnswer("invalid", f"frame {frame!r} is not a frame label", **base)
        frame_label = str(frame).strip()
        frame_label = re.sub(r"^frame\s*", "", frame_label, flags=re.IGNORECASE)
        if isinstance(frame, float) and frame.is_integer():
            frame_label = str(int(frame))
        if frame_label not in frame_labels:
            return GroundingAnswer(
                "invalid",
                f"frame {frame!r} is not one of the frames shown ({', '.join(frame_labels)})",
                frame=frame_label,
                **base,
            )
    not_present = obj.get("not_present", False)
    if not_present is True or (isinstance(not_present, str) and not_present.strip().lower() in ("true", "yes")):
        return GroundingAnswer(
            "not_present", explanation or "the model says it is not visible", frame=frame_label, **base
        )
    if frame_label != key_label:
        return GroundingAnswer(
            "other_frame",
            f"the model located the object on frame {frame_label}, not on the key frame {key_label}",
            frame=frame_label,
            **base,
        )
    width, height = frame_size
    x_extent, y_extent = convention.extent(seen_size)
    box = None
    points: list[tuple[float, float]] = []
    try:
        if obj.get("bbox_2d") is not None:
            x1, y1, x2, y2 = _numbers(obj["bbox_2d"], 4, "bbox_2d")
            if x1 > x2 or y1 > y2:
                x1, x2 = sorted((x1, x2))
                y1, y2 = sorted((y1, y2))
                notes.append("bbox_2d corners swapped")
            x1 = _to_pixels(x1, x_extent, width, "bbox_2d x1", notes)
            x2 = _to_pixels(x2, x_extent, width, "bbox_2d x2", notes)
            y1 = _to_pixels(y1, y_extent, height, "bbox_2d y1", notes)
            y2 = _to_pixels(y2, y_extent, height, "bbox_2d y2", notes)
            if x2 - x1 < min_box_side_px or y2 - y1 < min_box_side_px:
                raise ValueError(
                    f"bbox_2d is degenerate: {x2 - x1:.1f} x {y2 - y1:.1f} px on the frame "
                    f"(minimum side {min_box_side_px:g} px)"
                )
            box = (x1, y1, x2, y2)
        raw_points = obj.get("point_2d", obj.get("points"))
        if raw_points is not None:
            if isinstance(raw_points, (list, tuple)) and raw_points and isinstance(raw_points[0], (list, tuple)):
                items = list(raw_points)
            else:
                items = [raw_points]
            for item in items[:8]:
                px, py = _numbers(item, 2, "point_2d")
                points.append(
                    (
                        _to_pixels(px, x_extent, width, "point_2d x", notes),
                        _to_pixels(py, y_extent, height, "point_2d y", notes),
                    )
                )
    except ValueError as exc:
        return GroundingAnswer("invalid", str(exc), frame=frame_label, **base)
    if box is None and not points:
        return GroundingAnswer(
            "invalid", "the answer has neither bbox_2d nor point_2d nor not_present", frame=frame_label, **base
        )
    if box is not None and points:
        x1, y1, x2, y2 = box
        inside = [p for p in points if x1 <= p[0] <= x2 and y1 <= p[1] <= y2]
        if len(inside) < len(points):
            notes.append(f"{len(points) - len(inside)} point(s) outside bbox_2d dropped")
        points = inside
    return GroundingAnswer("found", "", frame=frame_label, box_xyxy=box, points_xy=points, **base)
