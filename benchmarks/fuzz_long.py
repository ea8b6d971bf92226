"""Long fuzzing run of the perception node's inputs (issues 10 and 14): prints the figures for the closing note.

Uses the in-process harness, strategies and contract checks of test/test_reliability_fuzz.py (the default suite
runs a few hundred of the same cases, with a fixed seed): a PerceptionNode with scripted backends is driven through
its own subscriptions and services with hypothesis-generated messages; after every event its /diagnostics
counters must obey the documented invariants (one rejection per image at most, exact counts where README fixes
the outcome, monotonic counters, no callback error, no worker lost) and every result published must obey the
result contract (header of an image sent and not rejected, send order, nothing while paused or for a reset
target, consistent masks and points). Cases are split over four node set-ups: raw colour images + controls (no
depth), compressed images + controls, colour/depth/CameraInfo sets + controls (use_depth), and sets mixed with
standalone depth/CameraInfo messages. After each batch the node must still track a clean target on clean frames.

A "case" is one hypothesis example: a list of 1-6 events (messages or service calls).

Run: source tools/env.sh && python benchmarks/fuzz_long.py [--cases 10000] [--batch 500] [--seed 1]
"""

from __future__ import annotations

import argparse
import collections
import resource
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "test")]  # the checkout and the test harness


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="hypothesis cases in all (default 10000)")
    parser.add_argument("--batch", type=int, default=500, help="cases per batch (a fresh random seed each)")
    parser.add_argument("--seed", type=int, default=1, help="first hypothesis seed")
    args = parser.parse_args()

    import test_reliability_fuzz as fuzz

    families = [  # (name, node parameters, strategy, share of the cases)
        ("raw colour images + controls", {"use_depth": False}, fuzz.COLOUR_NODE_EVENTS, 0.4),
        (
            "compressed images + controls",
            {"use_depth": False, "image_transport": "compressed"},
            fuzz.COMPRESSED_NODE_EVENTS,
            0.1,
        ),
        ("colour/depth/camera_info sets + controls", {"use_depth": True}, fuzz.DEPTH_NODE_EVENTS, 0.3),
        ("sets + standalone depth/camera_info + controls", {"use_depth": True}, fuzz.DEPTH_NODE_MIXED_EVENTS, 0.2),
    ]
    kinds: collections.Counter = collections.Counter()
    extremes: collections.Counter = collections.Counter()
    original_apply = fuzz.InProcessNode.apply

    def counting_apply(self, event):
        kinds[event.kind] += 1
        image = event.image if event.kind in ("image", "frameset") else None
        if image is not None:
            if image.encoding not in fuzz.KNOWN_BPP:
                extremes["unknown encoding"] += 1
            if image.height == 0 or image.width == 0:
                extremes["zero-size image"] += 1
            if image.height * image.width >= 6_000_000 and image.data_len == image.step * image.height:
                extremes["image >= 6 MP with full data"] += 1
            if max(image.height, image.width) > 65500:  # more than a JPEG side (the window stores JPEG)
                extremes["side > 65500 px"] += 1
            if image.data_len != image.step * image.height or image.step < image.width:
                extremes["step/size mismatch"] += 1
        if event.kind in ("instruction", "text") and event.text == "MEGABYTE":
            extremes["1 MB instruction"] += 1
        if event.stamp is not None:
            extremes[f"stamp {event.stamp.kind}"] += 1
        return original_apply(self, event)

    fuzz.InProcessNode.apply = counting_apply

    started = time.monotonic()
    total_cases = failures = 0
    seed = args.seed
    summary = []
    for name, params, strategy, share in families:
        target = round(args.cases * share)
        harness = fuzz.InProcessNode(**params)
        family_start, family_cases = time.monotonic(), 0
        try:
            while family_cases < target:
                batch = min(args.batch, target - family_cases)
                try:
                    family_cases += fuzz.fuzz_events(harness, strategy, batch, seed=seed)
                except Exception:
                    failures += 1
                    print(f"FAILURE in '{name}' (seed {seed}):\n{traceback.format_exc()[-6000:]}", flush=True)
                    family_cases += batch
                seed += 1
                harness.check_still_tracks()
                print(
                    f"  {name}: {family_cases}/{target} cases, {harness.events} events, "
                    f"{time.monotonic() - family_start:.0f} s",
                    flush=True,
                )
            values = harness.snapshot()
            rejected = {k[len("rejected_") :]: int(v) for k, v in values.items() if k.startswith("rejected_")}
            summary.append(
                f"{name}: {family_cases} cases, {harness.events} events in {time.monotonic() - family_start:.0f} s; "
                f"rejections counted {rejected} (total {values['frames_rejected']}), time jumps back "
                f"{values['time_jumps_back']}, inputs judged exactly by the contract {harness.classified}, "
                f"result arrays checked {harness.checker.results_checked}, engine threads "
                f"{values['engine_threads']} (at start {harness.engine_threads})"
            )
        finally:
            harness.close()
        total_cases += family_cases
    elapsed = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("\n=== fuzz_long results ===")
    print(
        f"cases: {total_cases} in {elapsed:.0f} s ({total_cases / elapsed:.1f} cases/s); failures (crash or broken "
        f"invariant): {failures}"
    )
    for line in summary:
        print(line)
    print("events by kind: " + ", ".join(f"{k}={v}" for k, v in kinds.most_common()))
    print("extreme inputs: " + ", ".join(f"{k}={v}" for k, v in sorted(extremes.items())))
    print(f"peak RSS of the fuzzing process (node included): {peak_mb:.0f} MB")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
