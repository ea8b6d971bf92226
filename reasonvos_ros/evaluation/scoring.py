"""Scoring a prediction folder against a ReVOS dataset: J, F, A and R per expression, in parallel processes.

Predictions are ``<root>/<video>/<exp_id>/<frame>.png``; any non-zero pixel is foreground. Two modes:

- default: binary masks throughout (ground truth = union of the expression's objects, foreground = union of the
  video's objects), R on 0/1 masks, no intermediate rounding.
- ``authors_compat=True``: the arithmetic of VISA's official ``tools/eval_revos.py``, for comparing with numbers
  produced by that script: predictions are used as read (0/255), ground truths and foregrounds are 8-bit object
  counts, R is computed in wrapping 8-bit arithmetic, and each expression's figures are rounded to two decimals
  (percent) before the type means (``report.summarize``).
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context

import cv2
import numpy as np

from . import metrics
from .dataset import EvaluationError, Expression, ReVOSDataset, decode_union
from .report import EvaluationReport, ExpressionScore, summarize

MISSING_POLICIES = ("error", "empty", "zero")


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
    gt_all = decode_union(task.gt_rles, task.size, f"ground truth of {what}", task.authors_compat)
    fg_all = decode_union(task.foreground_rles, task.size, f"foreground of {task.video}", task.authors_compat)
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


__all__ = ["MISSING_POLICIES", "evaluate_predictions"]
