"""Latency of the "vlm" frame sampler (TFS): K answers from one shared prefill versus the alternatives.

Compares the sampler's three generation modes on the same window and question:

* ``prefix_cache``          -- one batch-1 prefill, KV cache repeated K times, one generate call (the default);
* ``num_return_sequences``  -- one generate call with ``num_return_sequences=K`` (transformers encodes the video once
  but prefills K copies of the prompt);
* ``sequential``            -- K separate generate calls, each a full run (vision encoder + prefill + decode).

By default it builds a tiny random Qwen2-VL checkpoint (tiny.py) and runs on the CPU: a random model never stops
early, so every answer is ``max_new_tokens`` long (the worst case). Point ``--model-dir`` at a real Qwen2-VL /
Qwen2.5-VL checkpoint (and ``--device cuda``) to measure a real model. Prints one line per mode: median and min
wall time per ``sample()`` call over ``--repeats`` runs after one warm-up, with the prefill/generate split, and on
the CPU also the process CPU time (summed over threads; steadier than wall time on a shared machine, so the
speed-ups on the CPU are computed from it).

    python benchmarks/bench_tfs.py                      # tiny model, CPU, K = 10
    python benchmarks/bench_tfs.py --model-dir /models/Qwen2-VL-2B-Instruct --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reasonvos_ros.core.types import Frame
from reasonvos_ros.models.tfs.sampler import VideoLLMFrameSampler
from reasonvos_ros.models.tfs.tiny import build_tiny_video_llm

MODES = ("prefix_cache", "num_return_sequences", "sequential")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="a real Qwen2-VL/Qwen2.5-VL checkpoint (default: build a tiny one)")
    parser.add_argument("--family", default="qwen2_vl", choices=("qwen2_vl", "qwen2_5_vl"), help="tiny model family")
    parser.add_argument("--hidden-size", type=int, default=64, help="tiny model: language-model width")
    parser.add_argument("--layers", type=int, default=2, help="tiny model: language-model layers")
    parser.add_argument("--vision-depth", type=int, default=2, help="tiny model: vision-encoder blocks")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--window", type=int, default=30, help="frames in the window")
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--frame-size", default="240x320", help="HxW of the synthetic frames")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the dev machines are shared)")
    parser.add_argument("--modes", default=",".join(MODES))
    return parser.parse_args()


def main() -> None:
    import torch

    args = parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.frame_size.lower().split("x"))
    rng = np.random.default_rng(0)
    frames = [
        Frame(i, i / 10.0, image=rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for i in range(args.window)
    ]
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir or build_tiny_video_llm(
            Path(scratch) / "tiny",
            family=args.family,
            seed=0,
            hidden_size=args.hidden_size,
            num_layers=args.layers,
            vision_depth=args.vision_depth,
        )
        label = args.model_dir or (
            f"tiny random {args.family} (hidden {args.hidden_size}, {args.layers} layers, "
            f"vision depth {args.vision_depth})"
        )
        print(f"model: {label}; device {args.device}; torch threads {args.threads}")
        print(
            f"K={args.k}, window {args.window} frames of {height}x{width}, max_frames {args.max_frames}, "
            f"max_new_tokens {args.max_new_tokens}, repeats {args.repeats} (+1 warm-up)"
        )
        results = {}
        for mode in args.modes.split(","):
            sampler = VideoLLMFrameSampler(
                model_dir=model_dir,
                device=args.device,
                dtype=args.dtype,
                k=args.k,
                max_frames=args.max_frames,
                max_new_tokens=args.max_new_tokens,
                generation=mode,
                seed=0,
            )
            sampler.sample(frames, "the red ball")  # warm-up
            times, cpu_times, stats = [], [], []
            for _ in range(args.repeats):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                started, cpu_started = time.perf_counter(), time.process_time()
                choice = sampler.sample(frames, "the red ball")
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - started)
                cpu_times.append(time.process_time() - cpu_started)
                stats.append(choice.details["model"])
            results[mode] = statistics.median(cpu_times if args.device == "cpu" else times)
            split = ""
            if "prefill_s" in stats[-1]:
                prefill = statistics.median(s["prefill_s"] for s in stats)
                generate = statistics.median(s["generate_s"] for s in stats)
                split = f"  (prefill {prefill * 1000:.0f} ms, generate {generate * 1000:.0f} ms)"
            print(
                f"{mode:>22}: wall median {statistics.median(times) * 1000:6.0f} ms (min {min(times) * 1000:6.0f}), "
                f"process CPU median {statistics.median(cpu_times) * 1000:6.0f} ms, "
                f"prompt {stats[-1]['prompt_tokens']} tokens, generate calls {stats[-1]['generate_calls']}{split}"
            )
            sampler.release()
        if "prefix_cache" in results:
            for mode in results:
                if mode != "prefix_cache":
                    basis = "process CPU" if args.device == "cpu" else "wall"
                    ratio = results[mode] / results["prefix_cache"]
                    print(f"speed-up of prefix_cache over {mode} ({basis} time): {ratio:.2f}x")


if __name__ == "__main__":
    main()
