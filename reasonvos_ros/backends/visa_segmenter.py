"""VISA as the pipeline's key-frame segmenter (``segmenter: {name: visa, options: {...}}``).

Tokenizer: the checkpoint's ``tokenizer.model`` is read with ``sentencepiece`` and tokenised with the semantics of
transformers 4.31's slow LlamaTokenizer that VISA ran with (``models.visa.tokenizer``); without ``sentencepiece``
(or without ``tokenizer.model``) transformers' own tokenizer is used, whose ids can differ around ``[SEG]``.

Per call: the reference frames (in the order given) and then the key frame are CLIP-preprocessed (shortest side 224
with Pillow-exact bicubic, centre crop, CLIP mean/std) and turned into 112 visual tokens each; the instruction
becomes VISA's prompt (``models.visa.prompt``: reference/target template, the '?' rule, llava_v1, teacher-forced
"It is [SEG]."); the LLaMA hidden state that predicts ``[SEG]`` goes through ``text_hidden_fcs`` to h_seg, the only
sparse prompt of SAM on the key frame at its original size. mask = logits > 0.

"Not present" (VISA has no explicit head for it; it was trained to output an empty mask for absent objects):
the segmentation is reported ``present=False`` with an empty mask when

* the mask covers fewer than ``max(min_area_pixels, min_area_fraction * H * W)`` pixels (default: fewer than
  0.05 % of the frame, which includes the all-empty prediction), or
* ``score`` < ``min_score``, where ``score`` is the mean sigmoid of the mask logits over the mask's pixels (always
  > 0.5 for a non-empty mask; 0 for an empty one). Disabled by default (``min_score=0``), or
* ``min_iou_prediction`` is set and SAM's IoU prediction is below it (VISA did not train the IoU head, so this is
  off by default).

``Segmentation.details`` carries the area, the IoU prediction, the prompt length and per-stage timings.

The options are ``VisaOptions``: the three weight paths are required; a ``seed`` of null uses torch's global RNG
like the official code and disables the visual-token cache.

``release()`` unloads the model (GPU and host memory); the next ``segment`` reloads it from disk.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reasonvos_ros.core.errors import BackendFailure, BackendUnavailable, ConfigError
from reasonvos_ros.core.interfaces import KeyframeSegmenter, check_positions
from reasonvos_ros.core.options import (
    OptionSet,
    device_option,
    dtype_option,
    num_threads_option,
    option,
    weights_path,
)
from reasonvos_ros.core.types import Frame, Segmentation


def _thin(positions: Sequence[int], count: int) -> list[int]:
    """At most ``count`` positions, evenly spread over the given ones (order kept)."""
    positions = list(positions)
    if len(positions) <= count:
        return positions
    if count <= 0:
        return []
    return [positions[int((j + 0.5) * len(positions) / count)] for j in range(count)]


def decide_presence(
    mask: np.ndarray,
    mask_logits: np.ndarray,
    iou_prediction: float | None,
    min_area_fraction: float = 0.0005,
    min_area_pixels: int = 1,
    min_score: float = 0.0,
    min_iou_prediction: float | None = None,
) -> tuple[bool, float, str]:
    """VISA's "not present" rule (module docstring) -> (present, score, reason)."""
    area = int(np.count_nonzero(mask))
    score = float(1.0 / (1.0 + np.exp(-mask_logits[mask].astype(np.float64))).mean()) if area else 0.0
    needed = max(int(min_area_pixels), int(np.ceil(min_area_fraction * mask.size)))
    if area == 0:
        return False, score, "empty mask (VISA predicts no pixel)"
    if area < needed:
        return False, score, f"mask too small ({area} px < {needed} px)"
    if score < min_score:
        return False, score, f"mask score {score:.3f} < {min_score}"
    if min_iou_prediction is not None and iou_prediction is not None and iou_prediction < min_iou_prediction:
        return False, score, f"IoU prediction {iou_prediction:.3f} < {min_iou_prediction}"
    return True, score, ""


# The three weight paths VISA needs: option name -> what the path is.
VISA_WEIGHTS = {
    "visa_dir": "the path to the merged VISA checkpoint directory (config.json, tokenizer, weights)",
    "sam_checkpoint": "the path to sam_vit_h_4b8939.pth",
    "clip_dir": "the path to the openai/clip-vit-large-patch14 directory",
}


@dataclass(frozen=True)
class VisaOptions(OptionSet):
    visa_dir: str | None = option(None, "merged VISA checkpoint directory, with tokenizer (required)")
    sam_checkpoint: str | None = option(None, "SAM ViT-H checkpoint sam_vit_h_4b8939.pth (required)")
    clip_dir: str | None = option(None, "openai/clip-vit-large-patch14 directory (required)")
    device: str = device_option()
    dtype: str = dtype_option()
    min_area_fraction: float = option(
        0.0005, "masks covering less of the frame are 'not present' (must be < 1)", low=0.0, high=1.0
    )
    min_area_pixels: int = option(1, "masks with fewer pixels are 'not present'", low=1)
    min_score: float = option(
        0.0, "masks whose mean sigmoid of the logits over the mask is lower are 'not present'", low=0.0, high=1.0
    )
    min_iou_prediction: float | None = option(
        None, "masks with a lower SAM IoU prediction are 'not present' (null: off; VISA did not train that head)"
    )
    max_references: int = option(11, "more reference frames are thinned evenly", low=0)
    lowercase_instruction: bool = option(True, "lower-case the instruction, as VISA's evaluation did")
    seed: int | None = option(
        0,
        "a frame's clustering noise is drawn from a generator seeded with (seed, frame index): reproducible visual "
        "tokens (null: torch's global RNG, as the official code, and no visual-token cache)",
    )
    visual_cache_size: int = option(
        32, "frames whose projected visual tokens are kept (reference frames of successive queries)", low=0
    )
    embedding_cache_size: int = option(2, "key frames whose SAM image embeddings are kept", low=0)
    strict: bool = option(True, "refuse checkpoints with missing or unexpected keys")
    progress: bool = option(True, "progress bars while loading")
    num_threads: int | None = num_threads_option()

    def check(self) -> None:
        if self.min_area_fraction >= 1.0:
            raise ConfigError(f"min_area_fraction must be in [0, 1), got {self.min_area_fraction}")


class VisaSegmenter(KeyframeSegmenter):
    """VISA key-frame segmenter; see the module docstring for the behaviour, and ``VisaOptions``."""

    Options = VisaOptions

    def __init__(self, options: VisaOptions | None = None, /, **values: Any) -> None:
        self.options = options = VisaOptions.build(options, values)
        self.paths = {
            name: weights_path(
                getattr(options, name), option_name=name, backend="visa", role="segmenter", label="VISA", what=what
            )
            for name, what in VISA_WEIGHTS.items()
        }
        from reasonvos_ros.models.weights import resolve_device_dtype

        self.device, self.dtype = resolve_device_dtype(options.device, options.dtype, option_prefix="VISA option ")
        # Without a seed the visual tokens of a frame differ between calls: nothing to cache.
        self.visual_cache_size = options.visual_cache_size if options.seed is not None else 0
        if options.num_threads is not None:
            torch.set_num_threads(options.num_threads)
        self.lock = threading.RLock()
        self.model = None
        self.tokenizer = None
        self.load_report = None
        self._embeddings: OrderedDict[int, tuple[torch.Tensor, tuple[int, int]]] = OrderedDict()
        self._visual: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.cache_hits = {"visual": 0, "sam": 0}
        self._load()

    # ---- lifecycle -----------------------------------------------------------------------------------------------

    def _load(self) -> None:
        from reasonvos_ros.models.visa.checkpoint import VisaCheckpointError, load_visa

        try:
            self.model, self.tokenizer, self.load_report = load_visa(
                self.paths["visa_dir"],
                self.paths["sam_checkpoint"],
                self.paths["clip_dir"],
                device=self.device,
                dtype=self.dtype,
                strict=self.options.strict,
                progress=self.options.progress,
            )
        except VisaCheckpointError as exc:
            raise BackendUnavailable(f"cannot load VISA: {exc}") from exc
        if len(self.tokenizer) > self.model.config.llama.vocab_size:
            raise BackendUnavailable(
                f"the tokenizer has {len(self.tokenizer)} tokens but the model embeds only "
                f"{self.model.config.llama.vocab_size}"
            )

    def release(self) -> None:
        """Unload the model and cached embeddings; the next ``segment`` reloads from disk."""
        with self.lock:
            self.model = None
            self._embeddings.clear()
            self._visual.clear()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    # ---- segmentation --------------------------------------------------------------------------------------------

    def _noise_fn(self, frame_indices: Sequence[int]):
        """Density noise for a batch of frames: one generator per frame, seeded with (seed, Frame.index)."""
        if self.options.seed is None:
            return None
        generators: dict[int, torch.Generator] = {}

        def draw(position: int, stage: int, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
            if position not in generators:
                mixed = (self.options.seed * 1_000_003 + int(frame_indices[position])) % (2**63)
                generators[position] = torch.Generator(device="cpu").manual_seed(mixed)
            draws = torch.rand(shape, generator=generators[position], dtype=torch.float32)
            return draws.to(like.device, like.dtype)

        return draw

    def _visual_tokens(self, frames: Sequence[Frame], images: Sequence[np.ndarray]) -> torch.Tensor:
        """(F, tokens_per_image, H) projected visual tokens, from the cache where possible."""
        from reasonvos_ros.models.visa.vision import clip_preprocess

        keys = [frame.uid for frame in frames]  # unique per frame in the process: clips never share entries
        todo = [i for i, key in enumerate(keys) if key not in self._visual]
        self.cache_hits["visual"] += len(frames) - len(todo)
        fresh: dict[int, torch.Tensor] = {}
        if todo:
            pixel_values = torch.from_numpy(clip_preprocess([images[i] for i in todo]))
            visual = self.model.visual(
                pixel_values.to(self.model.device), self._noise_fn([frames[i].index for i in todo])
            )
            fresh = {keys[i]: visual.projected[j] for j, i in enumerate(todo)}
        tokens = torch.stack([fresh[key] if key in fresh else self._visual[key] for key in keys])
        if self.visual_cache_size:
            for key in keys:
                if key in fresh:
                    self._visual[key] = fresh[key]
                self._visual.move_to_end(key)
            while len(self._visual) > self.visual_cache_size:
                self._visual.popitem(last=False)
        return tokens

    def _key_embeddings(self, frame: Frame, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        cache_key = frame.uid
        if cache_key in self._embeddings:
            self._embeddings.move_to_end(cache_key)
            self.cache_hits["sam"] += 1
            return self._embeddings[cache_key]
        result = self.model.encode_keyframe(image)
        if self.options.embedding_cache_size:
            self._embeddings[cache_key] = result
            while len(self._embeddings) > self.options.embedding_cache_size:
                self._embeddings.popitem(last=False)
        return result

    def segment(self, frames: Sequence[Frame], key: int, references: Sequence[int], instruction: str) -> Segmentation:
        from reasonvos_ros.models.visa.prompt import build_prompt_ids

        check_positions(frames, key, references)
        with self.lock, torch.no_grad():
            if self.model is None:
                self._load()
            timings: dict[str, float] = {}
            refs = _thin(references, self.options.max_references)
            key_image = np.asarray(frames[key].image)
            if key_image.ndim != 3 or key_image.shape[2] != 3 or key_image.dtype != np.uint8:
                raise ValueError(f"key frame must be HxWx3 uint8 RGB, got {key_image.dtype} {key_image.shape}")
            try:
                input_ids = build_prompt_ids(
                    self.tokenizer, instruction, len(refs), lowercase=self.options.lowercase_instruction
                )
            except ValueError as exc:
                raise ConfigError(f"VISA prompt: {exc}") from exc
            start = time.perf_counter()
            prompt_frames = [frames[r] for r in refs] + [frames[key]]
            images = [np.asarray(frames[r].image) for r in refs] + [key_image]
            tokens = self._visual_tokens(prompt_frames, images)
            timings["vision_s"] = time.perf_counter() - start
            start = time.perf_counter()
            prompt = self.model.encode_prompt_with_tokens(input_ids, tokens)
            timings["llm_s"] = time.perf_counter() - start
            start = time.perf_counter()
            embeddings, input_size = self._key_embeddings(frames[key], key_image)
            timings["sam_encode_s"] = time.perf_counter() - start
            start = time.perf_counter()
            out = self.model.decode_mask(embeddings, prompt.h_seg, input_size, key_image.shape[:2])
            timings["sam_decode_s"] = time.perf_counter() - start
        logits = out.mask_logits.cpu().numpy()
        if not np.all(np.isfinite(logits)):
            raise BackendFailure("VISA produced non-finite mask logits (NaN/Inf); check the weights and dtype")
        mask = logits > 0
        iou = float(out.iou_predictions.float().reshape(-1)[0])
        present, score, reason = decide_presence(
            mask,
            logits,
            iou,
            self.options.min_area_fraction,
            self.options.min_area_pixels,
            self.options.min_score,
            self.options.min_iou_prediction,
        )
        details: dict[str, Any] = {
            "area_px": int(mask.sum()),
            "iou_prediction": iou,
            "num_references": len(refs),
            "references": refs,
            "prompt_tokens": len(input_ids),
            "expanded_tokens": prompt.layout.expanded_length,
            "timings": timings,
        }
        if not present:
            mask = np.zeros_like(mask)
        return Segmentation(mask=mask, score=score, present=present, reason=reason, details=details)
