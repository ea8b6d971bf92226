"""Per-stage latency of the VISA key-frame segmenter on this machine (CPU, random weights).

Stages: CLIP + spatial merging (per frame), merging alone (per frame), LLaMA prefill of the whole prompt
(12 frames x 112 visual tokens + text), text_hidden_fcs, SAM image encoder (once per key frame), SAM mask decoder +
post-processing. Two configurations:

* ``tiny``: the test configuration (LLaMA 64-d / 2 layers, CLIP 32-d / 2 layers, SAM ViT 64-d / 2 blocks at 1024 px,
  the real 256-d SAM prompt/mask decoder), all measured;
* ``full``: VISA-7B dimensions with random weights, where memory allows: CLIP ViT-L/14 (24 layers) + merging at
  1024-d and mm_projector 1024->4096, measured in full; LLaMA-7B measured on ``--llama-layers`` decoder layers (4096-d,
  32 heads, MLP 11008) and EXTRAPOLATED linearly to 32 layers; SAM ViT-H measured on one windowed and one global
  block (1280-d, 16 heads) + patch embedding + neck and EXTRAPOLATED to its 28 windowed + 4 global blocks; the SAM mask
  decoder is the same size in every SAM, so its full-size figure is measured directly.

Numbers depend on the machine's load (other processes share these cores): take them as orders of magnitude.
Run: ``python benchmarks/bench_visa.py [--threads 1] [--repeats 3] [--skip-full]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from reasonvos_ros.models.sam import SamConfig, SamTextPromptModel
from reasonvos_ros.models.visa.checkpoint import llama_config_from_dict
from reasonvos_ros.models.visa.ctm import SpatialTokenMerger
from reasonvos_ros.models.visa.modeling import VisaConfig, VisaModel
from reasonvos_ros.models.visa.prompt import build_prompt_ids
from reasonvos_ros.models.visa.tiny import TINY_CLIP, TINY_LLAMA, TINY_SAM, build_tiny_tokenizer

NUM_FRAMES = 12
ROWS: list[tuple[str, str, float, str]] = []


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time (s) over ``repeats`` runs after one warm-up run."""
    with torch.no_grad():
        fn()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def record(stage: str, config: str, seconds: float, note: str = "measured") -> None:
    ROWS.append((stage, config, seconds, note))
    print(f"  {config:<5} {stage:<44} {seconds * 1000:10.1f} ms  {note}", flush=True)


def real_frames() -> list[np.ndarray]:
    """12 RGB frames (the vendored golden clip frames when available, else noise)."""
    try:
        with np.load(Path(__file__).resolve().parents[1] / "test/golden_data/cases/xmem_stream/inputs.npz") as data:
            frames = list(data["frames_rgb_uint8"])
    except FileNotFoundError:
        frames = [np.random.default_rng(i).integers(0, 256, (240, 320, 3), dtype=np.uint8) for i in range(10)]
    return (frames * 2)[:NUM_FRAMES]


def bench_tiny(repeats: int) -> None:
    from transformers import CLIPVisionConfig

    from reasonvos_ros.models.visa.vision import clip_preprocess

    tokenizer = build_tiny_tokenizer()
    config = VisaConfig(
        llama=llama_config_from_dict({**TINY_LLAMA, "vocab_size": len(tokenizer)}),
        clip=CLIPVisionConfig(**TINY_CLIP),
        sam=SamConfig(**TINY_SAM),
        seg_token_id=len(tokenizer) - 1,
    )
    torch.manual_seed(0)
    model = VisaModel(config).eval()
    frames = real_frames()
    record("CLIP preprocessing (per frame, 240x320)", "both", timed(lambda: clip_preprocess(frames), repeats) / 12)
    pixel_values = torch.from_numpy(clip_preprocess(frames))
    record("CLIP + merging + projector (per frame)", "tiny", timed(lambda: model.visual(pixel_values), repeats) / 12)
    ids = build_prompt_ids(tokenizer, "the person walking on the left", NUM_FRAMES - 1)
    visual = model.visual(pixel_values)
    layout = model.layout(ids)
    embeds = model.embed_prompt(layout, visual.projected)
    record(
        f"LLaMA prefill ({layout.expanded_length} tokens)",
        "tiny",
        timed(lambda: model.language_hidden_states(embeds), repeats),
    )
    image = frames[-1]
    record("SAM image encoder (1024x1024)", "tiny", timed(lambda: model.encode_keyframe(image), repeats))
    embeddings, input_size = model.encode_keyframe(image)
    h_seg = torch.randn(config.out_dim)
    record(
        "SAM mask decoder + postprocess (to 240x320)",
        "both",
        timed(lambda: model.decode_mask(embeddings, h_seg, input_size, image.shape[:2]), repeats),
        "measured (decoder size is the same in every SAM)",
    )


def bench_full_clip(repeats: int) -> None:
    from transformers import CLIPVisionConfig

    from reasonvos_ros.models.visa.vision import ClipVisionTower

    torch.manual_seed(0)
    clip_l = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
        image_size=224, hidden_act="quick_gelu", projection_dim=768,
    )  # fmt: skip
    tower = ClipVisionTower(clip_l).eval()
    merger = SpatialTokenMerger()
    projector = torch.nn.Linear(1024, 4096)
    pixel_values = torch.randn(NUM_FRAMES, 3, 224, 224)

    def clip_and_merge() -> None:
        feats = tower(pixel_values)
        merged = torch.cat([merger(feats[i : i + 1])[0] for i in range(feats.shape[0])])
        projector(merged)

    record("CLIP ViT-L/14 + merging + projector (per frame)", "full", timed(clip_and_merge, repeats) / NUM_FRAMES)
    feats = tower(pixel_values[:1]).detach()
    record("  of which merging alone (per frame, 1024-d)", "full", timed(lambda: merger(feats), repeats))


def bench_full_llama(repeats: int, llama_layers: int, text_tokens: int) -> None:
    from transformers import LlamaConfig, LlamaModel

    seq = NUM_FRAMES * 112 + text_tokens
    llama = LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_hidden_layers=llama_layers,
        vocab_size=256, max_position_embeddings=4096, rms_norm_eps=1e-6,
    )  # fmt: skip
    lm = LlamaModel(llama).eval()
    embeds = torch.randn(1, seq, 4096) * 0.02
    measured = timed(lambda: lm(inputs_embeds=embeds, use_cache=False), max(1, repeats - 1))
    record(f"LLaMA-7B prefill, {llama_layers} layers ({seq} tokens)", "full", measured)
    record(
        f"LLaMA-7B prefill, 32 layers ({seq} tokens)",
        "full",
        measured * 32 / llama_layers,
        f"EXTRAPOLATED from {llama_layers} layers",
    )


def bench_full_sam(repeats: int) -> None:
    fcs = torch.nn.Sequential(torch.nn.Linear(4096, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 256))
    record("text_hidden_fcs (4096->4096->256)", "full", timed(lambda: fcs(torch.randn(4096)), repeats))

    vit_h_two = SamConfig(
        **{**SamConfig.preset("vit_h").to_dict(), "encoder_depth": 2, "encoder_global_attn_indexes": (1,)}
    )
    sam = SamTextPromptModel(vit_h_two).eval()
    blocks = sam.image_encoder.vision.layers
    block_times: dict[int, list[float]] = {0: [], 1: []}
    starts: dict[int, float] = {}
    for index, block in enumerate(blocks):
        block.register_forward_pre_hook(lambda m, a, i=index: starts.__setitem__(i, time.perf_counter()))
        block.register_forward_hook(lambda m, a, o, i=index: block_times[i].append(time.perf_counter() - starts[i]))
    pixel = torch.randn(1, 3, 1024, 1024)
    total_two = timed(lambda: sam.encode_image(pixel), max(1, repeats - 1))
    window_block = statistics.median(block_times[0][1:])
    global_block = statistics.median(block_times[1][1:])
    rest = max(total_two - window_block - global_block, 0.0)
    record("SAM ViT-H windowed block (1280-d, 64x64 tokens)", "full", window_block)
    record("SAM ViT-H global block", "full", global_block)
    record("SAM ViT-H patch embed + neck", "full", rest)
    record("SAM ViT-H image encoder (28 windowed + 4 global)", "full", rest + 28 * window_block + 4 * global_block,
           "EXTRAPOLATED from one block of each kind")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--llama-layers", type=int, default=2, help="LLaMA-7B layers actually run (then extrapolated)")
    parser.add_argument("--text-tokens", type=int, default=120, help="text tokens of the full-size prompt (assumed)")
    parser.add_argument("--skip-full", action="store_true", help="only the tiny configuration")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"VISA stage latency, CPU, {args.threads} threads, float32, median of {args.repeats} (after 1 warm-up)")
    print(f"load average at start (1/5/15 min): {os.getloadavg()} on {os.cpu_count()} cores")
    bench_tiny(args.repeats)
    if not args.skip_full:
        bench_full_clip(args.repeats)
        bench_full_llama(args.repeats, args.llama_layers, args.text_tokens)
        bench_full_sam(args.repeats)
    print()
    print(f"| {'stage':<50} | {'config':<6} | {'ms':>10} | note |")
    print(f"|{'-' * 52}|{'-' * 8}|{'-' * 12}|------|")
    for stage, config, seconds, note in ROWS:
        print(f"| {stage:<50} | {config:<6} | {seconds * 1000:10.1f} | {note} |")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
