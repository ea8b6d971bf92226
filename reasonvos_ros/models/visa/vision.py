"""VISA's visual path before the language model: CLIP preprocessing, the CLIP ViT tower and the spatial merging.

* ``clip_preprocess``: what VISA's data pipeline does with ``CLIPImageProcessor`` (openai/clip-vit-large-patch14
  settings, transformers 4.31): resize so the shortest side is 224 with Pillow's bicubic filter, centre-crop 224x224,
  scale to [0, 1] and normalise with the CLIP mean/std. Pillow is not a dependency of this project, so its bicubic
  resampling (separable, antialiased when shrinking, 8-bit fixed point with a horizontal then a vertical pass) is
  re-implemented here in numpy and reproduces Pillow's uint8 output.
* ``ClipVisionTower``: transformers' ``CLIPVisionModel``; features = hidden states of the second-to-last layer
  (``mm_vision_select_layer = -2``) without the CLS token (``select_feature = "patch"``).
* ``VisualTokenizer``: tower -> ``SpatialTokenMerger`` (Chat-UniVi CTM, 112 tokens per frame for 256 patches)
  -> ``mm_projector`` Linear(C_clip -> H). Every frame is processed as its own image, as VISA does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .ctm import DEFAULT_STAGES, MergeTrace, SpatialTokenMerger

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_IMAGE_SIZE = 224

_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit resampling


def _bicubic_kernel(x: np.ndarray) -> np.ndarray:
    a = -0.5  # Pillow's bicubic uses a = -0.5 (OpenCV uses -0.75, hence a different result)
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@functools.lru_cache(maxsize=32)
def _fixed_point_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel: the first input index and the integer weights over a window (Pillow's precompute_coeffs
    and normalize_coeffs_8bpc for the bicubic filter, support 2)."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 2.0 * filter_scale
    window = math.ceil(support) * 2 + 1
    starts = np.zeros(out_size, dtype=np.int64)
    weights = np.zeros((out_size, window), dtype=np.int64)
    for out_index in range(out_size):
        centre = (out_index + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)  # int() truncates like Pillow's C cast
        stop = min(int(centre + support + 0.5), in_size)
        taps = _bicubic_kernel((np.arange(first, stop) - centre + 0.5) / filter_scale)
        total = taps.sum()
        if total != 0.0:
            taps = taps / total
        scaled = taps * (1 << _PRECISION_BITS)
        weights[out_index, : stop - first] = np.where(scaled < 0, scaled - 0.5, scaled + 0.5).astype(np.int64)
        starts[out_index] = first
    starts.flags.writeable = False  # cached: shared between calls
    weights.flags.writeable = False
    return starts, weights


def _resample_axis0(image: np.ndarray, out_size: int) -> np.ndarray:
    """Resample axis 0 of a uint8 array (N, ...) to ``out_size`` rows with Pillow's 8-bit bicubic arithmetic."""
    in_size = image.shape[0]
    starts, weights = _fixed_point_coefficients(in_size, out_size)
    window = weights.shape[1]
    # Rows past the end carry weight 0; padding keeps every tap index valid.
    padded = np.concatenate([image, np.zeros((window, *image.shape[1:]), dtype=image.dtype)], axis=0)
    broadcast = (out_size,) + (1,) * (image.ndim - 1)
    acc = np.full((out_size, *image.shape[1:]), 1 << (_PRECISION_BITS - 1), dtype=np.int64)
    # One tap at a time keeps memory at one output-sized array (gathering all taps at once is ~15x larger).
    for tap in range(window):
        acc += padded[starts + tap].astype(np.int64) * weights[:, tap].reshape(broadcast)
    return np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)


def pil_bicubic_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``PIL.Image.fromarray(image).resize((width, height), Image.BICUBIC)`` for an HxWxC uint8 array."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected an HxWxC uint8 image, got {image.dtype} {image.shape}")
    out = image
    if width != image.shape[1]:  # Pillow does the horizontal pass first, rounding to uint8 in between
        out = _resample_axis0(out.transpose(1, 0, 2), width).transpose(1, 0, 2)
    if height != image.shape[0]:
        out = _resample_axis0(out, height)
    return np.ascontiguousarray(out)


def clip_resize_crop(image: np.ndarray, size: int = CLIP_IMAGE_SIZE) -> np.ndarray:
    """Shortest side to ``size`` (bicubic, the long side truncated like transformers 4.31), then centre crop.
    Returns a ``size x size x 3`` uint8 array."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if height <= width:
        new_h, new_w = size, int(size * width / height)
    else:
        new_h, new_w = int(size * height / width), size
    resized = pil_bicubic_resize(image, new_w, new_h)
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    return resized[top : top + size, left : left + size]


def clip_normalize(crops_uint8: np.ndarray) -> np.ndarray:
    """(N, 3, S, S) or (N, S, S, 3) uint8 -> (N, 3, S, S) float32 CLIP pixel values."""
    crops = np.asarray(crops_uint8)
    if crops.ndim != 4:
        raise ValueError(f"expected a batch of images (N,3,S,S) or (N,S,S,3), got shape {crops.shape}")
    if crops.shape[-1] == 3 and crops.shape[1] != 3:
        crops = crops.transpose(0, 3, 1, 2)
    mean = np.asarray(CLIP_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(CLIP_STD, dtype=np.float32)[:, None, None]
    return ((crops.astype(np.float32) / np.float32(255.0)) - mean) / std


def clip_preprocess(frames_rgb: Sequence[np.ndarray], size: int = CLIP_IMAGE_SIZE) -> np.ndarray:
    """RGB uint8 frames (any sizes) -> (N, 3, size, size) float32 CLIP pixel values."""
    crops = np.stack([clip_resize_crop(np.asarray(f), size) for f in frames_rgb])
    return clip_normalize(crops)


class ClipVisionTower(nn.Module):
    """CLIP ViT patch features of the ``select_layer``-th hidden state, CLS dropped (LLaVA/Chat-UniVi style).

    Parameter names: ``vision_model.*`` of transformers' ``CLIPVisionModel`` (as in openai/clip-vit-large-patch14).
    """

    def __init__(self, config, select_layer: int = -2) -> None:
        super().__init__()
        from transformers import CLIPVisionModel

        self.vision_tower = CLIPVisionModel(config)
        self.select_layer = int(select_layer)
        num_states = config.num_hidden_layers + 1
        if not -num_states <= self.select_layer < num_states:
            raise ValueError(f"mm_vision_select_layer {select_layer} is out of range for {num_states} hidden states")

    @property
    def hidden_size(self) -> int:
        return self.vision_tower.config.hidden_size

    @property
    def num_patches(self) -> int:
        cfg = self.vision_tower.config
        return (cfg.image_size // cfg.patch_size) ** 2

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        param = next(self.vision_tower.parameters())
        out = self.vision_tower(pixel_values.to(device=param.device, dtype=param.dtype), output_hidden_states=True)
        return out.hidden_states[self.select_layer][:, 1:]


@dataclass
class VisualTokens:
    """Per-frame outputs of the visual path (all (num_frames, ...))."""

    patch_features: torch.Tensor  # (F, 256, C_clip)
    clustered: torch.Tensor  # (F, 112, C_clip)
    projected: torch.Tensor  # (F, 112, H)
    traces: list[MergeTrace]


class VisualTokenizer(nn.Module):
    """CLIP tower + spatial merging + ``mm_projector``; frames are processed one at a time, as in VISA."""

    def __init__(
        self,
        clip_config,
        llm_hidden_size: int,
        select_layer: int = -2,
        stages: Sequence[tuple[float, int]] = DEFAULT_STAGES,
    ) -> None:
        super().__init__()
        self.tower = ClipVisionTower(clip_config, select_layer)
        self.merger = SpatialTokenMerger(stages)
        self.mm_projector = nn.Linear(clip_config.hidden_size, llm_hidden_size)

    @property
    def tokens_per_image(self) -> int:
        return self.merger.tokens_per_image(self.tower.num_patches)

    def forward(
        self,
        pixel_values: torch.Tensor,
        noise_fn: Callable[[int, int, torch.Size, torch.Tensor], torch.Tensor] | None = None,
    ) -> VisualTokens:
        """``pixel_values`` (F, 3, S, S). ``noise_fn(frame, stage, shape, like)`` may supply the density noise."""
        feats = self.tower(pixel_values)
        clustered = []
        traces = []
        for frame in range(feats.shape[0]):
            frame_noise = None if noise_fn is None else (lambda s, shape, like, f=frame: noise_fn(f, s, shape, like))
            merged, trace = self.merger(feats[frame : frame + 1], frame_noise)
            clustered.append(merged)
            traces.append(trace)
        clustered_t = torch.cat(clustered, dim=0).to(self.mm_projector.weight.dtype)
        return VisualTokens(feats, clustered_t, self.mm_projector(clustered_t), traces)
