"""ReVOS-format dataset reader and the evaluator of a prediction folder (J, F, J&F, A, R per expression type).

Format (see ``/work/shared/spec/revos-eval.md``): ``JPEGImages/<video>/<frame>.jpg``, ``meta_expressions*.json``
(videos -> frames, expressions with ``anno_id`` and ``type_id`` 0 referring / 1 reasoning / 2 no-target),
``mask_dict.json`` (anno_id -> one COCO RLE or null per frame) and ``mask_dict_foreground.json`` (video ->
``masks_rle``: the all-object union per frame, an RLE or a list of RLEs). Predictions are
``<root>/<video>/<exp_id>/<frame>.png``; any non-zero pixel is foreground.

Two scoring modes:

- default: binary masks throughout (ground truth = union of the expression's objects, foreground = union of the
  video's objects), R on 0/1 masks, no intermediate rounding.
- ``authors_compat=True``: the arithmetic of the official ``tools/eval_revos.py`` (VISA), for comparing with
  numbers produced by that script: predictions are used as read (0/255), ground truths and foregrounds are 8-bit
  object counts, R is computed in wrapping 8-bit arithmetic, and each expression's figures are rounded to two
  decimals (percent) before the type means.

In both modes a type's J&F is ``(J + F) / 2`` of its means, "overall" is the plain mean of the referring and the
reasoning figures, and no-target expressions are reported separately, never in "overall".
"""

from __future__ import annotations

import csv
import json
import math
import os
import pathlib
import sys
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import cv2
import numpy as np

from ..core.errors import ReasonVosError
from . import metrics

TYPE_NAMES = {0: "referring", 1: "reasoning", 2: "no_target"}
MISSING_POLICIES = ("error", "empty", "zero")


class ReVOSFormatError(ReasonVosError):
    """A ReVOS-format file is missing, is not valid JSON or does not have the expected structure."""


class EvaluationError(ReasonVosError):
    """Predictions cannot be scored (missing or unreadable PNGs, sizes that differ from the ground truth)."""


# ---------------------------------------------------------------------------------------------------------- reader


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
        return _decode_union(
            [[self.mask_dict[a][t] for a in exp.anno_ids] for t in range(len(self.videos[exp.video].frames))],
            (height, width),
            f"ground truth of {exp.video}/{exp.exp_id}",
        )

    def foreground_masks(self, video: str) -> np.ndarray:
        """(T, H, W) bool: all annotated objects of the video per frame."""
        height, width = self.frame_size(video)
        return _decode_union(self.foreground_rles(video), (height, width), f"foreground of {video}")

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


def _decode_rle(rle: dict, size: tuple[int, int], what: str) -> np.ndarray:
    from pycocotools import mask as coco_mask

    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ReVOSFormatError(f"{what}: expected a COCO RLE with 'size' and 'counts', got {type(rle).__name__}")
    if tuple(int(s) for s in rle["size"]) != tuple(size):
        raise EvaluationError(f"{what}: RLE size {list(rle['size'])} differs from the frame size {list(size)}")
    with warnings.catch_warnings():
        # pycocotools 2.0.x with numpy 2: harmless notice from its Cython decoder, once per call.
        warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy", DeprecationWarning)
        return coco_mask.decode(rle)


def _decode_union(
    per_frame: Sequence[Sequence[Any]], size: tuple[int, int], what: str, counts: bool = False
) -> np.ndarray:
    """(T, H, W) union of the RLEs of each frame: bool, or with ``counts`` the uint8 number of objects per pixel
    summed in wrapping 8-bit arithmetic, as the official script does."""
    out = np.zeros((len(per_frame), *size), dtype=np.uint8 if counts else bool)
    for t, rles in enumerate(per_frame):
        for rle in rles:
            if rle:
                decoded = _decode_rle(rle, size, f"{what}, frame {t}")
                if counts:
                    out[t] += decoded
                else:
                    np.logical_or(out[t], decoded, out=out[t])
    return out


# ------------------------------------------------------------------------------------------------------- evaluator


@dataclass
class ExpressionScore:
    """Per-expression means over frames, as fractions in [0, 1] (``j``, ``f``, ``a``, ``r``)."""

    video: str
    exp_id: str
    type_id: int
    text: str
    n_frames: int
    j: float
    f: float
    a: float
    r: float
    note: str = ""


@dataclass
class EvaluationReport:
    per_expression: list[ExpressionScore]
    summary: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.summary, "settings": self.settings}


@dataclass
class _Task:
    video: str
    exp_id: str
    type_id: int
    text: str
    frames: tuple[str, ...]
    size: tuple[int, int]
    gt_rles: list[list]
    foreground_rles: list[list]
    pred_dir: str
    authors_compat: bool
    missing: str


def _read_prediction(path: pathlib.Path, size: tuple[int, int], authors_compat: bool) -> np.ndarray:
    if authors_compat:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    else:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise EvaluationError(f"cannot read prediction {path} (not an image OpenCV can decode)")
    if image.shape[:2] != tuple(size):
        raise EvaluationError(
            f"prediction {path} is {image.shape[1]}x{image.shape[0]} (WxH) but the ground truth is {size[1]}x{size[0]}"
        )
    if authors_compat:
        return image
    if image.ndim == 3:
        return np.any(image != 0, axis=2)
    return image != 0


def _score_task(task: _Task) -> ExpressionScore:
    pred_dir = pathlib.Path(task.pred_dir)
    paths = [pred_dir / f"{frame}.png" for frame in task.frames]
    missing = [p for p in paths if not p.is_file()]
    note = ""
    if missing:
        if task.missing == "error":
            raise EvaluationError(f"missing prediction {missing[0]} ({len(missing)} of {len(paths)} frames missing)")
        if task.missing == "zero":
            return ExpressionScore(
                task.video, task.exp_id, task.type_id, task.text, len(paths), 0.0, 0.0, 0.0, 0.0,
                f"{len(missing)} prediction frames missing: scored 0",
            )  # fmt: skip
        note = f"{len(missing)} prediction frames missing: scored as empty"
    what = f"{task.video}/{task.exp_id}"
    gt_all = _decode_union(task.gt_rles, task.size, f"ground truth of {what}", task.authors_compat)
    fg_all = _decode_union(task.foreground_rles, task.size, f"foreground of {task.video}", task.authors_compat)
    j, f, a, r = [], [], [], []
    for t, path in enumerate(paths):
        if path.is_file():
            pred = _read_prediction(path, task.size, task.authors_compat)
        else:
            pred = np.zeros(task.size, dtype=np.uint8 if task.authors_compat else bool)
        gt, fg = gt_all[t], fg_all[t]
        if task.authors_compat:
            r.append(metrics.robustness_authors_uint8(gt, pred, fg))
        else:
            r.append(metrics.robustness(gt, pred, fg))
        a.append(metrics.pixel_accuracy(gt, pred))
        j.append(metrics.region_similarity(gt, pred))
        f.append(metrics.boundary_f_measure(gt, pred))
    return ExpressionScore(
        task.video, task.exp_id, task.type_id, task.text, len(paths),
        float(np.mean(j)), float(np.mean(f)), float(np.mean(a)), float(np.mean(r)), note,
    )  # fmt: skip


def _percent(score: ExpressionScore, authors_compat: bool) -> dict[str, float]:
    values = {
        "J": 100 * score.j,
        "F": 100 * score.f,
        "JF": 100 * (score.j + score.f) / 2,
        "A": 100 * score.a,
        "R": 100 * score.r,
    }
    if authors_compat:
        values = {k: round(v, 2) for k, v in values.items()}
    return values


def summarize(scores: Sequence[ExpressionScore], authors_compat: bool = False) -> dict[str, Any]:
    """Type means (percent) of per-expression scores: referring, reasoning, overall (their plain mean), no_target.

    A type without expressions reports ``None`` figures; "overall" is ``None`` unless both referring and
    reasoning expressions were scored.
    """
    summary: dict[str, Any] = {}
    for type_id, name in TYPE_NAMES.items():
        rows = [_percent(s, authors_compat) for s in scores if s.type_id == type_id]
        if not rows:
            summary[name] = {"J": None, "F": None, "JF": None, "A": None, "R": None, "count": 0}
            continue
        means = {k: float(np.mean(np.array([row[k] for row in rows]))) for k in ("J", "F", "A", "R")}
        means["JF"] = (means["J"] + means["F"]) / 2
        summary[name] = {**means, "count": len(rows)}
    referring, reasoning = summary["referring"], summary["reasoning"]
    if referring["count"] and reasoning["count"]:
        overall = {k: (referring[k] + reasoning[k]) / 2 for k in ("J", "F", "JF", "A", "R")}
    else:
        overall = dict.fromkeys(("J", "F", "JF", "A", "R"))
    summary["overall"] = {**overall, "count": referring["count"] + reasoning["count"]}
    return summary


def evaluate_predictions(
    dataset: ReVOSDataset,
    pred_root: str | os.PathLike,
    *,
    expressions: Sequence[Expression] | None = None,
    workers: int = 2,
    authors_compat: bool = False,
    missing: str = "error",
    progress: bool = True,
) -> EvaluationReport:
    """Score ``<pred_root>/<video>/<exp_id>/<frame>.png`` against the dataset's ground truth.

    ``expressions`` restricts scoring to a subset (default: all). ``missing`` decides what a missing PNG does:
    "error" (default) raises naming the file, "empty" scores it as an empty mask, "zero" scores the whole
    expression 0 (what the official script does when a video folder is missing). ``workers`` > 1 scores
    expressions in that many "spawn" processes (a script calling this must keep its top-level code under
    ``if __name__ == "__main__":``, as multiprocessing requires).
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    pred_root = pathlib.Path(pred_root)
    if not pred_root.is_dir():
        raise EvaluationError(f"prediction folder not found: {pred_root}")
    chosen = dataset.expressions() if expressions is None else list(expressions)
    if missing == "error":
        _check_predictions_exist(dataset, pred_root, chosen)
    tasks = [_make_task(dataset, pred_root, exp, authors_compat, missing) for exp in chosen]
    scores = _run_tasks(tasks, workers, progress)
    order = {(e.video, e.exp_id): i for i, e in enumerate(chosen)}
    scores.sort(key=lambda s: order[(s.video, s.exp_id)])
    settings = {
        "mode": "authors_compat" if authors_compat else "binary",
        "missing": missing,
        "foreground": "mask_dict_foreground" if dataset.foreground is not None else "union of annotated objects",
        "bound_th": metrics.BOUND_TH,
        "expressions": len(scores),
        "prediction_root": str(pred_root),
    }
    return EvaluationReport(scores, summarize(scores, authors_compat), settings)


def _check_predictions_exist(dataset: ReVOSDataset, pred_root: pathlib.Path, chosen: Sequence[Expression]) -> None:
    missing: list[pathlib.Path] = []
    for exp in chosen:
        folder = pred_root / exp.video / exp.exp_id
        missing.extend(
            folder / f"{frame}.png"
            for frame in dataset.videos[exp.video].frames
            if not (folder / f"{frame}.png").is_file()
        )
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        raise EvaluationError(
            f"{len(missing)} prediction PNGs are missing under {pred_root} (e.g. {shown}); "
            "score them as empty masks or as 0 with missing='empty' / 'zero' (CLI: --missing)"
        )


def _make_task(
    dataset: ReVOSDataset, pred_root: pathlib.Path, exp: Expression, authors_compat: bool, missing: str
) -> _Task:
    info = dataset.videos[exp.video]
    return _Task(
        exp.video,
        exp.exp_id,
        exp.type_id,
        exp.text,
        info.frames,
        tuple(dataset.frame_size(exp.video)),
        [[dataset.mask_dict[a][t] for a in exp.anno_ids] for t in range(len(info.frames))],
        dataset.foreground_rles(exp.video),
        str(pred_root / exp.video / exp.exp_id),
        authors_compat,
        missing,
    )


def _run_tasks(tasks: list[_Task], workers: int, progress: bool) -> list[ExpressionScore]:
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="scoring expressions", unit="exp", disable=not progress, file=sys.stderr)
    scores: list[ExpressionScore] = []
    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                scores.append(_score_task(task))
                bar.update(1)
            return scores
        # spawn, not fork: the caller may hold threads (torch, ROS) that a forked child would inherit broken.
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_score_task, task) for task in tasks]
            try:
                for future in as_completed(futures):
                    scores.append(future.result())
                    bar.update(1)
            except BaseException:
                for pending in futures:
                    pending.cancel()
                raise
        return scores
    finally:
        bar.close()


def write_report(report: EvaluationReport, json_path: str | os.PathLike, csv_path: str | os.PathLike | None) -> None:
    """Summary JSON (type means in percent + settings) and per-expression CSV (percent)."""
    json_path = pathlib.Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(_json_safe(report.to_json()), indent=2) + "\n")
    if csv_path is None:
        return
    csv_path = pathlib.Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    compat = report.settings.get("mode") == "authors_compat"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "exp_id", "type_id", "type", "exp", "n_frames", "J", "F", "JF", "A", "R", "note"])
        for s in report.per_expression:
            p = _percent(s, compat)
            writer.writerow(
                [s.video, s.exp_id, s.type_id, TYPE_NAMES[s.type_id], s.text, s.n_frames]
                + [repr(p[k]) for k in ("J", "F", "JF", "A", "R")]
                + [s.note]
            )


def write_prediction_masks(
    pred_root: str | os.PathLike, video: str, exp_id: str, frame_names: Sequence[str], masks: Sequence[np.ndarray]
) -> pathlib.Path:
    """Write ``<pred_root>/<video>/<exp_id>/<frame>.png`` (0/255 grayscale, as VISA writes them)."""
    if len(frame_names) != len(masks):
        raise ValueError(f"{len(masks)} masks for {len(frame_names)} frames of {video}/{exp_id}")
    folder = pathlib.Path(pred_root) / video / str(exp_id)
    folder.mkdir(parents=True, exist_ok=True)
    for name, mask in zip(frame_names, masks):
        path = folder / f"{name}.png"
        if not cv2.imwrite(str(path), np.asarray(mask, bool).astype(np.uint8) * 255):
            raise OSError(f"could not write {path}")
    return folder


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_summary(summary: dict[str, Any]) -> str:
    """A small text table of the type means."""
    lines = [f"{'':<10} {'J':>7} {'F':>7} {'J&F':>7} {'R':>7} {'count':>6}"]
    for name in ("referring", "reasoning", "overall", "no_target"):
        row = summary[name]
        cells = " ".join(f"{row[k]:7.2f}" if row[k] is not None else f"{'-':>7}" for k in ("J", "F", "JF", "R"))
        lines.append(f"{name:<10} {cells} {row['count']:>6}")
    return "\n".join(lines)


__all__ = [
    "EvaluationError",
    "EvaluationReport",
    "Expression",
    "ExpressionScore",
    "ReVOSDataset",
    "ReVOSFormatError",
    "VideoInfo",
    "evaluate_predictions",
    "find_meta_file",
    "format_summary",
    "read_json",
    "summarize",
    "write_prediction_masks",
    "write_report",
]
