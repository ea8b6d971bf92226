"""sam2_video tracker: per-step time at 480x640, peak memory, and memory flatness over a long stream.

Default (CPU): tiny random configurations of the SAM 2.1 and SAM 3 tracker families (about 1.3 M and 1.7 M
parameters, the tests' shapes) saved in the Hugging Face layout and loaded through the registry exactly as the node
does; frames are 480x640 RGB (a textured background with a moving square), one object seeded with a mask on the
first frame, ``--steps`` steps timed (preprocessing, model, masks back at 480x640 included). Prints median / p90 ms
per step, the session's stored bytes, the process's peak RSS.

``--stream-frames N`` (e.g. 10000): N frames through one session of the tiny SAM 2.1 model (64x64 model input,
64x64 frames so the run measures the tracker, not image decoding), RSS sampled every ``--rss-every`` frames; prints
the samples, the session's stored item counts and the least-squares RSS slope after the warm-up (bytes per frame).

``--uncapped`` runs the stream without pruning, to show the library's own growth for contrast.

``--full-size --device cuda``: full-size configurations (SAM 2.1 tiny / small / base+ / large, EdgeTAM if timm is
installed, SAM 3 tracker) built from their configs with random weights (speed and memory depend on shapes, not on
weights), bf16, 480x640 frames: per-step ms and peak CUDA memory (``torch.cuda.max_memory_allocated``). Refused on
the CPU (a full-size SAM 2.1 step takes seconds there; SAM 3 minutes).

    python benchmarks/bench_video_tracker.py                             # CPU, tiny models, 2 threads
    python benchmarks/bench_video_tracker.py --stream-frames 10000 --steps 0
    python benchmarks/bench_video_tracker.py --full-size --device cuda --steps 100
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reasonvos_ros.backends.sam2_video_tracker import Sam2VideoTracker
from reasonvos_ros.core.registry import build_backend
from reasonvos_ros.core.types import Frame
from reasonvos_ros.models.sam2_video.families import (
    FAMILIES,
    FULL_SIZE_NAMES,
    count_parameters,
    full_size_config,
    tiny_config,
)
from reasonvos_ros.models.sam2_video.streaming import StreamingVideoSession


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model (default 20; 0 skips)")
    parser.add_argument("--objects", type=int, default=1, help="objects tracked at once (default 1)")
    parser.add_argument("--stream-frames", type=int, default=0, help="frames of the memory-flatness run (0: skip)")
    parser.add_argument("--rss-every", type=int, default=500)
    parser.add_argument(
        "--uncapped", action="store_true", help="stream run without pruning: the library's own growth, for contrast"
    )
    parser.add_argument("--full-size", action="store_true", help="full-size configs, random weights (GPU only)")
    parser.add_argument("--models", nargs="+", default=None, help=f"full-size subset of {FULL_SIZE_NAMES}")
    return parser.parse_args()


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scene(count: int, height: int, width: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 140, (height, width, 3), dtype=np.uint8)
    side = max(8, height // 6)
    for t in range(count):
        image = background.copy()
        left = (8 + 3 * t) % (width - side)
        image[height // 4 : height // 4 + side, left : left + side] = (250, 230, 40)
        yield Frame(t, t / 30.0, image)


def seeds(height: int, width: int, objects: int) -> dict[str, np.ndarray]:
    out = {}
    side = max(8, height // 6)
    for k in range(objects):
        mask = np.zeros((height, width), bool)
        top = (height // 4 + k * (side + 4)) % (height - side)
        mask[top : top + side, 8 : 8 + side] = True
        out[f"obj{k}"] = mask
    return out


def time_steps(tracker, steps: int, objects: int, height: int = 480, width: int = 640, sync=lambda: None) -> dict:
    session = tracker.new_session()
    frames = scene(steps + 1, height, width)
    session.step(next(frames), seeds(height, width, objects))
    times = []
    for frame in frames:
        sync()
        start = time.perf_counter()
        out = session.step(frame)
        sync()
        times.append(time.perf_counter() - start)
        assert len(out) == objects
    stored = session.memory_bytes()
    session.close()
    times.sort()
    return {
        "median_ms": 1000 * statistics.median(times),
        "p90_ms": 1000 * times[max(0, math.ceil(0.9 * len(times)) - 1)],
        "stored_mb": stored / 1e6,
    }


def tiny_trackers(directory: Path, device: str):
    for family, size in (("sam2", 128), ("sam3_tracker", 112)):
        torch.manual_seed(0)
        model_class, _, _ = FAMILIES[family].classes()
        model = model_class(tiny_config(family, size)).eval()
        with torch.no_grad():  # objects count as visible, so masks and memories are not trivially empty
            model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(4.0)
        path = directory / family
        model.save_pretrained(path)
        params = sum(p.numel() for p in model.parameters())
        del model
        yield family, size, params, build_backend("tracker", "sam2_video", {"model_dir": str(path), "device": device})


def stream(tracker, frames: int, every: int) -> None:
    session = tracker.new_session()
    video = scene(frames, 64, 64)
    session.step(next(video), {"obj": seeds(64, 64, 1)["obj0"]})
    samples = []
    start = time.perf_counter()
    for position, frame in enumerate(video, start=1):
        session.step(frame)
        if position % every == 0:
            samples.append((position, rss_mb()))
            print(f"  frame {position:6d}: RSS {samples[-1][1]:7.1f} MB, stored {session.memory_bytes() / 1e3:6.1f} kB")
    elapsed = time.perf_counter() - start
    print(f"  stored items at the end: {session.stored_counts()}")
    warm = [s for s in samples if s[0] >= max(1000, every)]
    if len(warm) >= 2:
        x = np.array([s[0] for s in warm], float)
        y = np.array([s[1] for s in warm], float) * 1024 * 1024
        slope = np.polyfit(x, y, 1)[0]
        print(
            f"  RSS slope after frame {int(x[0])}: {slope:+.1f} bytes/frame "
            f"({slope * 10000 / 1e6:+.2f} MB per 10,000 frames); {frames} frames in {elapsed:.0f} s "
            f"({1000 * elapsed / frames:.1f} ms/frame)"
        )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.full_size:
        if args.device != "cuda" or not torch.cuda.is_available():
            sys.exit(
                "refused: --full-size needs --device cuda and a CUDA device (a full-size SAM 2.1 step takes seconds "
                "on a CPU, SAM 3 minutes; tiny models are the CPU benchmark)"
            )
        full_size(args)
        return
    print(f"torch {torch.__version__}, {args.threads} threads, device {args.device}; 480x640 frames")
    with tempfile.TemporaryDirectory() as tmp:
        for family, size, params, tracker in tiny_trackers(Path(tmp), args.device):
            if args.steps:
                result = time_steps(tracker, args.steps, args.objects)
                print(
                    f"{family:13s} tiny ({params / 1e6:.2f} M params, input {size}): "
                    f"median {result['median_ms']:.1f} ms, p90 {result['p90_ms']:.1f} ms per step, "
                    f"{args.objects} object(s), stored {result['stored_mb']:.2f} MB"
                )
            if args.stream_frames and family == "sam2":
                directory = Path(tmp) / "stream"
                torch.manual_seed(0)
                model_class, _, _ = FAMILIES["sam2"].classes()
                model = model_class(tiny_config("sam2", 64)).eval()
                with torch.no_grad():
                    model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(4.0)
                model.save_pretrained(directory)
                streamer = build_backend("tracker", "sam2_video", {"model_dir": str(directory), "device": args.device})
                if args.uncapped:
                    StreamingVideoSession.prune = lambda self: None  # the library's stores, as they grow unpruned
                print(f"stream of {args.stream_frames} frames, tiny SAM 2.1 at 64x64, {'un' * args.uncapped}capped:")
                stream(streamer, args.stream_frames, args.rss_every)
    print(f"peak RSS {peak_rss_mb():.0f} MB")


def full_size(args) -> None:
    names = args.models or [n for n in FULL_SIZE_NAMES]
    sync = torch.cuda.synchronize
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, bf16, 480x640 frames, {args.objects} object(s)")
    for name in names:
        family, config = full_size_config(name)
        if family.needs_timm:
            import importlib.util

            if importlib.util.find_spec("timm") is None:
                print(f"{name:18s} skipped: timm is not installed (EdgeTAM's backbone)")
                continue
        params = count_parameters(family, config)
        model_class, _, _ = family.classes()
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = model_class(config)
        tracker = Sam2VideoTracker.from_model(model, family, device="cuda", dtype="bfloat16")
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        weights_mb = torch.cuda.memory_allocated() / 1e6
        time_steps(tracker, 3, args.objects, sync=sync)  # warm-up (kernels, allocator)
        result = time_steps(tracker, args.steps, args.objects, sync=sync)
        peak = torch.cuda.max_memory_allocated() / 1e6
        print(
            f"{name:18s} {params / 1e6:7.1f} M params: median {result['median_ms']:6.1f} ms, "
            f"p90 {result['p90_ms']:6.1f} ms per step; weights {weights_mb:6.0f} MB, peak CUDA {peak:6.0f} MB, "
            f"session memory {result['stored_mb']:.1f} MB"
        )
        del tracker, model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
