"""XMem tracker speed per step and memory growth over a long stream, on the CPU by default.

Speed: the full-size published network (key_dim 64, value_dim 512, hidden_dim 64) with the golden deterministic
weights (seed 1; the numbers depend on shapes, not on the weights), loaded from a .pth file through
``XMemTracker`` exactly as the pipeline does, default inference settings (mem_every 5, top-k 30, long-term memory
on). Input: the golden case's real frames (vtest.avi, 240x320), repeated; ``size`` 480 makes the network input
480x640, ``size`` 240 keeps 240x320. One object is seeded on the first frame, then ``--steps`` steps are timed
(memory frames and plain frames are reported separately; memory frames also run the value encoder).

Memory growth: ``--stream-frames`` (1000) frames through a session of a *small* network (the tests' tiny widths,
same code) at 128x128 input (8x8 = 64 memory elements per frame), with mem_every 5, working memory 5..10 frames,
128 prototypes and max_long_term_elements 2000 (lowered from 10000 so that the bound is reached within 1000
frames). Prints the session's memory bytes, element counts and the process RSS every 100 frames. The same bound
for the full model at 480x640 with default settings is computed from the element sizes and printed too.

    python benchmarks/bench_xmem.py                       # CPU, 2 threads, 480 + 240, 1000-frame stream
    python benchmarks/bench_xmem.py --threads 1 --steps 4 --sizes 240
    python benchmarks/bench_xmem.py --device cuda --autocast --channels-last --steps 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reasonvos_ros.backends.xmem_tracker import XMemTracker
from reasonvos_ros.core.types import Frame
from reasonvos_ros.models.xmem.network import XMemConfig
from reasonvos_ros.models.xmem.tiny import TINY_CONFIG, write_golden_checkpoint

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_CASE = ROOT / "test" / "golden_data" / "cases" / "xmem_stream"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", type=int, default=[480, 240], help="shorter sides to time")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per size after the seed (default 6)")
    parser.add_argument("--stream-frames", type=int, default=1000, help="frames for the memory-growth run (0: skip)")
    parser.add_argument("--autocast", action="store_true", help="mixed precision (GPU)")
    parser.add_argument("--channels-last", action="store_true")
    return parser.parse_args()


def write_checkpoint(config: XMemConfig, directory: Path, seed: int) -> Path:
    return write_golden_checkpoint(directory / f"xmem_{config.value_dim}_{config.key_width}.pth", config, seed)


def golden_frames() -> tuple[np.ndarray, np.ndarray]:
    with np.load(GOLDEN_CASE / "inputs.npz") as data:
        return data["frames_rgb_uint8"], data["first_mask_index"]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(checkpoint: Path, args: argparse.Namespace) -> None:
    frames, index = golden_frames()
    print(f"== speed: full-size XMem, golden weights, {args.device}, {torch.get_num_threads()} threads")
    print(f"{'input':>10} {'network':>10} {'kind':>8} {'n':>3} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    for size in args.sizes:
        tracker = XMemTracker(
            checkpoint=str(checkpoint),
            device=args.device,
            size=size,
            autocast=args.autocast,
            channels_last=args.channels_last,
            feature_cache_size=0,
        )
        session = tracker.new_session()
        session.step(Frame(0, 0.0, frames[0]), {"person": index == 1})
        times = {"memory": [], "plain": []}
        for t in range(1, args.steps + 1):
            frame = Frame(t, 0.0, frames[t % len(frames)])
            memory_frames_before = len(session.core.memory_frames)
            sync(args.device)
            start = time.perf_counter()
            session.step(frame)
            sync(args.device)
            elapsed = (time.perf_counter() - start) * 1000
            kind = "memory" if len(session.core.memory_frames) > memory_frames_before else "plain"
            times[kind].append(elapsed)
        network = "x".join(map(str, session.geometry.padded_hw))
        for kind, values in times.items():
            if values:
                print(
                    f"{'240x320':>10} {network:>10} {kind:>8} {len(values):>3} {statistics.median(values):>10.0f} "
                    f"{min(values):>8.0f} {max(values):>8.0f}"
                )
        every = tracker.settings.mem_every
        all_times = times["memory"] + times["plain"]
        if times["memory"] and times["plain"]:
            mixed = (statistics.median(times["memory"]) + (every - 1) * statistics.median(times["plain"])) / every
            print(f"{'':>10} {network:>10} {'avg':>8} {'':>3} {mixed:>10.0f}   (mem_every {every} mix)")
        elif all_times:
            print(f"{'':>10} {network:>10} {'all':>8} {len(all_times):>3} {statistics.median(all_times):>10.0f}")
        del session, tracker


def element_bytes(config: XMemConfig, objects: int) -> int:
    # key + selection (key_dim each), shrinkage, use, life: float32; per object: value (value_dim) + validity (bool)
    return 4 * (2 * config.key_dim + 3) + objects * (4 * config.value_dim + 1)


def memory_growth(checkpoint: Path, args: argparse.Namespace) -> None:
    settings = {
        "mem_every": 5,
        "min_mid_term_frames": 5,
        "max_mid_term_frames": 10,
        "num_prototypes": 128,
        "max_long_term_elements": 2000,
    }
    tracker = XMemTracker(checkpoint=str(checkpoint), device=args.device, size=None, **settings)
    session = tracker.new_session()
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    seed = np.zeros((128, 128), bool)
    seed[40:80, 40:80] = True
    print(f"\n== memory growth: small network (tiny widths), 128x128 frames, 1 object, {settings}")
    print(f"{'frame':>6} {'work elems':>10} {'long elems':>10} {'session KiB':>11} {'RSS MiB':>8} {'ms/step':>8}")
    start = time.perf_counter()
    for t in range(args.stream_frames):
        image = np.roll(background, shift=(t % 128, (3 * t) % 128), axis=(0, 1))
        session.step(Frame(t, 0.0, image), {"a": seed} if t == 0 else None)
        if t % 100 == 0 or t == args.stream_frames - 1:
            elapsed = (time.perf_counter() - start) * 1000 / (t + 1)
            memory = session.memory
            print(
                f"{t:>6} {memory.work_size:>10} {memory.long_size:>10} {session.memory_bytes() / 1024:>11.1f} "
                f"{rss_mib():>8.1f} {elapsed:>8.1f}"
            )
    memory = session.memory
    print(f"compressions: {memory.compress_count}, long-term elements removed by usage: {memory.removed_long_term}")
    full = XMemConfig()
    elements = 10 * (480 // 16) * (640 // 16) + 10000
    print(
        f"bound for the full model at 480x640, default settings (10 working frames x 1200 + 10000 long-term "
        f"elements): {elements * element_bytes(full, 1) / 2**20:.1f} MiB for 1 object, "
        f"+{elements * (4 * full.value_dim + 1) / 2**20:.1f} MiB per extra object"
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as directory:
        if args.sizes and args.steps:
            time_steps(write_checkpoint(XMemConfig(), Path(directory), seed=1), args)
        if args.stream_frames:
            memory_growth(write_checkpoint(TINY_CONFIG, Path(directory), seed=5), args)


if __name__ == "__main__":
    main()
