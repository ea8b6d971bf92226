"""Per-stage latency and peak memory of a vlm_sam model set on this machine, with no network and no weights.

Full-size models are built from their configurations (``reasonvos_ros.weights.catalog``) with random weights:
the same shapes, the same arithmetic and the same memory as the real checkpoints, so the timings hold for them
(answers are noise; only speed and memory are measured). Stages, each timed over ``--repeats`` runs after a warm-up:

* VLM prefill: the vision encoder + the language model over the whole prompt (key frame at ``--key-size`` within
  ``key_max_pixels``, ``--references`` reference frames within ``reference_max_pixels``, ~300 text tokens), as
  the vlm_sam segmenter sends it;
* VLM decoding: per generated token (``--new-tokens`` forced tokens after the prefill, minus the prefill);
* SAM: image encoder on the key frame, then the prompt decoder for one box;
* tracker: one step of the ``sam2_video`` tracker on a 480x640 frame with one object (``--tracker``, a SAM 2.1 /
  SAM 3 tracker configuration; the memory bank filled by earlier steps, as on a live stream);
* peak GPU memory of each stage (``torch.cuda.max_memory_allocated``) and of the models' weights.

Usage on a GPU machine (bf16 by default): ``python benchmarks/gpu_stages.py [--set qwen3vl-8b-sam2.1-large]``.
On a machine without CUDA it refuses full-size models (minutes per stage, tens of GB of RAM) and runs the tiny
configurations instead (``--tiny`` forces them anywhere): that checks the script, not the device.
``benchmarks/bench_video_tracker.py --full-size`` compares every tracker configuration.
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

from reasonvos_ros.models.tfs.qwen import smart_resize
from reasonvos_ros.weights.catalog import MODEL_SETS, build_config, find_set

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def gib(value: float) -> str:
    return "n/a (CPU)" if value != value else f"{value:.2f}"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> tuple[list[float], float]:
    """(seconds per run, peak GiB allocated during the runs); one untimed warm-up first."""
    fn()
    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        runs.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 1024**3 if device.startswith("cuda") else float("nan")
    return runs, peak


def vlm_inputs(
    config, family: str, key_hw, references: int, key_max_pixels, ref_max_pixels, text_tokens, device, dtype
):
    """Random prompt with the vlm_sam layout: references then the key frame, each its own image."""
    vision = config.vision_config
    patch, merge, temporal = int(vision.patch_size), int(vision.spatial_merge_size), int(vision.temporal_patch_size)
    sizes = [smart_resize(*key_hw, patch * merge, 32 * 32, ref_max_pixels)] * references
    sizes.append(smart_resize(*key_hw, patch * merge, 32 * 32, key_max_pixels))
    grids = [(1, h // patch, w // patch) for h, w in sizes]
    generator = torch.Generator().manual_seed(0)
    vocab = int(config.text_config.vocab_size)
    specials = {int(config.image_token_id), int(config.vision_start_token_id), int(config.vision_end_token_id)}
    plain = [t for t in range(min(vocab, 50000)) if t not in specials]

    def text(count):
        picks = torch.randint(0, len(plain), (count,), generator=generator)
        return [plain[int(i)] for i in picks]

    ids = text(20)
    for grid in grids:
        ids += [*text(12), int(config.vision_start_token_id)]
        ids += [int(config.image_token_id)] * (grid[0] * grid[1] * grid[2] // merge**2)
        ids += [int(config.vision_end_token_id)]
    ids += text(text_tokens)
    input_ids = torch.tensor([ids], device=device)
    rows = sum(g[0] * g[1] * g[2] for g in grids)
    pixel_values = torch.randn(rows, 3 * temporal * patch * patch, generator=generator).to(device, dtype)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "mm_token_type_ids": (input_ids == int(config.image_token_id)).long(),
        "pixel_values": pixel_values,
        "image_grid_thw": torch.tensor(grids, device=device),
    }, sizes


def run(args) -> list[tuple[str, str, str, str]]:
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tiny = args.tiny or device == "cpu"
    if device == "cpu" and not args.tiny and args.text_layers:
        tiny = False  # a truncated full-width model: checks the full-size code path on a small machine
    elif device == "cpu" and not args.tiny:
        print(
            "no CUDA device: full-size models are refused on the CPU (minutes per stage, tens of GB of RAM); "
            "running the tiny configurations instead (this checks the script, not a device)",
            file=sys.stderr,
        )
    dtype = DTYPES[args.dtype] if device.startswith("cuda") else torch.float32
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        if tiny:
            from reasonvos_ros.models.vlm.tiny import build_tiny_qwen_vl, build_tiny_sam

            vlm_dir = build_tiny_qwen_vl(Path(scratch) / "vlm", args.tiny_family)
            sam_dir = build_tiny_sam(Path(scratch) / "sam", "sam2")
            vlm_config = transformers.AutoConfig.from_pretrained(vlm_dir)
            sam_config = transformers.AutoConfig.from_pretrained(sam_dir)
            vlm_class = {
                "qwen3_vl": "Qwen3VLForConditionalGeneration",
                "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
            }[args.tiny_family]
            sam_class, sam_size = "Sam2Model", 256
            label = f"tiny {args.tiny_family} + tiny sam2 (random, CPU check of the script)"
        else:
            model_set = find_set(args.set)
            vlm_component = next(c for c in model_set.components if c.role == "vlm")
            sam_component = next(c for c in model_set.components if c.role == "sam")
            vlm_config, sam_config = build_config(vlm_component), build_config(sam_component)
            if args.text_layers:
                vlm_config.text_config.num_hidden_layers = args.text_layers
            vlm_class, sam_class = vlm_component.model_class, sam_component.model_class
            sam_size = 1008 if sam_class == "Sam3TrackerModel" else 1024
            label = f"{model_set.name}: {vlm_component.repo_id} + {sam_component.repo_id} (random weights)"
            if args.text_layers:
                label += f" -- TRUNCATED to {args.text_layers} language-model layers: not the model's figures"
        print(f"{label}, device {device}, dtype {dtype}", flush=True)
        if device.startswith("cuda"):
            print(f"GPU: {torch.cuda.get_device_name()}", flush=True)
            torch.cuda.reset_peak_memory_stats()
        torch.manual_seed(0)
        with torch.device(device):
            vlm = getattr(transformers, vlm_class)._from_config(vlm_config, dtype=dtype).eval()
        weights_gib = sum(p.numel() * p.element_size() for p in vlm.parameters()) / 1024**3
        rows.append(
            (
                "VLM weights",
                "-",
                f"{weights_gib:.2f}",
                f"{sum(p.numel() for p in vlm.parameters()) / 1e6:,.1f} M params",
            )
        )
        key_hw = tuple(int(v) for v in args.key_size.lower().split("x"))[::-1]  # "WxH" -> (h, w)
        inputs, sizes = vlm_inputs(
            vlm.config,
            None,
            key_hw,
            args.references,
            args.key_max_pixels,
            args.reference_max_pixels,
            300,
            device,
            dtype,
        )
        prompt_tokens = int(inputs["input_ids"].shape[1])
        detail = f"{prompt_tokens} tokens; key seen {sizes[-1][1]}x{sizes[-1][0]}, {args.references} refs {sizes[0][1]}x{sizes[0][0]}"
        with torch.inference_mode():
            prefill_runs, prefill_peak = timed(
                lambda: vlm(**inputs, use_cache=True, logits_to_keep=1), device, args.repeats
            )
            new = args.new_tokens
            config = transformers.GenerationConfig(
                do_sample=False, max_new_tokens=new, min_new_tokens=new, eos_token_id=None, pad_token_id=0
            )
            generate_runs, generate_peak = timed(
                lambda: vlm.generate(**inputs, generation_config=config), device, args.repeats
            )
        prefill = statistics.median(prefill_runs)
        per_token = max(statistics.median(generate_runs) - prefill, 0.0) / max(new - 1, 1)
        rows.append(("VLM prefill", f"{prefill * 1000:.0f} ms", gib(prefill_peak), detail))
        rows.append(("VLM decoding", f"{per_token * 1000:.1f} ms/token", gib(generate_peak), f"{new} tokens"))
        rows.append(
            (
                "VLM answer (prefill + decoding)",
                f"{statistics.median(generate_runs) * 1000:.0f} ms",
                "-",
                f"{new} tokens",
            )
        )
        vlm = inputs = None  # free the VLM before SAM is measured
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        with torch.device(device):
            sam = getattr(transformers, sam_class)._from_config(sam_config, dtype=dtype).eval()
        sam_weights = sum(p.numel() * p.element_size() for p in sam.parameters()) / 1024**3
        rows.append(
            ("SAM weights", "-", f"{sam_weights:.2f}", f"{sum(p.numel() for p in sam.parameters()) / 1e6:.1f} M params")
        )
        pixels = torch.randn(1, 3, sam_size, sam_size, device=device, dtype=dtype)
        box = torch.tensor([[[0.2 * sam_size, 0.2 * sam_size, 0.6 * sam_size, 0.7 * sam_size]]], device=device)
        with torch.inference_mode():
            encode_runs, encode_peak = timed(lambda: sam.get_image_embeddings(pixels), device, args.repeats)
            embeddings = sam.get_image_embeddings(pixels)
            decode_runs, decode_peak = timed(
                lambda: sam(image_embeddings=embeddings, input_boxes=box, multimask_output=False), device, args.repeats
            )
        rows.append(
            (
                "SAM image encoder",
                f"{statistics.median(encode_runs) * 1000:.1f} ms",
                gib(encode_peak),
                f"{sam_size}x{sam_size}",
            )
        )
        rows.append(("SAM box decoder", f"{statistics.median(decode_runs) * 1000:.1f} ms", gib(decode_peak), "1 box"))
        sam = embeddings = pixels = None
        rows.append(tracker_stage(args.tracker, tiny, device, dtype, args.repeats))
    return rows


def tracker_stage(name: str, tiny: bool, device: str, dtype: torch.dtype, repeats: int) -> tuple[str, str, str, str]:
    """Median time of one sam2_video tracker step on 480x640 frames (one object), after the memory bank filled."""
    from reasonvos_ros.backends.sam2_video_tracker import Sam2VideoTracker
    from reasonvos_ros.core.types import Frame
    from reasonvos_ros.models.sam2_video.families import FAMILIES, full_size_config, tiny_config

    if tiny:
        family, config = FAMILIES["sam2"], tiny_config("sam2", 128)
        name = "tiny sam2"
    else:
        family, config = full_size_config(name)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    model_class, _, _ = family.classes()
    with torch.device(device):
        model = model_class(config)
    dtype_name = {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype, "float32")
    tracker = Sam2VideoTracker.from_model(model, family, device=device, dtype=dtype_name)
    rng = np.random.default_rng(0)
    frames = [Frame(i, i / 30, rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for i in range(8 + repeats)]
    seed = np.zeros((480, 640), bool)
    seed[180:300, 260:380] = True
    session = tracker.new_session()
    session.step(frames[0], {"target": seed})
    for frame in frames[1:8]:  # fill the memory bank (num_maskmem = 7) before timing
        session.step(frame)
    times = []
    for frame in frames[8:]:
        sync(device)
        start = time.perf_counter()
        session.step(frame)
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else float("nan")
    session.close()
    tracker.release()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return ("tracker step", f"{statistics.median(times) * 1000:.1f} ms", gib(peak), f"{name}, {params:.1f} M params")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--set", default="qwen3vl-8b-sam2.1-large", choices=[s.name for s in MODEL_SETS if s.components]
    )
    parser.add_argument("--tiny", action="store_true", help="tiny random configurations (CPU check)")
    parser.add_argument(
        "--tracker",
        default="sam2.1_small",
        help="sam2_video configuration for the tracker stage: sam2.1_tiny/small/base_plus/large, sam3_tracker",
    )
    parser.add_argument("--tiny-family", default="qwen3_vl", choices=("qwen3_vl", "qwen2_5_vl"))
    parser.add_argument("--dtype", default="bfloat16", choices=tuple(DTYPES))
    parser.add_argument("--key-size", default="1280x720", help="camera frame WxH")
    parser.add_argument("--references", type=int, default=4)
    parser.add_argument("--key-max-pixels", type=int, default=1280 * 28 * 28)
    parser.add_argument("--reference-max-pixels", type=int, default=256 * 28 * 28)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--text-layers",
        type=int,
        default=0,
        help="truncate the full-size language model to N layers (checks the full-size code path where memory is "
        "short, also on a CPU; the figures are then not the model's)",
    )
    args = parser.parse_args(argv)
    rows = run(args)
    widths = [max(len(r[i]) for r in [*rows, ("stage", "median latency", "peak GiB", "detail")]) for i in range(4)]
    header = ("stage", "median latency", "peak GiB", "detail")
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
