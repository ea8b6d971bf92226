"""``reasonvos bag-render``: draw the node's results over the camera images of a bag, into an mp4 video
(OpenCV ``mp4v``) and/or a contact-sheet PNG.

Images (``sensor_msgs/Image`` or ``CompressedImage``) and results (``reasonvos_ros/TargetResultArray``) may come
from one bag or two (e.g. the input bag and a bag recorded from the node). A result belongs to the image with the
same header stamp (exactly, or the nearest within ``match_tolerance`` seconds). Images without a result are drawn
with the status line ``no result``; a single bag without any result topic renders a preview of its images. Only ``rosbags`` and OpenCV are needed.
"""

from __future__ import annotations

import argparse
import bisect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.highlevel import AnyReader

from reasonvos_ros.bag.errors import describe_bag_error, is_bag_error
from reasonvos_ros.bag.types import make_typestore, msg_type_name
from reasonvos_ros.core.overlay import OverlayTarget, draw_overlay
from reasonvos_ros.core.types import TargetStatus
from reasonvos_ros.ros.conversions import image_msg_to_mask, image_msg_to_rgb, stamp_to_nanoseconds

__all__ = ["RenderSummary", "add_arguments", "render_bag", "results_to_overlay_targets", "run"]

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
RESULT_TYPE = msg_type_name("TargetResultArray")


@dataclass
class RenderSummary:
    frames: int = 0
    matched: int = 0  # frames that had a result
    results: int = 0  # result messages read
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)  # width, height
    video: Path | None = None
    contact_sheet: Path | None = None
    sheet_frames: list[int] = field(default_factory=list)


def _status_name(status: int) -> str:
    try:
        return TargetStatus(int(status)).name
    except ValueError:
        return f"STATUS_{int(status)}"


def results_to_overlay_targets(result_array: Any, image_shape: tuple[int, int]) -> list[OverlayTarget]:
    """``TargetResultArray`` (rclpy or rosbags message) -> overlay targets for an image of ``image_shape`` (H, W).
    A mask of another size is resized (nearest) to the image, and the box and point scaled alike."""
    targets = []
    for result in result_array.results:
        mask, scale_x, scale_y = None, 1.0, 1.0
        if int(result.mask.width) > 0 and int(result.mask.height) > 0:
            mask = image_msg_to_mask(result.mask)
            if mask.shape != tuple(image_shape):
                # the node saw the image at the mask's size: bring mask, box and point to this image's size
                scale_x, scale_y = image_shape[1] / mask.shape[1], image_shape[0] / mask.shape[0]
                resized = cv2.resize(mask.view(np.uint8), image_shape[::-1], interpolation=cv2.INTER_NEAREST)
                mask = resized.astype(bool)
        tracking = int(result.status) == TargetStatus.TRACKING
        bbox = (
            round(int(result.bbox_x) * scale_x),
            round(int(result.bbox_y) * scale_y),
            round(int(result.bbox_width) * scale_x),
            round(int(result.bbox_height) * scale_y),
        )
        point = (float(result.point_x) * scale_x, float(result.point_y) * scale_y)
        targets.append(
            OverlayTarget(
                target_id=str(result.target_id),
                mask=mask,
                bbox=bbox if bbox[2] > 0 and bbox[3] > 0 else None,
                point=point if tracking else None,
                status=_status_name(result.status),
                score=float(result.score),
                instruction=str(result.instruction),
                target_phrase=str(getattr(result, "target_phrase", "")),
                understanding_confidence=float(getattr(result, "understanding_confidence", 0.0)),
            )
        )
    return targets


def _pick_topic(reader: AnyReader, topic: str | None, types: tuple[str, ...], what: str, bag: Path) -> str:
    by_topic = {conn.topic: conn.msgtype for conn in reader.connections}
    if topic is not None:
        if topic not in by_topic:
            raise ValueError(f"{what} topic {topic!r} not in bag {bag}; it has: {sorted(by_topic)}")
        if by_topic[topic] not in types:
            raise ValueError(f"topic {topic!r} in {bag} has type {by_topic[topic]}, expected one of {types}")
        return topic
    matching = sorted(name for name, msgtype in by_topic.items() if msgtype in types)
    if len(matching) != 1:
        found = matching or "none"
        raise ValueError(
            f"cannot choose the {what} topic of {bag} automatically (candidates: {found}); "
            f"pass it explicitly. Topics: {by_topic}"
        )
    return matching[0]


def _read_results(bag: Path, topic: str | None, typestore, optional: bool) -> tuple[dict[int, Any], str | None]:
    """Result messages by header stamp (ns). With ``optional``, a bag without any result topic gives none."""
    results: dict[int, Any] = {}
    with AnyReader([bag], default_typestore=typestore) as reader:
        if optional and topic is None and all(conn.msgtype != RESULT_TYPE for conn in reader.connections):
            return results, None
        topic = _pick_topic(reader, topic, (RESULT_TYPE,), "result", bag)
        connections = [conn for conn in reader.connections if conn.topic == topic]
        for conn, _, raw in reader.messages(connections=connections):
            message = reader.deserialize(raw, conn.msgtype)
            results[stamp_to_nanoseconds(message.header.stamp)] = message
    return results, topic


def _thumbnail(image_rgb: np.ndarray, width: int, caption: str) -> np.ndarray:
    width = min(width, image_rgb.shape[1])  # never upscale
    height = max(1, round(image_rgb.shape[0] * width / image_rgb.shape[1]))
    thumb = cv2.resize(image_rgb, (width, height), interpolation=cv2.INTER_AREA)
    band = np.full((22, width, 3), 255, dtype=np.uint8)
    cv2.putText(band, caption, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([thumb, band], axis=0)


def render_bag(
    image_bag: str | Path,
    *,
    output_video: str | Path | None = None,
    contact_sheet: str | Path | None = None,
    results_bag: str | Path | None = None,
    image_topic: str | None = None,
    result_topic: str | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    match_tolerance: float = 0.0,
    sheet_frames: int = 12,
    sheet_columns: int = 4,
    thumb_width: int = 320,
    alpha: float = 0.45,
) -> RenderSummary:
    """Render; see the module docstring. ``results_bag`` defaults to ``image_bag``."""
    if output_video is None and contact_sheet is None:
        raise ValueError("nothing to do: give an output video and/or a contact sheet path")
    image_bag = Path(image_bag)
    results_optional = results_bag is None  # a bag of images only renders a preview without results
    results_bag = Path(results_bag) if results_bag is not None else image_bag
    for bag in {image_bag, results_bag}:
        if not bag.exists():
            raise FileNotFoundError(f"bag {bag} does not exist")
    if sheet_frames < 1 or sheet_columns < 1 or thumb_width < 16:
        raise ValueError("sheet_frames and sheet_columns must be >= 1 and thumb_width >= 16")
    typestore = make_typestore()
    results, result_topic = _read_results(results_bag, result_topic, typestore, results_optional)
    result_stamps = sorted(results)
    tolerance_ns = round(match_tolerance * 1e9)

    def find_result(stamp_ns: int) -> Any:
        if stamp_ns in results:
            return results[stamp_ns]
        if tolerance_ns <= 0 or not result_stamps:
            return None
        position = bisect.bisect_left(result_stamps, stamp_ns)
        nearby = [result_stamps[i] for i in (position - 1, position) if 0 <= i < len(result_stamps)]
        best = min(nearby, key=lambda stamp: abs(stamp - stamp_ns))
        return results[best] if abs(best - stamp_ns) <= tolerance_ns else None

    summary = RenderSummary(results=len(results))
    writer = None
    thumbs: list[np.ndarray] = []
    with AnyReader([image_bag], default_typestore=typestore) as reader:
        image_topic = _pick_topic(reader, image_topic, IMAGE_TYPES, "image", image_bag)
        connections = [conn for conn in reader.connections if conn.topic == image_topic]
        total = sum(conn.msgcount for conn in connections)
        if max_frames is not None:
            total = min(total, max_frames)
        if total == 0:
            raise ValueError(f"image topic {image_topic} of {image_bag} has no messages")
        count = min(sheet_frames, total)
        chosen = sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})
        first_stamp = None
        if fps is None:
            stamps = []
            for conn, _, raw in reader.messages(connections=connections):
                stamps.append(stamp_to_nanoseconds(reader.deserialize(raw, conn.msgtype).header.stamp))
                if len(stamps) >= min(total, 50):
                    break
            intervals = np.diff(stamps)
            intervals = intervals[intervals > 0]
            fps = float(1e9 / np.median(intervals)) if intervals.size else 10.0
        summary.fps = fps
        try:
            for conn, _, raw in reader.messages(connections=connections):
                if summary.frames >= total:
                    break
                message = reader.deserialize(raw, conn.msgtype)
                stamp_ns = stamp_to_nanoseconds(message.header.stamp)
                first_stamp = stamp_ns if first_stamp is None else first_stamp
                rgb = image_msg_to_rgb(message)
                if summary.size == (0, 0):
                    summary.size = (rgb.shape[1], rgb.shape[0])
                elif (rgb.shape[1], rgb.shape[0]) != summary.size:
                    rgb = cv2.resize(rgb, summary.size, interpolation=cv2.INTER_AREA)
                result = find_result(stamp_ns)
                relative = (stamp_ns - first_stamp) / 1e9
                status = f"frame {summary.frames}  t=+{relative:.2f}s"
                if result is None:
                    targets, status = [], f"{status}  no result"
                else:
                    summary.matched += 1
                    targets = results_to_overlay_targets(result, rgb.shape[:2])
                    status = f"{status}  {len(targets)} target(s)"
                frame = draw_overlay(rgb, targets, status_text=status, alpha=alpha)
                if output_video is not None:
                    if writer is None:
                        Path(output_video).parent.mkdir(parents=True, exist_ok=True)
                        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                        writer = cv2.VideoWriter(str(output_video), fourcc, fps, summary.size)
                        if not writer.isOpened():
                            raise ValueError(f"OpenCV cannot write an mp4v video to {output_video}")
                    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                if summary.frames in chosen:
                    tag = "result" if result is not None else "no result"
                    thumbs.append(_thumbnail(frame, thumb_width, f"#{summary.frames} +{relative:.2f}s {tag}"))
                    summary.sheet_frames.append(summary.frames)
                summary.frames += 1
        finally:
            if writer is not None:
                writer.release()
    if output_video is not None:
        summary.video = Path(output_video)
    if contact_sheet is not None:
        columns = min(sheet_columns, len(thumbs))
        blank = np.full_like(thumbs[0], 255)
        thumbs += [blank] * (-len(thumbs) % columns)
        rows = [np.concatenate(thumbs[i : i + columns], axis=1) for i in range(0, len(thumbs), columns)]
        Path(contact_sheet).parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(contact_sheet), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR)):
            raise ValueError(f"OpenCV cannot write the contact sheet {contact_sheet}")
        summary.contact_sheet = Path(contact_sheet)
    return summary


# ------------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.add_argument("bag", help="bag with the camera images (and the results, unless --results-bag)")
    parser.add_argument("--results-bag", default=None, help="bag with the TargetResultArray messages")
    parser.add_argument("--image-topic", default=None, help="default: the bag's only image topic")
    parser.add_argument("--result-topic", default=None, help="default: the only TargetResultArray topic")
    parser.add_argument("-o", "--video", default=None, help="output mp4 path")
    parser.add_argument("--contact-sheet", default=None, help="output PNG path")
    parser.add_argument("--fps", type=float, default=None, help="video frame rate (default: from image stamps)")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--match-tolerance", type=float, default=0.0,
                        help="seconds; 0 matches results to images by exact header stamp")  # fmt: skip
    parser.add_argument("--sheet-frames", type=int, default=12)
    parser.add_argument("--sheet-columns", type=int, default=4)
    parser.add_argument("--thumb-width", type=int, default=320)


def run(args: argparse.Namespace) -> int:
    try:
        summary = render_bag(
            args.bag,
            output_video=args.video,
            contact_sheet=args.contact_sheet,
            results_bag=args.results_bag,
            image_topic=args.image_topic,
            result_topic=args.result_topic,
            fps=args.fps,
            max_frames=args.max_frames,
            match_tolerance=args.match_tolerance,
            sheet_frames=args.sheet_frames,
            sheet_columns=args.sheet_columns,
            thumb_width=args.thumb_width,
        )
    except Exception as error:  # damaged, empty or foreign bags, a full disk: one clear line, no traceback
        if not is_bag_error(error):
            raise
        print(f"bag-render: error: {describe_bag_error(error, args.bag)}", file=sys.stderr)
        return 2
    outputs = ", ".join(str(path) for path in (summary.video, summary.contact_sheet) if path is not None)
    print(
        f"bag-render: {summary.frames} frames ({summary.matched} with a result, {summary.results} results read) "
        f"{summary.size[0]}x{summary.size[1]} at {summary.fps:.2f} fps -> {outputs}"
    )
    return 0
