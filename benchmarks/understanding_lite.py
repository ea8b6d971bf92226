"""Instruction understanding of the lite backends on the labelled table of test/understanding_table.py.

Prints accuracy per kind of instruction, every confidently wrong answer, how often answers at each confidence
level are right (calibration), every error, and the time per instruction (first call, no cache).

    python benchmarks/understanding_lite.py [--all]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

from understanding_table import CONFIDENT, HELD_OUT, TABLE, evaluate

from reasonvos_ros.backends.lite.text_to_category import TextToCategory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--all", action="store_true", help="print every row, not only the errors")
    parser.add_argument("--held-out", action="store_true", help="the held-out table instead of the main one")
    args = parser.parse_args()
    start = time.perf_counter()
    matcher = TextToCategory()
    print(f"load: {time.perf_counter() - start:.2f} s")
    times = []

    def timed(text):
        begin = time.perf_counter()
        result = matcher.match(text)
        times.append(time.perf_counter() - begin)
        return result

    table = HELD_OUT if args.held_out else TABLE
    report = evaluate(timed, table)
    for instruction, expected, kind, result, right, wrong in report["rows"]:
        if args.all or not right:
            flag = "ok " if right else ("WRONG!" if wrong else "wrong")
            answer = "/".join(result.categories) or "REFUSED"
            print(
                f"{flag:6} [{kind:9}] {instruction!r}: {answer} ({result.confidence:.2f}, {result.method}); "
                f"expected {'/'.join(sorted(expected)) if expected else 'REFUSED'}"
            )
            print(f"         {result.understanding().target_phrase!r}: {result.explanation}")
    print(f"\n{len(table)} instructions: accuracy {report['accuracy']:.3f}")
    for kind, (right, total) in report["per_kind"].items():
        print(f"  {kind:9}: {right}/{total}")
    wrong = report["confidently_wrong"]
    oov_wrong = [row for row in wrong if row[1] is None]
    print(
        f"confidently wrong (an answer with confidence >= {CONFIDENT} that is wrong): {len(wrong)}; "
        f"of them on objects the detector cannot know: {len(oov_wrong)}"
    )
    print("answers by confidence: right/total")
    for level, (right, total) in report["answer_accuracy_by_confidence"].items():
        print(f"  {level:.2f}: {right}/{total}")
    print(f"time per instruction: median {statistics.median(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
