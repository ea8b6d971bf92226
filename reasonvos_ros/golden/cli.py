"""``reasonvos golden CASE_DIR [CASE_DIR ...]``: run golden cases, print max errors, exit 1 on any mismatch."""

from __future__ import annotations

import argparse
import sys
import time

from . import GoldenCaseError, load_weights_module, run_case


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "cases", nargs="+", help="golden case directories (each with case.json, inputs.npz, outputs.npz)"
    )
    parser.add_argument(
        "--weights-module",
        default=None,
        help="path to a golden_weights.py defining golden_state_dict(named_shapes, seed) (default: the bundled copy)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        weights = load_weights_module(args.weights_module)
    except GoldenCaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failures = 0
    for directory in args.cases:
        start = time.perf_counter()
        print(f"== {directory}")
        try:
            checks = run_case(directory, weights)
        except GoldenCaseError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failures += 1
            continue
        for check in checks:
            print("  " + check.line())
        bad = [c for c in checks if not c.passed]
        if not checks:
            print("  FAIL: the runner produced no checks")
            failures += 1
        elif bad:
            failures += 1
        print(
            f"  {'PASS' if checks and not bad else 'MISMATCH'} ({len(checks) - len(bad)}/{len(checks)} checks, {time.perf_counter() - start:.1f} s)"
        )
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reasonvos golden", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
