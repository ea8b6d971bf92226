"""Qwen2-VL / Qwen2.5-VL as the TFS answer generator: K sampled answers from one prefill.

What this module does, and why it does it itself:

* **Pixel preprocessing without the transformers processor.** transformers' Qwen2-VL image/video processors need
  Pillow and torchvision (``Qwen2VLVideoProcessor`` imports ``torchvision.transforms.v2``), and torchvision cannot be
  installed next to the CPU torch this project is built with. ``video_to_patches`` implements the documented Qwen2-VL
  video layout instead: every frame is resized (bicubic, antialiased) to the ``smart_resize`` size (both sides
  multiples of ``patch_size * merge_size``, pixel count within ``[min_pixels, max_pixels]``, aspect ratio kept),
  scaled to [0, 1], normalised with the checkpoint's mean/std, padded to a multiple of ``temporal_patch_size``
  frames by repeating the last one, and cut into flat patches ordered ``(t, h_block, w_block, h_in_block,
  w_in_block)`` with each patch's values ordered ``(channel, time, y, x)`` -- the order the model's 3-D patch
  embedding expects. ``video_grid_thw`` is ``(frames / temporal_patch_size, H / patch_size, W / patch_size)`` and
  the prompt carries ``prod(grid) / merge_size**2`` video placeholder tokens.
* **Prompt.** Qwen's ChatML conversation, built as token ids: ``<|im_start|>system\\n{system}<|im_end|>\\n
  <|im_start|>user\\n<|vision_start|>`` + N x ``<|video_pad|>`` + ``<|vision_end|>{question}<|im_end|>\\n
  <|im_start|>assistant\\n``. ``mm_token_type_ids`` (2 on video tokens) lets the model compute its M-RoPE positions.
  Qwen2.5-VL also gets ``second_per_grid_ts`` from the frames' real time stamps (absolute-time M-RoPE).
* **K answers from one prefill** (``generation="prefix_cache"``, the default). The prompt minus its last token is run
  once with batch size 1 (vision encoder + language model), the returned KV cache is repeated K times
  (``DynamicCache.batch_repeat_interleave``) and a single ``generate`` call samples all K answers from it, feeding
  only the last prompt token per sequence. Checked on transformers 5.23: ``num_return_sequences=K`` does *not*
  expand after the prefill -- generate encodes the video once but then runs the language-model prefill on K copies
  of the whole prompt (batch K); the prefix-cache path prefills once. With the same seed both paths give the same
  tokens (tested). ``"num_return_sequences"`` and ``"sequential"`` (K separate full generate calls, the naive
  baseline) are kept for comparison (benchmarks/bench_tfs.py).
* **Sampling settings are explicit.** A fresh ``GenerationConfig`` is passed with ``top_k=0``: instruct checkpoints
  ship near-greedy defaults (e.g. ``top_k=1``) that would otherwise leak in and make the K answers identical.

Nothing here downloads anything; the model directory must already hold a Hugging Face checkpoint
(``config.json``, weights, tokenizer files; ``preprocessor_config.json`` optional, for mean/std).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...core.errors import BackendFailure, BackendUnavailable, ConfigError
from ..weights import free_device_memory, read_hf_config, resolve_device_dtype

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")
GENERATION_MODES = ("prefix_cache", "num_return_sequences", "sequential")
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_FPS = 2.0  # Qwen's default sampling rate, used when the frames carry no usable time stamps


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's target size: sides multiples of ``factor``, area within [min_pixels, max_pixels], aspect kept."""
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"frame aspect ratio {height}x{width} is beyond the model's limit of 200")
    new_h = max(factor, round(height / factor) * factor)
    new_w = max(factor, round(width / factor) * factor)
    if new_h * new_w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        new_h = max(factor, math.floor(height / scale / factor) * factor)
        new_w = max(factor, math.floor(width / scale / factor) * factor)
    elif new_h * new_w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        new_h = math.ceil(height * scale / factor) * factor
        new_w = math.ceil(width * scale / factor) * factor
    return new_h, new_w


def video_to_patches(
    frames: Sequence[np.ndarray],
    *,
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
    min_pixels: int = 56 * 56,
    max_pixels: int = 224 * 224,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    device: Any = "cpu",
    dtype: Any = None,
):
    """RGB uint8 frames (HxWx3 each) -> (pixel_values_videos [N, C*t*p*p], video_grid_thw [1, 3]) for Qwen2-VL.

    All frames are resized to the size ``smart_resize`` gives for the first one.
    """
    if len(frames) == 0:
        raise ValueError("video_to_patches needs at least one frame")
    first = np.asarray(frames[0])
    if first.ndim != 3 or first.shape[2] != 3:
        raise ValueError(f"frames must be HxWx3 RGB arrays, got shape {first.shape}")
    height, width = smart_resize(first.shape[0], first.shape[1], patch_size * merge_size, min_pixels, max_pixels)
    resized = []
    for frame in frames:
        array = np.asarray(frame)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"frames must be HxWx3 uint8 RGB arrays, got shape {array.shape} dtype {array.dtype}")
        chw = torch.from_numpy(np.ascontiguousarray(array)).to(device).permute(2, 0, 1)[None].float()
        if chw.shape[-2:] != (height, width):
            chw = F.interpolate(chw, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
            # the reference pipelines resize uint8 images, so values are rounded back to 8-bit levels
            chw = chw.round().clamp(0, 255)
        resized.append(chw[0])
    video = torch.stack(resized)  # T, C, H, W
    mean_t = torch.tensor(mean, device=video.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=video.device).view(1, 3, 1, 1)
    video = (video / 255.0 - mean_t) / std_t
    if pad := -video.shape[0] % temporal_patch_size:
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
    grid_t = video.shape[0] // temporal_patch_size
    grid_h, grid_w = height // patch_size, width // patch_size
    channels = video.shape[1]
    patches = video.reshape(
        grid_t,
        temporal_patch_size,
        channels,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    )
    # -> t, h_block, w_block, h_in_block, w_in_block | channel, time, y, x
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = patches.reshape(grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)
    if dtype is not None:
        flat = flat.to(dtype)
    grid = torch.tensor([[grid_t, grid_h, grid_w]], dtype=torch.long, device=flat.device)
    return flat, grid


@contextmanager
def _seeded(seed: int | None, device: str):
    """Seed torch's sampling inside the block without disturbing the caller's global RNG state."""
    if seed is None:
        yield
        return
    cuda_devices = [torch.device(device)] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(int(seed))
        yield


def load_qwen_checkpoint(
    model_dir: Path,
    model_class: Any,
    *,
    role: str,
    device: str | torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
):
    """``(tokenizer, model)`` of a local Qwen-VL checkpoint (local files only), the model on ``device`` in eval mode;
    ``BackendUnavailable`` naming ``role`` (e.g. "TFS", "VLM") when the files are missing or do not load."""
    if not any((model_dir / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        # AutoTokenizer would silently build an empty tokenizer from config.json alone
        raise BackendUnavailable(
            f"{role} model directory {model_dir} has no tokenizer files (tokenizer.json or vocab.json)"
        )
    from transformers import AutoTokenizer

    local = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), **local)
        model = model_class.from_pretrained(str(model_dir), dtype=dtype, **local, **extra)
    except (OSError, ValueError) as exc:
        raise BackendUnavailable(f"cannot load the {role} model from {model_dir}: {exc}") from exc
    return tokenizer, model.to(device).eval()


def read_mean_std(
    model_dir: Path, file_names: Sequence[str], mean: Sequence[float], std: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``image_mean`` / ``image_std`` of the first processor file in ``file_names`` that ``model_dir`` holds; the
    given ``mean`` / ``std`` where that file lacks them or there is no such file."""
    for name in file_names:
        path = model_dir / name
        if path.is_file():
            settings = json.loads(path.read_text())
            mean = tuple(float(v) for v in settings.get("image_mean", mean))
            std = tuple(float(v) for v in settings.get("image_std", std))
            if len(mean) != 3 or len(std) != 3:
                raise ConfigError(f"{path}: image_mean/image_std must have 3 values")
            break
    return tuple(mean), tuple(std)


@dataclass(frozen=True)
class QwenTokenIds:
    """The token ids a Qwen-VL prompt and its generation need."""

    placeholder: int  # the image or video pad token, repeated once per vision token in the prompt
    stop: list[int]  # generation ends at any of these
    pad: int


def read_token_ids(tokenizer, model, model_dir: Path, placeholder: str, config_field: str) -> QwenTokenIds:
    """Check that the tokenizer has Qwen's chat and vision special tokens and that its ``placeholder`` token
    (``<|image_pad|>`` or ``<|video_pad|>``) is the id the model config's ``config_field`` names; stop at
    ``<|im_end|>`` and at the generation config's and the tokenizer's end tokens; pad with the tokenizer's pad
    token, else the first stop id. ``BackendUnavailable`` on a missing token or a disagreement."""
    ids = {}
    for token in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", placeholder):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise BackendUnavailable(f"the tokenizer in {model_dir} lacks Qwen's special token {token}")
        ids[token] = int(token_id)
    expected = int(getattr(model.config, config_field))
    if ids[placeholder] != expected:
        raise BackendUnavailable(
            f"{model_dir}: tokenizer and model disagree on the {placeholder} token id "
            f"({ids[placeholder]} vs config {config_field} {expected})"
        )
    ends = model.generation_config.eos_token_id
    ends = list(ends) if isinstance(ends, (list, tuple)) else ([] if ends is None else [ends])
    if tokenizer.eos_token_id is not None:
        ends.append(tokenizer.eos_token_id)
    stop = sorted({ids["<|im_end|>"], *(int(e) for e in ends)})
    pad = tokenizer.pad_token_id
    return QwenTokenIds(placeholder=expected, stop=stop, pad=int(pad) if pad is not None else stop[0])


class QwenVideoAnswerer:
    """Answers a question about a short frame sequence K times with a Qwen2-VL / Qwen2.5-VL checkpoint.

    Implements the ``AnswerGenerator`` protocol of ``sampler.py``: ``answerer(frames, question, k, seed, stamps)``
    returns K decoded answers. ``last_stats`` holds timings and shapes of the latest call.
    """

    def __init__(
        self,
        model_dir: str | Path,
        device: str | None = "auto",
        dtype: str | None = "auto",
        temperature: float = 0.6,
        top_p: float = 0.9,
        top_k: int = 0,
        max_new_tokens: int = 24,
        min_pixels: int = 56 * 56,
        max_pixels: int = 224 * 224,
        generation: str = "prefix_cache",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if generation not in GENERATION_MODES:
            raise ConfigError(f"generation must be one of {', '.join(GENERATION_MODES)}; got {generation!r}")
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or max_new_tokens < 1:
            raise ConfigError(
                f"bad sampling settings: temperature {temperature} (>= 0), top_p {top_p} (in (0, 1]), "
                f"top_k {top_k} (>= 0, 0 = off), max_new_tokens {max_new_tokens} (>= 1)"
            )
        if min_pixels < 1 or max_pixels < min_pixels:
            raise ConfigError(f"need 1 <= min_pixels <= max_pixels, got {min_pixels} and {max_pixels}")
        self.model_dir = Path(model_dir).expanduser()
        resolved_device, self.dtype = resolve_device_dtype(device, dtype)
        self.device = str(resolved_device)  # transformers and torch.random take the string form
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.top_k = int(top_k)
        self.max_new_tokens = int(max_new_tokens)
        self.min_pixels = int(min_pixels)
        self.max_pixels = int(max_pixels)
        self.generation = generation
        self.system_prompt = system_prompt
        self.attn_implementation = attn_implementation
        self.trust_remote_code = bool(trust_remote_code)
        self.model = None
        self.tokenizer = None
        self.last_stats: dict[str, Any] = {}
        self.load()

    # ----------------------------------------------------------------------------------------------- loading
    def load(self) -> None:
        """Load tokenizer and model from ``model_dir`` (no download: local files only)."""
        config_path = self.model_dir / "config.json"
        config = read_hf_config(self.model_dir, "TFS")
        model_type = config.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"{config_path}: model_type {model_type!r} is not supported by the built-in TFS loader "
                f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)}); plug other video LLMs in through the sampler's "
                f"answer_fn option (docs/tfs.md)"
            )
        if model_type == "qwen2_vl":
            from transformers import Qwen2VLForConditionalGeneration as ModelClass
        else:
            from transformers import Qwen2_5_VLForConditionalGeneration as ModelClass
        self.tokenizer, self.model = load_qwen_checkpoint(
            self.model_dir,
            ModelClass,
            role="TFS",
            device=self.device,
            dtype=self.dtype,
            trust_remote_code=self.trust_remote_code,
            attn_implementation=self.attn_implementation,
        )
        self.model_type = model_type
        vision = self.model.config.vision_config
        self.patch_size = int(vision.patch_size)
        self.temporal_patch_size = int(vision.temporal_patch_size)
        self.merge_size = int(vision.spatial_merge_size)
        self.mean, self.std = read_mean_std(
            self.model_dir, ("video_preprocessor_config.json", "preprocessor_config.json"), CLIP_MEAN, CLIP_STD
        )
        tokens = read_token_ids(self.tokenizer, self.model, self.model_dir, "<|video_pad|>", "video_token_id")
        self.video_token_id, self.eos_token_ids, self.pad_token_id = tokens.placeholder, tokens.stop, tokens.pad

    def release(self) -> None:
        """Drop the model (frees accelerator memory); the next call reloads it."""
        self.model = None
        free_device_memory(self.device)

    # ------------------------------------------------------------------------------------------------ inputs
    def build_inputs(self, frames: Sequence[np.ndarray], question: str, stamps: Sequence[float] | None = None):
        """Model inputs for one prompt (batch 1): input_ids, attention_mask, mm_token_type_ids, video tensors."""
        pixel_values, grid = video_to_patches(
            frames,
            patch_size=self.patch_size,
            temporal_patch_size=self.temporal_patch_size,
            merge_size=self.merge_size,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
            mean=self.mean,
            std=self.std,
            device=self.device,
            dtype=self.dtype,
        )
        num_video_tokens = int(grid.prod()) // self.merge_size**2
        head = (
            f"<|im_start|>system\n{self.system_prompt}<|im_end|>\n<|im_start|>user\n<|vision_start|>"
            if self.system_prompt
            else "<|im_start|>user\n<|vision_start|>"
        )
        tail = f"<|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"
        head_ids = self.tokenizer(head, add_special_tokens=False)["input_ids"]
        tail_ids = self.tokenizer(tail, add_special_tokens=False)["input_ids"]
        ids = head_ids + [self.video_token_id] * num_video_tokens + tail_ids
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        mm_token_type_ids = (input_ids == self.video_token_id).long() * 2  # 0 text, 1 image, 2 video
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "mm_token_type_ids": mm_token_type_ids,
            "pixel_values_videos": pixel_values,
            "video_grid_thw": grid,
        }
        if self.model_type == "qwen2_5_vl":
            fps = self._frames_per_second(stamps, len(frames))
            inputs["second_per_grid_ts"] = torch.tensor([self.temporal_patch_size / fps], device=self.device)
        return inputs

    @staticmethod
    def _frames_per_second(stamps: Sequence[float] | None, count: int) -> float:
        if stamps is None or len(stamps) < 2:
            return DEFAULT_FPS
        span = float(stamps[-1]) - float(stamps[0])
        if not math.isfinite(span) or span <= 0:
            return DEFAULT_FPS
        return (len(stamps) - 1) / span

    def _generation_config(self, num_return_sequences: int):
        from transformers import GenerationConfig

        sample = self.temperature > 0
        settings = {
            "do_sample": sample,
            "max_new_tokens": self.max_new_tokens,
            "num_return_sequences": num_return_sequences,
            "eos_token_id": self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
        }
        if sample:
            settings.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        return GenerationConfig(**settings)

    # ------------------------------------------------------------------------------------------------ answer
    def __call__(
        self,
        frames: Sequence[np.ndarray],
        question: str,
        k: int,
        seed: int | None = None,
        stamps: Sequence[float] | None = None,
    ) -> list[str]:
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if self.model is None:
            self.load()
        started = time.perf_counter()
        inputs = self.build_inputs(frames, question, stamps)
        prompt_len = int(inputs["input_ids"].shape[1])
        stats: dict[str, Any] = {
            "generation": self.generation,
            "prompt_tokens": prompt_len,
            "video_grid_thw": inputs["video_grid_thw"][0].tolist(),
            "preprocess_s": time.perf_counter() - started,
        }
        try:
            with torch.inference_mode(), _seeded(seed, self.device):
                if self.generation == "prefix_cache":
                    sequences = self._generate_from_shared_prefill(inputs, k, stats)
                elif self.generation == "num_return_sequences":
                    sequences = self.model.generate(**inputs, generation_config=self._generation_config(k))
                    stats["generate_calls"] = 1
                else:
                    config = self._generation_config(1)
                    runs = [self.model.generate(**inputs, generation_config=config) for _ in range(k)]
                    width = max(run.shape[1] for run in runs)
                    sequences = torch.cat(
                        [F.pad(run, (0, width - run.shape[1]), value=self.pad_token_id) for run in runs]
                    )
                    stats["generate_calls"] = k
        except torch.OutOfMemoryError as exc:
            raise BackendFailure(f"TFS model ran out of memory ({prompt_len} prompt tokens, k={k}): {exc}") from exc
        answers = self.tokenizer.batch_decode(sequences[:, prompt_len:], skip_special_tokens=True)
        stats["total_s"] = time.perf_counter() - started
        self.last_stats = stats
        return [answer.strip() for answer in answers]

    def _generate_from_shared_prefill(self, inputs: dict[str, Any], k: int, stats: dict[str, Any]):
        """Prefill all but the last prompt token once, repeat the KV cache K times, sample K answers in one call."""
        input_ids = inputs["input_ids"]
        prefix = {key: value for key, value in inputs.items() if key not in ("input_ids", "attention_mask")}
        prefix["mm_token_type_ids"] = inputs["mm_token_type_ids"][:, :-1]
        started = time.perf_counter()
        prefill = self.model(
            input_ids=input_ids[:, :-1],
            attention_mask=inputs["attention_mask"][:, :-1],
            use_cache=True,
            logits_to_keep=1,
            **prefix,
        )
        cache = prefill.past_key_values
        if k > 1:
            cache.batch_repeat_interleave(k)
        stats["prefill_s"] = time.perf_counter() - started
        # The last prompt token is text, so generate needs no pixels: its M-RoPE positions continue from the
        # position offset (rope_deltas) that the prefill stored on the model.
        repeated = input_ids.expand(k, -1).contiguous()
        started = time.perf_counter()
        sequences = self.model.generate(
            input_ids=repeated,
            attention_mask=torch.ones_like(repeated),
            past_key_values=cache,
            generation_config=self._generation_config(1),
        )
        stats["generate_s"] = time.perf_counter() - started
        stats["generate_calls"] = 1
        return sequences
