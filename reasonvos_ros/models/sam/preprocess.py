"""SAM input preparation: resize the longest side to the encoder size, normalise, pad; and mask post-processing.

The official pipeline (segment_anything's ``ResizeLongestSide.apply_image``, as VISA uses it) resizes the uint8 RGB
frame with Pillow's bilinear filter. Pillow is not a dependency here, so ``resize_bilinear_like_pillow`` re-implements
that filter in numpy with the same arithmetic (triangle kernel widened by the scale factor when shrinking, 22-bit
fixed-point coefficients, first pass rounded to uint8 before the second, pass order as Pillow 13 picks it). It
reproduces Pillow's output bit for bit on the golden data (see the ``sam_text_prompt`` golden check) and matched
Pillow 13.0.0 exactly on 300 further random size pairs (up- and down-scaling, both orientations), so the encoder
sees exactly the pixels the official code feeds it. Other Pillow versions may order the passes differently for
some down-scaling cases (a difference of one grey level in places).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .config import PIXEL_MEAN, PIXEL_STD

# Pillow's fixed-point precision for 8-bit resampling: 32 bits - 8 bits of pixel - 2 bits of headroom.
_PRECISION_BITS = 22


def longest_side_size(height: int, width: int, target: int) -> tuple[int, int]:
    """Size (h, w) after scaling so the longer side equals ``target``; sides round half up like the official code."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    scale = target * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def _bilinear_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel: first input index and fixed-point weights (out_size x max_taps, zero past the last tap)."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 1.0 * filter_scale  # the bilinear (triangle) kernel has radius 1 before widening
    max_taps = math.ceil(support) * 2 + 1
    centers = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    # np.trunc rounds toward zero, as the C cast does
    starts = np.maximum(np.trunc(centers - support + 0.5), 0).astype(np.int64)
    stops = np.minimum(np.trunc(centers + support + 0.5), in_size).astype(np.int64)
    taps = starts[:, None] + np.arange(max_taps)[None, :]
    # Multiply by the reciprocal and sum left to right (cumsum), as Pillow does: another rounding of either can
    # move a fixed-point weight by one unit and a pixel by one level.
    kernel = np.clip(1.0 - np.abs((taps - centers[:, None] + 0.5) * (1.0 / filter_scale)), 0.0, None)
    kernel = np.where(taps < stops[:, None], kernel, 0.0)
    totals = np.cumsum(kernel, axis=1)[:, -1:]
    kernel = np.divide(kernel, totals, out=kernel.copy(), where=totals != 0.0)
    # all weights are >= 0, so Pillow's rounding (int)(0.5 + k * 2**22) is a truncation after adding 0.5
    weights = np.trunc(0.5 + kernel * (1 << _PRECISION_BITS)).astype(np.int64)
    return starts, weights


def _resample_axis(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One separable pass along ``axis`` (0 rows, 1 columns) of an HxWxC uint8 image, rounded back to uint8."""
    in_size = image.shape[axis]
    starts, weights = _bilinear_coefficients(in_size, out_size)
    source = np.moveaxis(image, axis, 0).astype(np.int32)  # (in, other, C)
    # Integer accumulation in int32 as in Pillow (the weights sum to about 2**22, so sums of 8-bit pixels stay below
    # 2**31); one vectorised step per tap. Past a pixel's last tap the weight is 0, so the clamped index is harmless.
    accumulated = np.full((out_size, *source.shape[1:]), 1 << (_PRECISION_BITS - 1), dtype=np.int32)
    weights = weights.astype(np.int32)
    for tap in range(weights.shape[1]):
        index = np.minimum(starts + tap, in_size - 1)
        accumulated += weights[:, tap].reshape(-1, 1, 1) * source[index]
    result = np.clip(accumulated >> _PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.moveaxis(result, 0, axis)


def resize_bilinear_like_pillow(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an HxWxC uint8 image like ``PIL.Image.resize((width, height), Image.BILINEAR)``."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected an HxWxC uint8 image, got dtype {image.dtype} shape {image.shape}")
    in_height, in_width = image.shape[:2]
    # The uint8 rounding between the passes makes their order matter (by one level). Pillow 13 runs the vertical
    # pass first exactly when the height shrinks by more than twice as many pixels as the width does (a rule found
    # by comparing both orders with Pillow 13.0.0 on ~1400 size pairs; horizontal-first otherwise, as in older
    # Pillow, which covers every upscaling case such as the golden 240x320 -> 768x1024).
    vertical_first = height < in_height and (in_height - height) > 2 * (in_width - width)
    passes = [(height, 0), (width, 1)] if vertical_first else [(width, 1), (height, 0)]
    result = image
    for size, axis in passes:
        if size != result.shape[axis]:
            result = _resample_axis(result, size, axis=axis)
    return np.ascontiguousarray(result)


def normalize_and_pad(resized_rgb_uint8: np.ndarray, image_size: int) -> torch.Tensor:
    """(x - mean) / std in float32, CHW, zero-padded right/bottom to image_size x image_size (after normalising,
    so the padding is 0 in normalised units, as in the official code). Returns 1x3xSxS."""
    height, width = resized_rgb_uint8.shape[:2]
    if height > image_size or width > image_size:
        raise ValueError(f"resized image {height}x{width} exceeds the encoder size {image_size}")
    pixels = torch.from_numpy(np.ascontiguousarray(resized_rgb_uint8)).permute(2, 0, 1).float()
    mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD, dtype=torch.float32).view(3, 1, 1)
    pixels = (pixels - mean) / std
    pixels = F.pad(pixels, (0, image_size - width, 0, image_size - height))
    return pixels.unsqueeze(0)


def preprocess_image(image_rgb_uint8: np.ndarray, image_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """HxWx3 uint8 RGB frame -> (1x3xSxS normalised padded tensor, (h, w) of the resized image before padding)."""
    image = np.asarray(image_rgb_uint8)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got dtype {image.dtype} shape {image.shape}")
    height, width = longest_side_size(image.shape[0], image.shape[1], image_size)
    resized = resize_bilinear_like_pillow(image, height, width)
    return normalize_and_pad(resized, image_size), (height, width)


def postprocess_masks(
    low_res_logits: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int], image_size: int
) -> torch.Tensor:
    """Low-res logits (B, C, h, w) -> logits at the original frame size (B, C, H, W).

    Bilinear (align_corners=False, no antialias) upsampling to the padded encoder square, crop of the valid
    ``input_size`` region, bilinear resize to ``original_size``.
    """
    if low_res_logits.ndim != 4:
        raise ValueError(f"low_res_logits must be (B, C, h, w), got shape {tuple(low_res_logits.shape)}")
    input_h, input_w = (int(v) for v in input_size)
    original_h, original_w = (int(v) for v in original_size)
    if not (0 < input_h <= image_size and 0 < input_w <= image_size):
        raise ValueError(f"input_size {input_size} must lie within the {image_size}x{image_size} encoder input")
    if original_h <= 0 or original_w <= 0:
        raise ValueError(f"original_size must be positive, got {original_size}")
    masks = F.interpolate(low_res_logits.float(), (image_size, image_size), mode="bilinear", align_corners=False)
    masks = masks[..., :input_h, :input_w]
    return F.interpolate(masks, (original_h, original_w), mode="bilinear", align_corners=False)
