"""``reasonvos bag-from-video``: write a rosbag2 bag (sqlite3 or mcap) from a video file.

Frames become ``sensor_msgs/Image`` rgb8 (or ``sensor_msgs/CompressedImage`` jpeg/png) stamped at the video's
frame rate from ``start_stamp``; the bag's receive timestamps equal the header stamps. Optional
``reasonvos_ros/Instruction`` messages are written at given times (seconds after the first frame). Only
``rosbags`` and OpenCV are needed (no ROS installation).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from reasonvos_ros.bag.types import make_typestore, msg_type_name
from reasonvos_ros.ros.conversions import compressed_format_string, encode_compressed, encode_image_fields

__all__ = ["BagSummary", "InstructionEvent", "add_arguments", "make_bag_from_video", "run"]

STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
FORMATS = ("raw", "jpeg", "png")


@dataclass(frozen=True)
class InstructionEvent:
    time: float  # seconds after the first frame
    text: str
    target_id: str = ""


@dataclass
class BagSummary:
    path: Path
    frames: int
    fps: float
    width: int
    height: int
    first_stamp_ns: int
    instructions: int
    topics: dict[str, str] = field(default_factory=dict)  # topic -> type


def _resized_size(width: int, height: int, size: tuple[int, int] | None, max_side: int | None) -> tuple[int, int]:
    if size is not None:
        return size
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def make_bag_from_video(
    video: str | Path,
    output: str | Path,
    *,
    topic: str = "/image",
    frame_id: str = "camera",
    image_format: str = "raw",
    jpeg_quality: int = 90,
    storage: str = "mcap",
    start_frame: int = 0,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
    max_side: int | None = None,
    fps: float | None = None,
    start_stamp: float | None = None,
    instructions: list[InstructionEvent] | tuple[InstructionEvent, ...] = (),
    instruction_topic: str = "/instruction",
) -> BagSummary:
    """Write the bag; see the module docstring. ``size`` is (width, height); ``max_side`` downsizes keeping the
    aspect ratio. Raises FileNotFoundError / FileExistsError / ValueError with the reason."""
    video, output = Path(video), Path(output)
    if not video.is_file():
        raise FileNotFoundError(f"video file {video} does not exist")
    if output.exists():
        raise FileExistsError(f"output bag {output} already exists (rosbag2 writers never overwrite)")
    if image_format not in FORMATS:
        raise ValueError(f"image format must be one of {FORMATS}, got {image_format!r}")
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {tuple(STORAGES)}, got {storage!r}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if size is not None and (size[0] < 1 or size[1] < 1):
        raise ValueError(f"size must be positive, got {size}")
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    for event in instructions:
        if not event.text.strip():
            raise ValueError(f"instruction at {event.time} s has an empty text")
        if not (math.isfinite(event.time) and event.time >= 0):
            raise ValueError(f"instruction time must be >= 0 seconds after the first frame, got {event.time}")

    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ValueError(f"OpenCV cannot open video {video} (unsupported codec or not a video)")
    try:
        video_fps = capture.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if fps is not None else float(video_fps)
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"video {video} reports no frame rate ({video_fps}); pass fps explicitly")
        if start_frame > 0:
            capture.set(cv2.CAP_PROP_POS_FRAMES, start_frame)
        start_ns = round((time.time() if start_stamp is None else float(start_stamp)) * 1e9)
        typestore = make_typestore()
        types = typestore.types
        header_cls, time_cls = types["std_msgs/msg/Header"], types["builtin_interfaces/msg/Time"]

        def stamp(ns: int):
            return time_cls(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

        image_type = "sensor_msgs/msg/Image" if image_format == "raw" else "sensor_msgs/msg/CompressedImage"
        frames, out_w, out_h = 0, 0, 0
        with Writer(output, version=9, storage_plugin=STORAGES[storage]) as writer:
            image_conn = writer.add_connection(topic, image_type, typestore=typestore)
            topics = {topic: image_type}
            pending = sorted(instructions, key=lambda event: event.time)
            instruction_conn = None
            if pending:
                instruction_type = msg_type_name("Instruction")
                instruction_conn = writer.add_connection(instruction_topic, instruction_type, typestore=typestore)
                topics[instruction_topic] = instruction_type
            written_instructions = 0

            def write_instruction(event: InstructionEvent) -> None:
                nonlocal written_instructions
                event_ns = start_ns + round(event.time * 1e9)
                message = types[msg_type_name("Instruction")](
                    target_id=event.target_id, text=event.text, source=0, stamp=stamp(event_ns)
                )
                writer.write(instruction_conn, event_ns, typestore.serialize_cdr(message, instruction_conn.msgtype))
                written_instructions += 1

            while max_frames is None or frames < max_frames:
                ok, bgr = capture.read()
                if not ok:
                    break
                in_h, in_w = bgr.shape[:2]
                out_w, out_h = _resized_size(in_w, in_h, size, max_side)
                if (out_w, out_h) != (in_w, in_h):
                    shrinking = out_w * out_h < in_w * in_h
                    bgr = cv2.resize(
                        bgr, (out_w, out_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
                    )
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                frame_ns = start_ns + round(frames * 1e9 / fps)
                while pending and instruction_conn is not None and start_ns + round(pending[0].time * 1e9) <= frame_ns:
                    write_instruction(pending.pop(0))
                header = header_cls(stamp=stamp(frame_ns), frame_id=frame_id)
                if image_format == "raw":
                    fields = encode_image_fields(rgb, "rgb8")
                    message = types["sensor_msgs/msg/Image"](
                        header=header,
                        height=fields.height,
                        width=fields.width,
                        encoding=fields.encoding,
                        is_bigendian=fields.is_bigendian,
                        step=fields.step,
                        data=np.frombuffer(fields.data, dtype=np.uint8),
                    )
                else:
                    data = encode_compressed(rgb, "rgb8", image_format, jpeg_quality)
                    message = types["sensor_msgs/msg/CompressedImage"](
                        header=header,
                        format=compressed_format_string("rgb8", image_format),
                        data=np.frombuffer(data, dtype=np.uint8),
                    )
                writer.write(image_conn, frame_ns, typestore.serialize_cdr(message, image_type))
                frames += 1
            # instructions after the last frame are still written, at their own times
            for event in pending:
                write_instruction(event)
        if frames == 0:
            raise ValueError(f"no frame could be read from {video} (start frame {start_frame})")
    finally:
        capture.release()
    return BagSummary(output, frames, fps, out_w, out_h, start_ns, written_instructions, topics)


# ------------------------------------------------------------------------------------------------------ CLI


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, got {text!r}") from None
    return width, height


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.add_argument("video", help="input video file (anything OpenCV reads)")
    parser.add_argument("output", help="output bag folder (must not exist)")
    parser.add_argument("--topic", default="/image", help="image topic (default /image)")
    parser.add_argument("--frame-id", default="camera", help="header.frame_id of the images")
    parser.add_argument("--format", dest="image_format", choices=FORMATS, default="raw",
                        help="raw: sensor_msgs/Image rgb8; jpeg/png: sensor_msgs/CompressedImage")  # fmt: skip
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--storage", choices=tuple(STORAGES), default="mcap")
    parser.add_argument("--start-frame", type=int, default=0, help="first video frame to use")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    resize = parser.add_mutually_exclusive_group()
    resize.add_argument("--size", type=_size, default=None, help="resize frames to WxH, e.g. 320x240")
    resize.add_argument("--max-side", type=int, default=None, help="downsize so the longer side is at most this")
    parser.add_argument("--fps", type=float, default=None, help="override the video's frame rate")
    parser.add_argument("--start-stamp", type=float, default=None,
                        help="header stamp of the first frame in seconds (default: now)")  # fmt: skip
    parser.add_argument("--instruction", nargs="+", action="append", default=[], metavar="ARG",
                        help="TIME TEXT or TIME TARGET_ID TEXT: an Instruction at TIME seconds after the first frame "
                        "(repeatable)")  # fmt: skip
    parser.add_argument("--instruction-topic", default="/instruction")


def _parse_instructions(items: list[list[str]]) -> list[InstructionEvent]:
    events = []
    for item in items:
        if len(item) not in (2, 3):
            raise ValueError(f"--instruction takes TIME TEXT or TIME TARGET_ID TEXT, got {item}")
        try:
            seconds = float(item[0])
        except ValueError:
            raise ValueError(f"--instruction time must be a number of seconds, got {item[0]!r}") from None
        target_id = item[1] if len(item) == 3 else ""
        events.append(InstructionEvent(seconds, item[-1], target_id))
    return events


def run(args: argparse.Namespace) -> int:
    try:
        summary = make_bag_from_video(
            args.video,
            args.output,
            topic=args.topic,
            frame_id=args.frame_id,
            image_format=args.image_format,
            jpeg_quality=args.jpeg_quality,
            storage=args.storage,
            start_frame=args.start_frame,
            max_frames=args.max_frames,
            size=args.size,
            max_side=args.max_side,
            fps=args.fps,
            start_stamp=args.start_stamp,
            instructions=_parse_instructions(args.instruction),
            instruction_topic=args.instruction_topic,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"bag-from-video: error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {summary.path}: {summary.frames} frames {summary.width}x{summary.height} at {summary.fps:g} fps "
        f"on {args.topic}, {summary.instructions} instruction(s); topics: {summary.topics}"
    )
    return 0
