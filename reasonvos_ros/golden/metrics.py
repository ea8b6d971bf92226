"""Golden runner for ``metrics`` cases: the ReVOS metrics against the official VISA ``tools/metrics.py`` and
``tools/eval_revos.py``.

Per mask pair (``gt_XX``, ``pred_XX``, ``fg_XX`` in inputs.npz, 0/1): J and F with the prediction as the official
script reads it (0/255), R and A both with 0/255 predictions in the authors' 8-bit arithmetic and with 0/1
predictions, plus the boundary radius and boundary pixel counts. End to end: the evaluator runs over the case's
ReVOS-format folder in authors-compatible mode; its per-expression means must equal ``revos_per_expression`` and its
type means ``revos_summary`` (official key ``reason`` = our ``reasoning``). The binary (default) mode must give the
same J and F, which do not depend on the 0/255 arithmetic.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np

from ..evaluation import metrics
from ..evaluation.dataset import ReVOSDataset, find_meta_file
from ..evaluation.scoring import evaluate_predictions
from . import Check, GoldenCase, GoldenCaseError, agreement_check, max_abs_check

SUMMARY_KEYS = {"referring": "referring", "reason": "reasoning", "overall": "overall"}


def _tolerance(case: GoldenCase, key: str, default: float) -> float:
    text = str(case.spec.get("suggested_tolerances", {}).get(key, default))
    match = re.match(r"\s*([0-9.eE+-]+)", text)
    return float(match.group(1)) if match else default


def _pair_indices(case: GoldenCase) -> list[str]:
    suffixes = sorted(k[3:] for k in case.inputs if k.startswith("gt_"))
    if not suffixes:
        raise GoldenCaseError(f"{case.directory}/inputs.npz has no gt_XX arrays")
    for suffix in suffixes:
        for prefix in ("pred_", "fg_"):
            if prefix + suffix not in case.inputs:
                raise GoldenCaseError(f"{case.directory}/inputs.npz has gt_{suffix} but no {prefix}{suffix}")
    return suffixes


def _pair_checks(case: GoldenCase, tol: float) -> list[Check]:
    got: dict[str, list[float]] = {
        k: []
        for k in (
            "J",
            "F",
            "R_pred255",
            "R_pred01",
            "A_pred255",
            "A_pred01",
            "bound_pix",
            "n_gt_boundary",
            "n_pred_boundary",
        )
    }
    for suffix in _pair_indices(case):
        gt = case.inputs[f"gt_{suffix}"]
        pred01 = case.inputs[f"pred_{suffix}"]
        foreground = case.inputs[f"fg_{suffix}"]
        pred255 = pred01.astype(np.uint8) * np.uint8(255)
        f_value, radius, n_gt, n_pred = metrics.boundary_f_details(gt, pred255)
        got["J"].append(metrics.region_similarity(gt, pred255))
        got["F"].append(f_value)
        got["bound_pix"].append(radius)
        got["n_gt_boundary"].append(n_gt)
        got["n_pred_boundary"].append(n_pred)
        got["R_pred255"].append(metrics.robustness_authors_uint8(gt, pred255, foreground))
        got["A_pred255"].append(metrics.pixel_accuracy(gt, pred255))
        got["R_pred01"].append(metrics.robustness(gt, pred01, foreground))
        got["A_pred01"].append(metrics.pixel_accuracy(gt, pred01))
    checks = []
    for name, values in got.items():
        if name not in case.outputs:
            continue
        if name.startswith("n_") or name == "bound_pix":
            checks.append(agreement_check(f"pairs {name}", np.asarray(values), case.outputs[name], 1.0))
        else:
            checks.append(max_abs_check(f"pairs {name}", values, case.outputs[name], tol))
    missing = [k for k in ("J", "F", "R_pred01", "R_pred255") if k not in case.outputs]
    if missing:
        raise GoldenCaseError(f"{case.directory}/outputs.npz lacks {', '.join(missing)}")
    return checks


def _find_revos_folder(case: GoldenCase) -> pathlib.Path | None:
    for child in sorted(case.directory.iterdir()):
        if child.is_dir() and any(child.glob("meta_expressions*.json")):
            return child
    return None


def _prediction_root(folder: pathlib.Path) -> pathlib.Path:
    for candidate in (folder / "pred" / "Annotations", folder / "pred", folder / "Annotations"):
        if candidate.is_dir() and any(p.is_dir() for p in candidate.iterdir()):
            return candidate
    raise GoldenCaseError(f"{folder}: no prediction folder (pred/Annotations/<video>/<exp_id>/<frame>.png)")


def _revos_checks(case: GoldenCase, tol_exact: float, tol_aggregate: float) -> list[Check]:
    folder = _find_revos_folder(case)
    if folder is None:
        return []
    foreground = folder / "mask_dict_foreground.json"
    dataset = ReVOSDataset(
        find_meta_file(folder), folder / "mask_dict.json", foreground if foreground.is_file() else None
    )
    pred_root = _prediction_root(folder)
    compat = evaluate_predictions(dataset, pred_root, workers=2, authors_compat=True, progress=False)
    binary = evaluate_predictions(dataset, pred_root, workers=1, authors_compat=False, progress=False)
    checks: list[Check] = []
    expected_rows = case.spec.get("revos_per_expression")
    if expected_rows:
        by_key = {(s.video, s.exp_id): s for s in compat.per_expression}
        by_key_binary = {(s.video, s.exp_id): s for s in binary.per_expression}
        keys = [(row["video_name"], str(row["exp_id"])) for row in expected_rows]
        absent = [k for k in keys if k not in by_key]
        if absent:
            return [Check("revos expressions scored", float(len(absent)), 0, detail=f"not scored: {absent[:3]}")]
        for field_name, raw_key in (("j", "j_raw"), ("f", "f_raw"), ("a", "a_raw"), ("r", "r_raw")):
            got = [getattr(by_key[k], field_name) for k in keys]
            want = [row[raw_key] for row in expected_rows]
            checks.append(max_abs_check(f"revos per-expression {raw_key} (compat)", got, want, tol_exact))
        for field_name, raw_key in (("j", "j_raw"), ("f", "f_raw")):
            got = [getattr(by_key_binary[k], field_name) for k in keys]
            want = [row[raw_key] for row in expected_rows]
            checks.append(max_abs_check(f"revos per-expression {raw_key} (binary)", got, want, tol_exact))
        checks.append(
            agreement_check(
                "revos per-expression type_id",
                [by_key[k].type_id for k in keys],
                [row["type_id"] for row in expected_rows],
                1.0,
            )
        )
    expected_summary = case.spec.get("revos_summary") or case.spec.get("revos_official_script_json")
    if expected_summary:
        for official_name, our_name in SUMMARY_KEYS.items():
            if official_name not in expected_summary:
                continue
            metric_names = sorted(expected_summary[official_name])
            got = [compat.summary[our_name][m] for m in metric_names]
            want = [expected_summary[official_name][m] for m in metric_names]
            if any(v is None for v in got):
                checks.append(Check(f"revos summary {official_name}", float("inf"), tol_aggregate, detail="no value"))
                continue
            checks.append(
                max_abs_check(f"revos summary {official_name} ({'/'.join(metric_names)})", got, want, tol_aggregate)
            )
    return checks


def run(case: GoldenCase) -> list[Check]:
    tol_exact = _tolerance(case, "all", 1e-12)
    tol_aggregate = _tolerance(case, "aggregated", 1e-9)
    return _pair_checks(case, tol_exact) + _revos_checks(case, tol_exact, tol_aggregate)
