"""Reading SAM weights in the ORIGINAL segment-anything layout and mapping them onto ``SamTextPromptModel``.

``load_sam_checkpoint(path)`` reads ``sam_vit_*.pth`` (``torch.load(weights_only=True)``, so no pickled code runs)
or a ``.safetensors`` file and returns the flat state dict (through ``models.weights``). ``original_key_shapes(config)``
lists the keys/shapes the original ``Sam`` module has for a configuration; ``convert_original_state_dict`` strips a
prefix (VISA stores SAM under ``model.visual_model.``), renames each key to this package's modules and reports what
is missing, unexpected or mis-shaped, in the original names.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..weights import LoadReport, as_tensor, read_state_dict
from . import image_encoder, mask_decoder, prompt_encoder
from .config import SamCheckpointError, SamConfig

# part prefix in the original Sam module -> attribute of SamTextPromptModel
PART_ATTRIBUTES = {"image_encoder": "image_encoder", "prompt_encoder": "prompt_encoder", "mask_decoder": "mask_decoder"}
# how each part's submodule is named inside our wrappers
_WRAPPED_NAMES = {"image_encoder": "vision", "prompt_encoder": "prompt", "mask_decoder": "decoder"}


def original_key_shapes(config: SamConfig) -> dict[str, tuple[int, ...]]:
    """Every key of the original ``Sam`` state dict for ``config``, with its shape, in the original order."""
    shapes: dict[str, tuple[int, ...]] = {}
    for part, module in (
        ("image_encoder", image_encoder),
        ("prompt_encoder", prompt_encoder),
        ("mask_decoder", mask_decoder),
    ):
        shapes.update({f"{part}.{key}": shape for key, shape in module.original_key_shapes(config).items()})
    return shapes


def internal_key(original_key: str, config: SamConfig) -> str | None:
    """Original key (no prefix, e.g. ``mask_decoder.iou_token.weight``) -> SamTextPromptModel key, None if unknown."""
    part, _, rest = original_key.partition(".")
    if part == "image_encoder":
        name = image_encoder.internal_key(rest)
    elif part == "prompt_encoder":
        name = prompt_encoder.internal_key(rest)
    elif part == "mask_decoder":
        name = mask_decoder.internal_key(rest, config)
    else:
        return None
    return None if name is None else f"{PART_ATTRIBUTES[part]}.{_WRAPPED_NAMES[part]}.{name}"


def convert_original_state_dict(
    state_dict: Mapping[str, Any], config: SamConfig, prefix: str = ""
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Rename the keys under ``prefix`` to SamTextPromptModel names; tensors with a wrong shape are left out (and
    reported, in the original names with the prefix). Numpy arrays are accepted and converted."""
    expected = original_key_shapes(config)
    report = LoadReport(f"SAM weights (prefix {prefix!r})")
    converted: dict[str, torch.Tensor] = {}
    seen = set()
    outside = 0
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            outside += 1
            continue
        original = key[len(prefix) :]
        if original not in expected:
            report.unexpected.append(key)
            continue
        seen.add(original)
        tensor = as_tensor(value, key, SamCheckpointError)
        if report.fits(key, tensor.shape, expected[original]):
            converted[internal_key(original, config)] = tensor
    if outside:
        report.ignore(f"outside the prefix {prefix!r}", outside)
    report.missing = [prefix + key for key in expected if key not in seen]
    report.loaded = len(converted)
    return converted, report


def random_original_state_dict(config: SamConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the original layout, for tests and benchmarks: matrices ~ N(0, 1/fan_in), norm scales
    ~ 1 + N(0, 0.1), other vectors ~ N(0, 0.1). (transformers' own SAM initialisation uses a standard deviation of
    1e-10 for the vision encoder, which drives activations into denormal floats and makes CPU timings meaningless.)"""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in original_key_shapes(config).items():
        noise = torch.randn(shape, generator=generator)
        if len(shape) > 1:
            state[key] = noise / float(np.sqrt(np.prod(shape[1:])))
        elif key.endswith(".weight"):
            state[key] = 1.0 + 0.1 * noise
        else:
            state[key] = 0.1 * noise
    return state


def load_sam_checkpoint(path: str | pathlib.Path) -> dict[str, torch.Tensor]:
    """Read a SAM (or VISA) checkpoint: ``.pth``/``.pt``/``.bin``/``.ckpt`` via ``torch.load(weights_only=True)`` or
    ``.safetensors``. A ``{"model": ...}`` / ``{"state_dict": ...}`` wrapper is unwrapped."""
    return read_state_dict(path, what="SAM checkpoint", error=SamCheckpointError)
