"""``reasonvos segment VIDEO "instruction"``: segment one object through a whole clip, offline.

VIDEO is a video file OpenCV can decode or a folder of images (sorted by name). The clip goes through
``reasonvos_ros.core.offline.segment_clip`` with the configured backends (default: the lite CPU backends) and the
command writes, under ``--out``:

- ``masks/<frame>.png``: one 0/255 grayscale mask per frame (frame = the image's stem, or ``00000``... for videos);
- ``overlay.mp4``: the frames with the mask, the status and the instruction drawn on them (key frame marked);
- ``result.json``: key frame, status, reason, score, timings, the backends used and the mask area per frame.

Backends: ``--backends FILE`` (YAML/JSON ``{"sampler": {"name": ..., "options": {...}}, "segmenter": ...,
"tracker": ...}``), then ``--sampler/--segmenter/--tracker NAME`` and ``--option ROLE.KEY=VALUE`` (VALUE parsed
as YAML) override it. The helpers here are shared with ``reasonvos eval``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..core.errors import ReasonVosError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ROLES = ("sampler", "segmenter", "tracker")


class InputError(ReasonVosError):
    """A command-line input (video, image folder, backend file, option) is missing or unusable."""


# ---------------------------------------------------------------------------------------------- backend options


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backends (default: the lite CPU backends)")
    group.add_argument(
        "--backends", metavar="FILE", help="YAML/JSON file: {sampler|segmenter|tracker: {name, options}}"
    )
    for role in ROLES:
        group.add_argument(f"--{role}", metavar="NAME", help=f"{role} backend name (overrides --backends)")
    group.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="ROLE.KEY=VALUE",
        help="backend constructor option, VALUE parsed as YAML (repeatable), e.g. segmenter.device=cuda",
    )


def backends_from_args(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The ``backends`` mapping for ``segment_clip`` from ``--backends``, ``--<role>`` and ``--option``."""
    import yaml

    spec: dict[str, dict[str, Any]] = {}
    if args.backends:
        path = pathlib.Path(args.backends)
        if not path.is_file():
            raise InputError(f"backends file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise InputError(f"backends file {path} is not valid YAML/JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise InputError(f"backends file {path}: expected a mapping of role -> {{name, options}}")
        for role, entry in loaded.items():
            if role not in ROLES:
                raise InputError(f"backends file {path}: unknown role {role!r} (expected {', '.join(ROLES)})")
            if isinstance(entry, str):
                entry = {"name": entry}
            if not isinstance(entry, dict) or not isinstance(entry.get("options", {}), dict):
                raise InputError(f"backends file {path}: {role} must be a name or {{name, options: {{...}}}}")
            spec[role] = {"name": entry.get("name"), "options": dict(entry.get("options") or {})}
    for role in ROLES:
        name = getattr(args, role, None)
        if name:
            spec.setdefault(role, {"options": {}})["name"] = name
    for item in args.option:
        key, sep, raw = item.partition("=")
        role, dot, option = key.partition(".")
        if not sep or not dot or role not in ROLES or not option:
            raise InputError(f"--option {item!r}: expected ROLE.KEY=VALUE with ROLE one of {', '.join(ROLES)}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise InputError(f"--option {item!r}: value is not valid YAML: {exc}") from exc
        spec.setdefault(role, {"options": {}}).setdefault("options", {})[option] = value
    from ..core.registry import ROLES as REGISTRY

    for role, entry in spec.items():  # fail before any video is read or model loaded
        table = REGISTRY[role][0]
        if entry.get("name") is not None and entry["name"] not in table:
            raise InputError(f"unknown {role} backend {entry['name']!r}; available: {', '.join(sorted(table))}")
    # segment_clip fills roles (and names) left out with its defaults.
    return {role: {k: v for k, v in entry.items() if v is not None} for role, entry in spec.items()}


# ------------------------------------------------------------------------------------------------------- inputs


@dataclass
class Clip:
    frames: list[np.ndarray]  # RGB uint8, all the same size
    names: list[str]
    fps: float
    source: str


def load_clip(source: str | pathlib.Path, start: int = 0, stride: int = 1, max_frames: int = 0) -> Clip:
    """Frames ``start, start + stride, ...`` (at most ``max_frames``, 0 = all) of a video file or image folder."""
    path = pathlib.Path(source)
    if start < 0 or stride < 1 or max_frames < 0:
        raise InputError(f"need start >= 0, stride >= 1, max_frames >= 0; got {start}, {stride}, {max_frames}")
    if not path.exists():
        raise InputError(f"video not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise InputError(f"{path} contains no images ({', '.join(IMAGE_SUFFIXES)})")
        files = files[start::stride]
        if max_frames:
            files = files[:max_frames]
        frames, names = [], []
        for file in files:
            bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if bgr is None:
                raise InputError(f"cannot decode image {file}")
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            names.append(file.stem)
        fps = 30.0 / stride
    else:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise InputError(f"OpenCV cannot open {path} as a video (unsupported or corrupt file)")
        try:
            fps = float(capture.get(cv2.CAP_PROP_FPS)) or 30.0
            frames, names = [], []
            index = 0
            while not max_frames or len(frames) < max_frames:
                ok, bgr = capture.read()
                if not ok:
                    break
                if index >= start and (index - start) % stride == 0:
                    frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                    names.append(f"{index:05d}")
                index += 1
        finally:
            capture.release()
        if not frames:
            raise InputError(f"no frame could be decoded from {path} (from frame {start}, {index} frames read)")
        fps /= stride
    shape = frames[0].shape
    for name, frame in zip(names, frames):
        if frame.shape != shape:
            raise InputError(
                f"frame {name} of {path} is {frame.shape[1]}x{frame.shape[0]}, frame {names[0]} is {shape[1]}x{shape[0]}: all frames must have one size"
            )
    return Clip(frames, names, fps, str(path))


def check_masks(masks: Sequence[np.ndarray], frames: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    """The pipeline's masks as bool arrays; a count or size that does not match the frames is an error."""
    if len(masks) != len(frames):
        raise ReasonVosError(f"{what}: the pipeline returned {len(masks)} masks for {len(frames)} frames")
    out = []
    for i, (mask, frame) in enumerate(zip(masks, frames)):
        mask = np.asarray(mask)
        if mask.shape != frame.shape[:2]:
            raise ReasonVosError(f"{what}: mask {i} is {mask.shape}, its frame is {frame.shape[:2]}")
        out.append(mask.astype(bool))
    return out


# ------------------------------------------------------------------------------------------------------ outputs


def write_masks(folder: pathlib.Path, names: Sequence[str], masks: Sequence[np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, mask in zip(names, masks):
        path = folder / f"{name}.png"
        if not cv2.imwrite(str(path), mask.astype(np.uint8) * 255):
            raise OSError(f"could not write {path}")


def write_overlay_video(
    path: pathlib.Path, clip: Clip, masks: Sequence[np.ndarray], instruction: str, key_index: int, status: str
) -> None:
    """An mp4 (MPEG-4 part 2, OpenCV's built-in encoder) of the frames with the mask drawn on them."""
    from ..core.overlay import OverlayTarget, draw_overlay

    height, width = clip.frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), max(clip.fps, 1.0), (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write an mp4 video to {path}")
    try:
        for i, (frame, mask) in enumerate(zip(clip.frames, masks)):
            target = OverlayTarget("target", mask=mask, status=status if mask.any() else "", instruction=instruction)
            marker = " KEY FRAME" if i == key_index else ""
            image = draw_overlay(
                frame, [target], status_text=f"frame {clip.names[i]} ({i + 1}/{len(clip.frames)}){marker}"
            )
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


# -------------------------------------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("video", help="video file or folder of images")
    parser.add_argument("instruction", help='what to segment, e.g. "the dog that is about to jump"')
    parser.add_argument("--out", help="output folder (default: ./reasonvos_segment_<video name>)")
    parser.add_argument("--start", type=int, default=0, help="first frame to use (default 0)")
    parser.add_argument("--stride", type=int, default=1, help="use every N-th frame (default 1)")
    parser.add_argument("--max-frames", type=int, default=0, help="at most this many frames (default 0 = all)")
    parser.add_argument("--no-overlay", action="store_true", help="skip overlay.mp4")
    add_backend_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..core.offline import resolve_backends, segment_clip

    try:
        if not args.instruction.strip():
            raise InputError("the instruction is empty")
        backends = backends_from_args(args)
        clip = load_clip(args.video, args.start, args.stride, args.max_frames)
        out = pathlib.Path(args.out or f"reasonvos_segment_{pathlib.Path(args.video).stem}")
        print(f"segmenting {len(clip.frames)} frames of {clip.source}: {args.instruction!r}", file=sys.stderr)
        result = segment_clip(clip.frames, args.instruction, backends or None, fps=clip.fps)
        masks = check_masks(result.masks, clip.frames, clip.source)
        out.mkdir(parents=True, exist_ok=True)
        write_masks(out / "masks", clip.names, masks)
        status = result.status.name
        if not args.no_overlay:
            write_overlay_video(out / "overlay.mp4", clip, masks, args.instruction, result.key_index, status)
        record = {
            "source": clip.source,
            "instruction": args.instruction,
            "frames": clip.names,
            "fps": clip.fps,
            "key_index": result.key_index,
            "key_frame": clip.names[result.key_index] if 0 <= result.key_index < len(clip.names) else None,
            "status": status,
            "reason": result.reason,
            "score": result.score,
            "timings": result.timings,
            "mask_area_px": [int(m.sum()) for m in masks],
            "backends": resolve_backends(backends),
        }
        (out / "result.json").write_text(json.dumps(record, indent=2) + "\n")
    except (ReasonVosError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    present = sum(1 for m in masks if m.any())
    print(
        f"{status}: key frame {record['key_frame']}, object on {present}/{len(masks)} frames, "
        f"{result.timings.get('total_s', float('nan')):.1f} s; wrote {out}/masks, "
        f"{'' if args.no_overlay else 'overlay.mp4, '}result.json"
    )
    return 0
