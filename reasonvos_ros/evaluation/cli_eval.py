"""``reasonvos eval DATASET``: run the pipeline over a ReVOS-format folder and score it (J, F, J&F, R).

For each chosen expression the video's frames go through ``core.offline.segment_clip`` with the configured backends
(one pipeline, built once); the masks are written as ``<out>/Annotations/<video>/<exp_id>/<frame>.png`` and then
scored by ``evaluation.scoring.evaluate_predictions``. Outputs under ``--out``: ``summary.json`` (referring /
reasoning / overall / no-target means in percent, plus settings), ``per_expression.csv`` and ``runs.csv`` (key
frame, status, reason, time per expression). ``--predictions DIR`` skips the pipeline and only scores an existing
prediction folder. ``--subset N`` keeps the first N expressions (file order) after the ``--videos``/``--types``
filters.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys
import time

import numpy as np

from ..core.errors import BackendFailure, ReasonVosError
from .cli_segment import InputError, add_backend_arguments, backends_from_args, check_masks
from .dataset import TYPE_NAMES, Expression, ReVOSDataset
from .report import format_summary, write_prediction_masks, write_report
from .scoring import evaluate_predictions

TYPE_IDS = {name: type_id for type_id, name in TYPE_NAMES.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument(
        "dataset", help="ReVOS-format folder (JPEGImages/, meta_expressions_<split>_.json, mask_dict.json, ...)"
    )
    parser.add_argument("--split", default="valid", help="which meta_expressions file (default: valid)")
    parser.add_argument(
        "--subset", type=int, default=0, metavar="N", help="only the first N chosen expressions (0 = all)"
    )
    parser.add_argument("--videos", default="", help="comma-separated video names to keep (default: all)")
    parser.add_argument(
        "--types", default="", help="comma-separated expression types to keep: referring, reasoning, no_target"
    )
    parser.add_argument("--out", help="output folder (default: ./reasonvos_eval_<dataset name>)")
    parser.add_argument(
        "--predictions", metavar="DIR", help="score this prediction folder instead of running the pipeline"
    )
    parser.add_argument("--workers", type=int, default=2, help="scoring processes (default 2)")
    parser.add_argument(
        "--authors-compat",
        action="store_true",
        help="score with the official eval_revos.py arithmetic (8-bit R on 0/255 masks, per-expression rounding)",
    )
    parser.add_argument(
        "--missing",
        choices=("error", "empty", "zero"),
        default="error",
        help="a missing prediction PNG: error (default), scored as an empty mask, or the expression scored 0",
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="when the pipeline fails on an expression, record it, write empty masks and continue",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_backend_arguments(parser)


def choose_expressions(dataset: ReVOSDataset, videos: str, types: str, subset: int) -> list[Expression]:
    chosen = dataset.expressions()
    if videos:
        wanted = [v.strip() for v in videos.split(",") if v.strip()]
        unknown = [v for v in wanted if v not in dataset.videos]
        if unknown:
            raise InputError(f"--videos: {', '.join(unknown)} not in the dataset ({len(dataset.videos)} videos)")
        chosen = [e for e in chosen if e.video in wanted]
    if types:
        names = [t.strip() for t in types.split(",") if t.strip()]
        unknown = [t for t in names if t not in TYPE_IDS]
        if unknown:
            raise InputError(f"--types: unknown {', '.join(unknown)}; expected {', '.join(TYPE_IDS)}")
        chosen = [e for e in chosen if e.type_id in {TYPE_IDS[t] for t in names}]
    if subset < 0:
        raise InputError(f"--subset must be >= 0, got {subset}")
    if subset:
        chosen = chosen[:subset]
    if not chosen:
        raise InputError("no expression left to evaluate after --videos/--types/--subset")
    return chosen


def run_pipeline(
    dataset: ReVOSDataset,
    expressions: list[Expression],
    backends: dict,
    pred_root: pathlib.Path,
    runs_path: pathlib.Path,
    keep_going: bool,
    progress: bool,
) -> dict:
    """Segment every expression, write its masks and one ``runs.csv`` row; returns run statistics."""
    from tqdm import tqdm

    from ..core.offline import build_pipeline, resolve_backends, segment_clip

    pipeline = build_pipeline(backends or None)
    failures = 0
    total_times = []
    frames_cache: tuple[str, list] | None = None
    with open(runs_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["video", "exp_id", "type", "exp", "status", "key_frame", "score", "reason", "total_s", "error"]
        )
        for exp in tqdm(expressions, desc="segmenting", unit="exp", disable=not progress, file=sys.stderr):
            names = dataset.videos[exp.video].frames
            if frames_cache is None or frames_cache[0] != exp.video:
                frames_cache = (exp.video, dataset.read_frames(exp.video))
            frames = frames_cache[1]
            start = time.perf_counter()
            try:
                result = segment_clip(frames, exp.text, pipeline=pipeline)
                masks = check_masks(result.masks, frames, f"{exp.video}/{exp.exp_id}")
            except RuntimeError as exc:  # BackendFailure, and e.g. out-of-memory errors of the model libraries
                if not keep_going:
                    raise BackendFailure(
                        f"the pipeline failed on {exp.video}/{exp.exp_id} ({exp.text!r}): {exc} "
                        "(--keep-going records such failures and continues)"
                    ) from exc
                failures += 1
                empty = [np.zeros(f.shape[:2], bool) for f in frames]
                write_prediction_masks(pred_root, exp.video, exp.exp_id, names, empty)
                writer.writerow([exp.video, exp.exp_id, exp.type_name, exp.text, "ERROR", "", "", "", "", str(exc)])
                handle.flush()
                continue
            elapsed = time.perf_counter() - start
            total_times.append(elapsed)
            write_prediction_masks(pred_root, exp.video, exp.exp_id, names, masks)
            key = names[result.key_index] if 0 <= result.key_index < len(names) else ""
            writer.writerow(
                [exp.video, exp.exp_id, exp.type_name, exp.text, result.status.name, key, f"{result.score:.4f}",
                 result.reason, f"{elapsed:.3f}", ""]
            )  # fmt: skip
            handle.flush()
    return {
        "backends": resolve_backends(backends),
        "expressions_run": len(expressions),
        "failed": failures,
        "mean_seconds_per_expression": (sum(total_times) / len(total_times)) if total_times else None,
    }


def run(args: argparse.Namespace) -> int:
    try:
        dataset = ReVOSDataset.from_folder(args.dataset, args.split)
        expressions = choose_expressions(dataset, args.videos, args.types, args.subset)
        out = pathlib.Path(args.out or f"reasonvos_eval_{pathlib.Path(args.dataset).resolve().name}")
        out.mkdir(parents=True, exist_ok=True)
        progress = not args.no_progress
        if args.predictions:
            pred_root = pathlib.Path(args.predictions)
            run_stats = {"predictions": str(pred_root)}
        else:
            pred_root = out / "Annotations"
            backends = backends_from_args(args)
            print(f"running the pipeline on {len(expressions)} expressions of {args.dataset}", file=sys.stderr)
            run_stats = run_pipeline(
                dataset, expressions, backends, pred_root, out / "runs.csv", args.keep_going, progress
            )
        report = evaluate_predictions(
            dataset,
            pred_root,
            expressions=expressions,
            workers=args.workers,
            authors_compat=args.authors_compat,
            missing=args.missing,
            progress=progress,
        )
        report.settings["run"] = run_stats
        write_report(report, out / "summary.json", out / "per_expression.csv")
    except (ReasonVosError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(report.summary))
    if run_stats.get("failed"):
        print(
            f"warning: the pipeline failed on {run_stats['failed']} expressions (scored as empty masks, see runs.csv)"
        )
    print(f"wrote {out / 'summary.json'}, {out / 'per_expression.csv'}" + ("" if args.predictions else ", runs.csv"))
    return 0


__all__ = ["add_arguments", "choose_expressions", "run", "run_pipeline"]
