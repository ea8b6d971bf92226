"""Write small ReVOS-format datasets, e.g. from composited clips with exact ground truth.

``write_revos_folder`` turns in-memory videos (RGB frames, per-object masks, expressions) into the released
ReVOS layout: ``JPEGImages/<video>/<frame>.jpg``, ``meta_expressions_<split>_.json``, ``mask_dict.json`` (COCO
RLE per frame, null where the object is absent) and ``mask_dict_foreground.json`` (union of the video's objects
and its area ratio per frame). ``build_mini_dataset`` writes a fixed three-video set made with
``reasonvos_ros.data.composite`` (real GrabCut cut-outs of darknet's photos over ``vtest.avi`` frames):

- ``dog_walk``: the dog crosses the scene behind a pillar; a referring, a reasoning and a no-target expression.
- ``person_exit``: the person walks right and leaves the view for the last frames (ground truth empty there).
- ``dog_and_person``: both cut-outs in one video (the person in front), so an expression's ground truth differs
  from the video's foreground; one expression refers to both objects.

The ``vtest.avi`` background shows real pedestrians that are not annotated, so expressions name the cut-out
person by his blue jacket; an answer that picks a pedestrian is a wrong answer, as it would be in ReVOS.

The frames are written as JPEG (lossy) while the masks are exact: a model that reads the JPEGs sees slightly
different colours from the composite, never different geometry.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .dataset import TYPE_NAMES

if TYPE_CHECKING:
    from ..data.composite import CompositeClip


@dataclass
class MiniExpression:
    text: str
    obj_ids: list[int]  # objects of the video the expression refers to; empty for a no-target expression
    type_id: int  # 0 referring, 1 reasoning, 2 no-target


@dataclass
class MiniVideo:
    name: str
    frames: list[np.ndarray]  # RGB uint8 HxWx3, all the same size
    objects: dict[int, list[np.ndarray]]  # obj_id -> bool HxW mask per frame (all False = absent)
    expressions: list[MiniExpression]
    frame_names: list[str] | None = None  # default: "00000", "00001", ...
    info: dict = field(default_factory=dict)  # free-form notes written nowhere (for the caller's tests)


def encode_rle(mask: np.ndarray) -> dict | None:
    """COCO RLE ``{"size": [H, W], "counts": str}`` of a bool mask, or None for an empty mask."""
    from pycocotools import mask as coco_mask

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _validate(video: MiniVideo) -> tuple[int, int]:
    if not video.frames:
        raise ValueError(f"video {video.name!r} has no frames")
    height, width = video.frames[0].shape[:2]
    for i, frame in enumerate(video.frames):
        if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"video {video.name!r} frame {i}: {frame.shape} {frame.dtype}, expected ({height}, {width}, 3) uint8"
            )
    if video.frame_names is not None and len(video.frame_names) != len(video.frames):
        raise ValueError(f"video {video.name!r}: {len(video.frame_names)} frame names for {len(video.frames)} frames")
    for obj_id, masks in video.objects.items():
        if len(masks) != len(video.frames):
            raise ValueError(f"video {video.name!r} object {obj_id}: {len(masks)} masks for {len(video.frames)} frames")
        for i, mask in enumerate(masks):
            if np.shape(mask) != (height, width):
                raise ValueError(
                    f"video {video.name!r} object {obj_id} frame {i}: mask {np.shape(mask)} vs frame {(height, width)}"
                )
    for exp in video.expressions:
        if exp.type_id not in TYPE_NAMES:
            raise ValueError(f"video {video.name!r}: type_id {exp.type_id} is not 0, 1 or 2")
        unknown = [o for o in exp.obj_ids if o not in video.objects]
        if unknown:
            raise ValueError(f"video {video.name!r}: expression {exp.text!r} names unknown objects {unknown}")
    return height, width


def write_revos_folder(
    root: str | os.PathLike, videos: Sequence[MiniVideo], split: str = "valid", jpeg_quality: int = 95
) -> pathlib.Path:
    """Write ``videos`` as a ReVOS-format folder at ``root`` (created; existing files are overwritten).

    Anno ids are assigned per (video, object) in order, starting at 0; expression ids are "0", "1", ... per
    video. Returns ``root``.
    """
    root = pathlib.Path(root)
    names = [v.name for v in videos]
    if len(set(names)) != len(names):
        raise ValueError(f"video names must be unique, got {names}")
    meta: dict = {"videos": {}}
    mask_dict: dict[str, list] = {}
    foreground: dict[str, dict] = {}
    next_anno = 0
    for vid_id, video in enumerate(videos):
        height, width = _validate(video)
        frame_names = video.frame_names or [f"{i:05d}" for i in range(len(video.frames))]
        image_dir = root / "JPEGImages" / video.name
        image_dir.mkdir(parents=True, exist_ok=True)
        for name, frame in zip(frame_names, video.frames):
            path = image_dir / f"{name}.jpg"
            if not cv2.imwrite(
                str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
            ):
                raise OSError(f"could not write {path}")
        anno_of: dict[int, int] = {}
        for obj_id, masks in video.objects.items():
            anno_of[obj_id] = next_anno
            mask_dict[str(next_anno)] = [encode_rle(m) for m in masks]
            next_anno += 1
        union = [np.zeros((height, width), bool) for _ in video.frames]
        for masks in video.objects.values():
            for t, mask in enumerate(masks):
                union[t] |= np.asarray(mask, bool)
        foreground[video.name] = {
            "masks_rle": [encode_rle(m) for m in union],
            "foreground_ratio": [float(m.mean()) for m in union],
        }
        meta["videos"][video.name] = {
            "vid_id": vid_id,
            "height": height,
            "width": width,
            "frames": list(frame_names),
            "expressions": {
                str(i): {
                    "exp": exp.text,
                    "obj_id": list(exp.obj_ids),
                    "anno_id": [anno_of[o] for o in exp.obj_ids],
                    "type_id": exp.type_id,
                }
                for i, exp in enumerate(video.expressions)
            },
        }
    root.mkdir(parents=True, exist_ok=True)
    (root / f"meta_expressions_{split}_.json").write_text(json.dumps(meta, indent=1))
    (root / "mask_dict.json").write_text(json.dumps(mask_dict))
    (root / "mask_dict_foreground.json").write_text(json.dumps(foreground))
    return root


def _paste_over(base_frames: list[np.ndarray], cutout: str, centers: np.ndarray, scale: float) -> tuple[list, list]:
    """Paste ``cutout`` onto each frame at ``centers`` (fractions), one single-frame composite per frame."""
    from ..data.composite import make_composite_clip

    frames, masks = [], []
    height, width = base_frames[0].shape[:2]
    for frame, center in zip(base_frames, centers):
        clip = make_composite_clip(
            n_frames=1,
            size=(width, height),
            path=(tuple(center),),
            scale=scale,
            cutout=cutout,
            background=frame,
            occluder_x=None,
        )
        frames.append(clip.frames[0])
        masks.append(clip.masks[0])
    return frames, masks


def _one_object_video(
    name: str, clip: CompositeClip, expressions: list[MiniExpression], frame_names: list[str]
) -> MiniVideo:
    """A video of one composited object (obj_id 0), noting how much of the object each frame shows."""
    return MiniVideo(
        name, clip.frames, {0: clip.masks}, expressions, frame_names, {"visible_fraction": clip.visible_fraction}
    )


def mini_videos(n_frames: int = 8, size: tuple[int, int] = (320, 240)) -> list[MiniVideo]:
    """The three composited videos of ``build_mini_dataset`` (see the module docstring), in memory."""
    from ..data.composite import make_composite_clip

    if n_frames < 4:
        raise ValueError(f"n_frames must be >= 4 so the person can leave the view, got {n_frames}")
    # Frame names with a stride, as in ReVOS, so nothing may assume consecutive names.
    names = [f"{5 * i:05d}" for i in range(n_frames)]

    dog = make_composite_clip(n_frames, size, path=((0.2, 0.62), (0.8, 0.62)), scale=0.5, occluder_x=0.5)
    dog_walk = _one_object_video(
        "dog_walk",
        dog,
        [
            MiniExpression("the dog", [0], 0),
            MiniExpression("which animal here would fetch a ball thrown for it?", [0], 1),
            MiniExpression("the giraffe", [], 2),
        ],
        names,
    )

    # Leaves through the right edge: the last waypoint is far enough out that the final frames show nothing.
    person = make_composite_clip(
        n_frames,
        size,
        path=((0.35, 0.55), (1.45, 0.55)),
        scale=0.6,
        cutout="person",
        occluder_x=None,
        background_start=40,
    )
    person_exit = _one_object_video(
        "person_exit",
        person,
        [
            MiniExpression("the man in the blue jacket walking to the right", [0], 0),
            MiniExpression("who is leaving the scene?", [0], 1),
        ],
        names,
    )

    both = make_composite_clip(
        n_frames, size, path=((0.25, 0.6), (0.55, 0.6)), scale=0.45, occluder_x=None, background_start=80
    )
    person_centers = np.stack([np.linspace(0.8, 0.45, n_frames), np.full(n_frames, 0.55)], axis=1)
    frames, person_masks = _paste_over(both.frames, "person", person_centers, 0.6)
    dog_masks = [d & ~p for d, p in zip(both.masks, person_masks)]  # the person is pasted in front of the dog
    dog_and_person = MiniVideo(
        "dog_and_person",
        frames,
        {0: dog_masks, 1: person_masks},
        [
            MiniExpression("the dog", [0], 0),
            MiniExpression("the man in the blue jacket", [1], 0),
            MiniExpression("who could take this animal for a walk?", [1], 1),
            MiniExpression("the dog and the man in the blue jacket", [0, 1], 0),
            MiniExpression("the horse", [], 2),
        ],
        names,
    )
    return [dog_walk, person_exit, dog_and_person]


def build_mini_dataset(
    root: str | os.PathLike, n_frames: int = 8, size: tuple[int, int] = (320, 240), split: str = "valid"
) -> pathlib.Path:
    """Write the composited three-video mini dataset (10 expressions: 5 referring, 3 reasoning, 2 no-target) to
    ``root``. Needs the darknet photos and ``vtest.avi`` (see ``reasonvos_ros.data.media``); deterministic."""
    return write_revos_folder(root, mini_videos(n_frames, size), split)
