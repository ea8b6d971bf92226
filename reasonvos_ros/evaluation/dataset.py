"""Reading ReVOS-format datasets: expressions, frames and COCO-RLE ground-truth masks.

ReVOS is the reasoning video object segmentation benchmark released with VISA (Yan et al., "VISA: Reasoning Video
Object Segmentation via Large Language Models", ECCV 2024, arXiv:2407.11325). Its layout:

- ``JPEGImages/<video>/<frame>.jpg``;
- ``meta_expressions_<split>_.json``: ``{"videos": {<video>: {"frames": [...], "height", "width", "expressions":
  {<exp_id>: {"exp": text, "obj_id": [...], "anno_id": [...], "type_id": 0 referring / 1 reasoning / 2 no-target}}}}}``;
- ``mask_dict.json``: anno_id -> one COCO RLE (``{"size": [H, W], "counts": ...}``) or null per frame; the ground
  truth of an expression on a frame is the union of its anno_ids' masks;
- ``mask_dict_foreground.json`` (optional): video -> ``masks_rle``, the union of all annotated objects per frame
  (an RLE or a list of RLEs).

Scoring lives in ``scoring.py``, summaries and output files in ``report.py``.
"""

from __future__ import annotations

import json
import os
import pathlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..core.errors import ReasonVosError

TYPE_NAMES = {0: "referring", 1: "reasoning", 2: "no_target"}


class ReVOSFormatError(ReasonVosError):
    """A ReVOS-format file is missing, is not valid JSON or does not have the expected structure."""


class EvaluationError(ReasonVosError):
    """Predictions cannot be scored (missing or unreadable PNGs, sizes that differ from the ground truth)."""


@dataclass(frozen=True)
class Expression:
    video: str
    exp_id: str
    text: str
    anno_ids: tuple[str, ...]
    obj_ids: tuple[Any, ...]
    type_id: int

    @property
    def type_name(self) -> str:
        return TYPE_NAMES[self.type_id]


@dataclass(frozen=True)
class VideoInfo:
    name: str
    frames: tuple[str, ...]
    height: int | None
    width: int | None


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file, turning a missing file or a syntax error into a ``ReVOSFormatError`` naming it."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ReVOSFormatError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise ReVOSFormatError(f"{what} {path} is not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ReVOSFormatError(f"{what} {path} is not UTF-8 text: {exc}") from exc


def find_meta_file(root: str | os.PathLike, split: str = "valid") -> pathlib.Path:
    """The expressions file of ``split`` in a ReVOS folder (``meta_expressions_<split>_.json`` as released, or
    ``meta_expressions_<split>.json`` / ``meta_expressions.json``)."""
    root = pathlib.Path(root)
    candidates = [f"meta_expressions_{split}_.json", f"meta_expressions_{split}.json", "meta_expressions.json"]
    for name in candidates:
        if (root / name).is_file():
            return root / name
    raise ReVOSFormatError(f"no expressions file in {root}: looked for {', '.join(candidates)}")


class ReVOSDataset:
    """A ReVOS-format dataset: expressions, ground-truth masks and (when ``images_root`` exists) frames.

    The structure is validated on load: every expression's ``anno_id`` must exist in the mask dict with one
    entry per frame of its video, and the foreground dict (when given) must cover every video.
    """

    def __init__(
        self,
        meta_path: str | os.PathLike,
        mask_dict_path: str | os.PathLike,
        foreground_path: str | os.PathLike | None = None,
        images_root: str | os.PathLike | None = None,
    ) -> None:
        self.meta_path = pathlib.Path(meta_path)
        self.images_root = pathlib.Path(images_root) if images_root is not None else None
        meta = read_json(meta_path, "expressions file")
        self.mask_dict: dict[str, list] = read_json(mask_dict_path, "mask dict")
        self.foreground: dict[str, dict] | None = (
            read_json(foreground_path, "foreground mask dict") if foreground_path is not None else None
        )
        self.videos: dict[str, VideoInfo] = {}
        self._expressions: list[Expression] = []
        self._sizes: dict[str, tuple[int, int]] = {}
        self._parse(meta)

    @classmethod
    def from_folder(cls, root: str | os.PathLike, split: str = "valid") -> ReVOSDataset:
        """Open a ReVOS folder; ``mask_dict_foreground.json`` is optional (R then uses the union of the
        annotated objects of each video), ``JPEGImages/`` is only needed to read frames."""
        root = pathlib.Path(root)
        if not root.is_dir():
            raise ReVOSFormatError(f"dataset folder not found: {root}")
        foreground = root / "mask_dict_foreground.json"
        return cls(
            find_meta_file(root, split),
            root / "mask_dict.json",
            foreground if foreground.is_file() else None,
            root / "JPEGImages",
        )

    # -- parsing
    def _parse(self, meta: Any) -> None:
        where = str(self.meta_path)
        if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
            raise ReVOSFormatError(f"{where}: expected an object with a 'videos' object at the top level")
        if not isinstance(self.mask_dict, dict):
            raise ReVOSFormatError("mask dict: expected an object mapping anno_id to per-frame RLEs")
        for video, entry in meta["videos"].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("frames"), list):
                raise ReVOSFormatError(f"{where}: video {video!r} has no 'frames' list")
            frames = tuple(str(f) for f in entry["frames"])
            if not frames:
                raise ReVOSFormatError(f"{where}: video {video!r} has an empty 'frames' list")
            height, width = entry.get("height"), entry.get("width")
            self.videos[video] = VideoInfo(
                video, frames, int(height) if height is not None else None, int(width) if width is not None else None
            )
            expressions = entry.get("expressions", {})
            if not isinstance(expressions, dict):
                raise ReVOSFormatError(f"{where}: video {video!r}: 'expressions' must be an object")
            for exp_id, exp in expressions.items():
                self._expressions.append(self._parse_expression(video, str(exp_id), exp, len(frames)))
            if self.foreground is not None:
                self._check_foreground(video, len(frames))

    def _parse_expression(self, video: str, exp_id: str, exp: Any, n_frames: int) -> Expression:
        where = f"{self.meta_path}: video {video!r} expression {exp_id!r}"
        if not isinstance(exp, dict):
            raise ReVOSFormatError(f"{where}: expected an object")
        for key in ("exp", "anno_id", "type_id"):
            if key not in exp:
                raise ReVOSFormatError(f"{where}: missing {key!r}")
        type_id = exp["type_id"]
        if type_id not in TYPE_NAMES:
            raise ReVOSFormatError(f"{where}: type_id {type_id!r} is not 0 (referring), 1 (reasoning) or 2 (no-target)")
        anno_ids = exp["anno_id"]
        if not isinstance(anno_ids, list):
            raise ReVOSFormatError(f"{where}: 'anno_id' must be a list")
        for anno in anno_ids:
            per_frame = self.mask_dict.get(str(anno))
            if per_frame is None:
                raise ReVOSFormatError(f"{where}: anno_id {anno} is not in the mask dict")
            if not isinstance(per_frame, list) or len(per_frame) != n_frames:
                got = len(per_frame) if isinstance(per_frame, list) else type(per_frame).__name__
                raise ReVOSFormatError(f"{where}: mask dict entry {anno} has {got} frames, the video has {n_frames}")
        return Expression(
            video, exp_id, str(exp["exp"]), tuple(str(a) for a in anno_ids), tuple(exp.get("obj_id", ())), type_id
        )

    def _check_foreground(self, video: str, n_frames: int) -> None:
        entry = self.foreground.get(video)
        if not isinstance(entry, dict) or not isinstance(entry.get("masks_rle"), list):
            raise ReVOSFormatError(f"foreground mask dict: video {video!r} missing or without a 'masks_rle' list")
        if len(entry["masks_rle"]) != n_frames:
            raise ReVOSFormatError(
                f"foreground mask dict: video {video!r} has {len(entry['masks_rle'])} frames, the video has {n_frames}"
            )

    # -- access
    def expressions(self, types: Iterable[int] | None = None) -> list[Expression]:
        """All expressions in file order (optionally only some type_ids)."""
        if types is None:
            return list(self._expressions)
        wanted = set(types)
        return [e for e in self._expressions if e.type_id in wanted]

    def expression(self, video: str, exp_id: str) -> Expression:
        for exp in self._expressions:
            if exp.video == video and exp.exp_id == str(exp_id):
                return exp
        raise KeyError(f"no expression {exp_id!r} in video {video!r}")

    def frame_size(self, video: str) -> tuple[int, int]:
        """(H, W) from the meta file, else from the first ground-truth RLE of the video, else its first JPEG."""
        if video not in self._sizes:
            self._sizes[video] = self._find_frame_size(video)
        return self._sizes[video]

    def _find_frame_size(self, video: str) -> tuple[int, int]:
        info = self.videos[video]
        if info.height is not None and info.width is not None:
            return info.height, info.width
        for exp in self._expressions:
            if exp.video != video:
                continue
            for anno in exp.anno_ids:
                for rle in self.mask_dict[anno]:
                    size = _rle_size(rle)
                    if size is not None:
                        return size
        if self.foreground is not None:
            for rle in self.foreground[video]["masks_rle"]:
                size = _rle_size(rle)
                if size is not None:
                    return size
        return self.read_frame(video, 0).shape[:2]

    def frame_path(self, video: str, index: int) -> pathlib.Path:
        if self.images_root is None:
            raise ReVOSFormatError("this dataset was opened without an images folder (JPEGImages)")
        return self.images_root / video / f"{self.videos[video].frames[index]}.jpg"

    def read_frame(self, video: str, index: int) -> np.ndarray:
        """Frame ``index`` of ``video`` as HxWx3 RGB uint8."""
        path = self.frame_path(video, index)
        if not path.is_file():
            raise ReVOSFormatError(f"frame not found: {path}")
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ReVOSFormatError(f"cannot decode image {path}")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def read_frames(self, video: str) -> list[np.ndarray]:
        """All frames of ``video`` (RGB), checked against the annotated frame size."""
        frames = [self.read_frame(video, i) for i in range(len(self.videos[video].frames))]
        expected = self.frame_size(video)
        for i, frame in enumerate(frames):
            if frame.shape[:2] != tuple(expected):
                raise ReVOSFormatError(
                    f"{self.frame_path(video, i)} is {frame.shape[1]}x{frame.shape[0]} (WxH) but the annotations "
                    f"of video {video!r} are {expected[1]}x{expected[0]}"
                )
        return frames

    def gt_masks(self, exp: Expression) -> np.ndarray:
        """(T, H, W) bool: the union of the expression's objects per frame."""
        height, width = self.frame_size(exp.video)
        return decode_union(
            [[self.mask_dict[a][t] for a in exp.anno_ids] for t in range(len(self.videos[exp.video].frames))],
            (height, width),
            f"ground truth of {exp.video}/{exp.exp_id}",
        )

    def foreground_masks(self, video: str) -> np.ndarray:
        """(T, H, W) bool: all annotated objects of the video per frame."""
        height, width = self.frame_size(video)
        return decode_union(self.foreground_rles(video), (height, width), f"foreground of {video}")

    def foreground_rles(self, video: str) -> list[list]:
        """Per frame, the list of RLEs whose union is the video's foreground."""
        n_frames = len(self.videos[video].frames)
        if self.foreground is not None:
            return [_as_rle_list(r) for r in self.foreground[video]["masks_rle"]]
        annos = sorted({a for e in self._expressions if e.video == video for a in e.anno_ids})
        return [[self.mask_dict[a][t] for a in annos] for t in range(n_frames)]


def _rle_size(rle: Any) -> tuple[int, int] | None:
    if isinstance(rle, dict) and "size" in rle:
        return int(rle["size"][0]), int(rle["size"][1])
    if isinstance(rle, list):
        for item in rle:
            size = _rle_size(item)
            if size is not None:
                return size
    return None


def _as_rle_list(entry: Any) -> list:
    if entry is None:
        return []
    return list(entry) if isinstance(entry, list) else [entry]


def decode_rle(rle: dict, size: tuple[int, int], what: str) -> np.ndarray:
    """(H, W) uint8 0/1 mask of one COCO RLE, checked against the frame size ``size`` (``what`` names it in errors)."""
    from pycocotools import mask as coco_mask

    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ReVOSFormatError(f"{what}: expected a COCO RLE with 'size' and 'counts', got {type(rle).__name__}")
    if tuple(int(s) for s in rle["size"]) != tuple(size):
        raise EvaluationError(f"{what}: RLE size {list(rle['size'])} differs from the frame size {list(size)}")
    with warnings.catch_warnings():
        # pycocotools 2.0.x with numpy 2: harmless notice from its Cython decoder, once per call.
        warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy", DeprecationWarning)
        return coco_mask.decode(rle)


def decode_union(
    per_frame: Sequence[Sequence[Any]], size: tuple[int, int], what: str, counts: bool = False
) -> np.ndarray:
    """(T, H, W) union of the RLEs of each frame: bool, or with ``counts`` the uint8 number of objects per pixel
    summed in wrapping 8-bit arithmetic, as the official script does."""
    out = np.zeros((len(per_frame), *size), dtype=np.uint8 if counts else bool)
    for t, rles in enumerate(per_frame):
        for rle in rles:
            if rle:
                decoded = decode_rle(rle, size, f"{what}, frame {t}")
                if counts:
                    out[t] += decoded
                else:
                    np.logical_or(out[t], decoded, out=out[t])
    return out


__all__ = [
    "TYPE_NAMES",
    "EvaluationError",
    "Expression",
    "ReVOSDataset",
    "ReVOSFormatError",
    "VideoInfo",
    "decode_rle",
    "decode_union",
    "find_meta_file",
    "read_json",
]
