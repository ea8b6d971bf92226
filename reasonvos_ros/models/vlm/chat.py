"""Multi-image chat with a Qwen2.5-VL or Qwen3-VL checkpoint, in process (stock transformers, no remote code).

``QwenImageChat.chat(parts)`` takes the user turn as a sequence of text strings and ``ChatImage`` s (an RGB frame
plus the pixel budget it may use) and returns the greedy answer with the size each image was seen at (Qwen2.5-VL
answers in pixels of that size, see ``grounding.py``).

Why the pixels are prepared here and not by transformers' processor: the Qwen-VL image processors of transformers
5.x run on torchvision, and PyPI's torchvision fails to import beside the CPU torch 2.13 wheel this project pins
("operator torchvision::nms does not exist"). The
layout is the documented one that ``models.tfs.qwen.video_to_patches`` implements (a still image is a one-frame
video repeated to ``temporal_patch_size``, which is what the image processor does); each image gets its own
``image_grid_thw`` row and ``<|vision_start|>`` + N x ``<|image_pad|>`` + ``<|vision_end|>`` in the prompt, with
N = prod(grid) / merge_size**2, and ``mm_token_type_ids`` = 1 on those tokens for the M-RoPE positions.
Family settings (checkpoint ``preprocessor_config.json`` wins when present): Qwen2.5-VL patch 14 (sides multiples
of 28), CLIP mean/std; Qwen3-VL patch 16 (multiples of 32), mean/std 0.5.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import BackendFailure, BackendUnavailable, ConfigError
from ..tfs.qwen import CLIP_MEAN, CLIP_STD, load_qwen_checkpoint, read_mean_std, read_token_ids, smart_resize
from ..weights import free_device_memory, read_hf_config, resolve_device, resolve_dtype

SUPPORTED_FAMILIES = ("qwen2_5_vl", "qwen3_vl")
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "qwen2_5_vl": {"patch_size": 14, "mean": CLIP_MEAN, "std": CLIP_STD},
    "qwen3_vl": {"patch_size": 16, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
}
MERGE_SIZE = 2  # both families merge 2x2 patches into one token
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(frozen=True)
class ChatImage:
    """An RGB ``HxWx3 uint8`` image and its pixel budget (the model sees it at ``smart_resize`` within it)."""

    image: np.ndarray
    max_pixels: int
    min_pixels: int = 32 * 32


@dataclass
class ChatReply:
    text: str
    seen_sizes: list[tuple[int, int]]  # (w, h) of each image as the model saw it, in order
    stats: dict[str, Any] = field(default_factory=dict)


def seen_size(image_shape: Sequence[int], family: str, max_pixels: int, min_pixels: int) -> tuple[int, int]:
    """(w, h) at which a family's processor presents an image of ``image_shape`` (h, w, ...)."""
    factor = FAMILY_DEFAULTS[family]["patch_size"] * MERGE_SIZE
    height, width = smart_resize(int(image_shape[0]), int(image_shape[1]), factor, min_pixels, max_pixels)
    return width, height


def check_image(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or min(array.shape[:2]) < 1:
        raise ValueError(f"images must be HxWx3 uint8 RGB, got {array.dtype} {array.shape}")
    return array


def read_family(model_dir: Path) -> tuple[str, dict[str, Any]]:
    """(family, config dict) of a checkpoint directory; clear errors for a missing or unsupported one."""
    config_path = model_dir / "config.json"
    config = read_hf_config(model_dir, "VLM")
    family = config.get("model_type")
    if family not in SUPPORTED_FAMILIES:
        raise ConfigError(
            f"{config_path}: model_type {family!r} is not supported by the VLM segmenter "
            f"(supported: {', '.join(SUPPORTED_FAMILIES)})"
        )
    return family, config


class QwenImageChat:
    """In-process multi-image chat; greedy decoding. ``last_stats`` / ``ChatReply.stats`` hold timings."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str | None = "auto",
        dtype: str | None = "auto",
        max_new_tokens: int = 192,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        attn_implementation: str | None = None,
    ) -> None:
        if int(max_new_tokens) < 16:
            raise ConfigError(f"max_new_tokens must be >= 16 for a JSON answer, got {max_new_tokens}")
        self.model_dir = Path(model_dir).expanduser()
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.max_new_tokens = int(max_new_tokens)
        self.system_prompt = system_prompt
        self.attn_implementation = attn_implementation
        self.family, _ = read_family(self.model_dir)
        self.model = None
        self.tokenizer = None
        self.generate_kwargs: dict[str, Any] = {}  # extra generate() arguments (tests constrain decoding with it)
        self.generate_kwargs_reset = None  # called before each generate (resets per-call state of those arguments)
        self.load()

    def load(self) -> None:
        if self.family == "qwen2_5_vl":
            from transformers import Qwen2_5_VLForConditionalGeneration as ModelClass
        else:
            from transformers import Qwen3VLForConditionalGeneration as ModelClass
        self.tokenizer, self.model = load_qwen_checkpoint(
            self.model_dir,
            ModelClass,
            role="VLM",
            device=self.device,
            dtype=self.dtype,
            attn_implementation=self.attn_implementation,
        )
        vision = self.model.config.vision_config
        self.patch_size = int(vision.patch_size)
        self.temporal_patch_size = int(vision.temporal_patch_size)
        self.merge_size = int(vision.spatial_merge_size)
        if self.patch_size != FAMILY_DEFAULTS[self.family]["patch_size"] or self.merge_size != MERGE_SIZE:
            raise BackendUnavailable(
                f"{self.model_dir}: patch {self.patch_size} / merge {self.merge_size} differ from the "
                f"{self.family} layout this loader knows ({FAMILY_DEFAULTS[self.family]['patch_size']} / {MERGE_SIZE})"
            )
        defaults = FAMILY_DEFAULTS[self.family]
        self.mean, self.std = read_mean_std(
            self.model_dir, ("preprocessor_config.json",), defaults["mean"], defaults["std"]
        )
        tokens = read_token_ids(self.tokenizer, self.model, self.model_dir, "<|image_pad|>", "image_token_id")
        self.image_token_id, self.eos_token_ids, self.pad_token_id = tokens.placeholder, tokens.stop, tokens.pad

    def release(self) -> None:
        self.model = None
        free_device_memory(self.device)

    def build_inputs(self, parts: Sequence[str | ChatImage]) -> tuple[dict[str, Any], list[tuple[int, int]]]:
        """Token ids and pixel tensors for one user turn (batch 1) -> (model inputs, seen sizes)."""
        import torch

        from ..tfs.qwen import video_to_patches

        def encode(text: str) -> list[int]:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

        head = "<|im_start|>user\n"
        if self.system_prompt:
            head = f"<|im_start|>system\n{self.system_prompt}<|im_end|>\n" + head
        ids = encode(head)
        pixels, grids, sizes = [], [], []
        for part in parts:
            if isinstance(part, str):
                ids += encode(part)
                continue
            image = check_image(part.image)
            flat, grid = video_to_patches(
                [image],
                patch_size=self.patch_size,
                temporal_patch_size=self.temporal_patch_size,
                merge_size=self.merge_size,
                min_pixels=part.min_pixels,
                max_pixels=part.max_pixels,
                mean=self.mean,
                std=self.std,
                device=self.device,
                dtype=self.dtype,
            )
            pixels.append(flat)
            grids.append(grid)
            sizes.append((int(grid[0, 2]) * self.patch_size, int(grid[0, 1]) * self.patch_size))
            count = int(grid.prod()) // self.merge_size**2
            ids += encode("<|vision_start|>") + [self.image_token_id] * count + encode("<|vision_end|>")
        ids += encode("<|im_end|>\n<|im_start|>assistant\n")
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        inputs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "mm_token_type_ids": (input_ids == self.image_token_id).long(),  # 0 text, 1 image
        }
        if pixels:
            inputs["pixel_values"] = torch.cat(pixels)
            inputs["image_grid_thw"] = torch.cat(grids)
        return inputs, sizes

    def chat(self, parts: Sequence[str | ChatImage]) -> ChatReply:
        import torch
        from transformers import GenerationConfig

        if self.model is None:
            self.load()
        started = time.perf_counter()
        inputs, sizes = self.build_inputs(parts)
        prompt_len = int(inputs["input_ids"].shape[1])
        stats: dict[str, Any] = {"prompt_tokens": prompt_len, "preprocess_s": time.perf_counter() - started}
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
        )
        if self.generate_kwargs_reset is not None:
            self.generate_kwargs_reset()
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                sequences = self.model.generate(**inputs, generation_config=config, **self.generate_kwargs)
        except torch.OutOfMemoryError as exc:
            raise BackendFailure(f"the VLM ran out of memory ({prompt_len} prompt tokens): {exc}") from exc
        stats["generate_s"] = time.perf_counter() - start
        new_tokens = sequences[0, prompt_len:]
        stats["new_tokens"] = int(new_tokens.numel())
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        stats["total_s"] = time.perf_counter() - started
        return ChatReply(text=text, seen_sizes=sizes, stats=stats)
