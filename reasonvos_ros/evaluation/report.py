"""Reporting ReVOS scores: per-expression results, type means in percent, the summary table and output files.

A type's J&F is ``(J + F) / 2`` of its means, "overall" is the plain mean of the referring and the reasoning
figures, and no-target expressions are reported separately, never in "overall". In authors-compatible mode each
expression's figures are rounded to two decimals (percent) before the type means, as VISA's ``tools/eval_revos.py``
does.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .dataset import TYPE_NAMES


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
    "EvaluationReport",
    "ExpressionScore",
    "format_summary",
    "summarize",
    "write_prediction_masks",
    "write_report",
]
