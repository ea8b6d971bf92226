"""Latency of SAM with VISA's text prompt (``SamTextPromptModel``) per stage, with random weights.

Configurations: ``tiny`` (the golden case's encoder: 64 wide, 2 blocks, 2 heads, global attention in block 1, at
the full 1024x1024 input with the standard prompt encoder / mask decoder) and ``vit_b`` (full-size SAM ViT-B,
93.7 M parameters); ``vit_l`` / ``vit_h`` on request. Stages: ``preprocess`` (Pillow-exact resize of a 480x640 RGB
frame, normalise, pad), ``encode_image``, ``decode`` (one text embedding -> low-res logits + IoU) and
``postprocess`` (logits back to 480x640). Weights are random (shapes are what matters for time) and nothing is
downloaded; they are drawn at a realistic scale (transformers' own initialisation would leave the encoder's
activations in denormal floats, which are many times slower on a CPU). Prints a table: median and min wall time and
median process CPU time per call over ``--repeats`` runs after one warm-up (the ViT encoders of ``vit_*`` get
``--encoder-repeats`` runs and no warm-up, since one call takes tens of seconds on a CPU).

    python benchmarks/bench_sam.py                    # tiny + ViT-B, CPU, 2 threads
    python benchmarks/bench_sam.py --threads 1 --configs tiny vit_b
    python benchmarks/bench_sam.py --configs vit_h --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reasonvos_ros.models.sam import SamConfig, SamTextPromptModel, random_original_state_dict
from reasonvos_ros.models.visa.tiny import TINY_SAM


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "vit_b"], choices=["tiny", "vit_b", "vit_l", "vit_h"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per stage after a warm-up (default 5)")
    parser.add_argument("--encoder-repeats", type=int, default=1, help="timed ViT-B/L/H encoder runs (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention implementation")
    parser.add_argument("--frame", default="480x640", help="frame size HxW (default 480x640)")
    return parser.parse_args()


def timed(
    call: Callable[[], object], repeats: int, warmup: bool, device: str
) -> tuple[list[tuple[float, float]], object]:
    """(wall, process CPU) seconds of ``repeats`` calls (after an optional warm-up call) and the last result.

    CPU time is reported too because on a shared machine wall time includes waiting for a core; with N threads
    the CPU time of a call can reach N times its wall time."""

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    if warmup:
        call()
        sync()
    times = []
    result = None
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = call()
        sync()
        times.append((time.perf_counter() - start, time.process_time() - cpu_start))
    return times, result


def summary(times: list[tuple[float, float]]) -> tuple[float, float, float, int]:
    """(median wall, min wall, median CPU, runs)."""
    walls = [wall for wall, _ in times]
    return statistics.median(walls), min(walls), statistics.median(cpu for _, cpu in times), len(times)


def bench_config(name: str, args: argparse.Namespace, frame: np.ndarray) -> list[tuple]:
    """One row per stage: (config, parameters, stage, median s, min s, runs)."""
    config = SamConfig(**TINY_SAM) if name == "tiny" else SamConfig.preset(name)
    build_start = time.perf_counter()
    weights = random_original_state_dict(config)
    model = SamTextPromptModel.from_original_state_dict(weights, attn_implementation=args.attn).to(args.device)
    del weights
    build_s = time.perf_counter() - build_start
    params = sum(p.numel() for p in model.parameters())
    print(f"# built {name} ({params / 1e6:.1f} M parameters) in {build_s:.1f} s", file=sys.stderr)
    text = torch.randn(1, 1, config.prompt_embed_dim, device=args.device)
    height, width = frame.shape[:2]
    big = name != "tiny"
    rows = []
    with torch.no_grad():
        times, (pixel_values, input_size) = timed(lambda: model.preprocess(frame), args.repeats, True, args.device)
        rows.append((name, params, "preprocess", *summary(times)))
        encoder_repeats = args.encoder_repeats if big else args.repeats
        times, embeddings = timed(lambda: model.encode_image(pixel_values), encoder_repeats, not big, args.device)
        rows.append((name, params, "encode_image", *summary(times)))
        times, (low_res, _) = timed(lambda: model.decode(embeddings, text), args.repeats, True, args.device)
        rows.append((name, params, "decode", *summary(times)))
        times, _ = timed(
            lambda: model.postprocess_masks(low_res, input_size, (height, width)), args.repeats, True, args.device
        )
        rows.append((name, params, "postprocess", *summary(times)))
    return rows


def main() -> int:
    args = parse_args()
    if args.encoder_repeats < 1 or args.repeats < 1:
        raise SystemExit("--repeats and --encoder-repeats must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    height, width = (int(v) for v in args.frame.lower().split("x"))
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    rows = []
    for name in args.configs:
        rows.extend(bench_config(name, args, frame))

    device = args.device if args.device != "cpu" else f"cpu, {args.threads} thread(s)"
    print(f"SAM text-prompt latency ({device}, attention {args.attn}, frame {height}x{width}, random weights)")
    print(f"{'config':<8} {'params':>9} {'stage':<13} {'median ms':>11} {'min ms':>10} {'cpu ms':>10} {'runs':>5}")
    for name, params, stage, median, minimum, cpu, runs in rows:
        print(
            f"{name:<8} {params / 1e6:>8.1f}M {stage:<13} {median * 1e3:>11.1f} {minimum * 1e3:>10.1f} "
            f"{cpu * 1e3:>10.1f} {runs:>5}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
