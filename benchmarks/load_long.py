"""Long load run of the perception node (issue 10): prints the figures for the closing note.

The scenario of test/test_reliability_load.py (which runs it for 60 s): the node in its own process with the
scripted test-double backends (segmenter 50 ms per call), a camera publishing 320x240 rgb8 at 60 Hz (best effort,
like a driver), and every second a burst of 20 instructions for three targets spread over half a second. The
node's resident memory is sampled every second. At the end: the last instruction of every target must win
(TRACKING with that instruction and its colour's exact mask), the reset service must answer, and the node must
be alive; results per 5 s bin show whether they kept flowing.

Run: source tools/env.sh && python benchmarks/load_long.py [--duration 600] [--camera-hz 60] [--burst 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "test")]  # the checkout and the test helpers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--camera-hz", type=float, default=60.0)
    parser.add_argument("--burst", type=int, default=20, help="instructions per second, in one burst")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before memory growth is measured")
    args = parser.parse_args()

    from rosutil import ros_domain_id
    from test_reliability_support import run_load

    print(f"ROS_DOMAIN_ID {ros_domain_id()}; running {args.duration:.0f} s of load...", flush=True)
    report = run_load(args.duration, camera_hz=args.camera_hz, burst_size=args.burst, warmup_s=args.warmup)
    print("\n=== load_long results ===")
    print(report.summary())
    step = max(1, len(report.rss_samples) // 20)
    series = ", ".join(f"{t:.0f}s:{rss:.0f}" for t, rss in report.rss_samples[::step])
    print(f"RSS samples (MB): {series}")
    growth = report.rss_end_mb - report.rss_after_warmup_mb
    ok = (
        report.node_alive
        and report.reset_answered
        and report.final_masks_correct
        and min(report.results_per_bin, default=0) > 0
    )
    print(f"verdict: {'OK' if ok else 'FAILED'} (growth after warm-up {growth:+.1f} MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
