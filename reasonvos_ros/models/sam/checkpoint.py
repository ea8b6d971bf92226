"""Reading SAM weights in the ORIGINAL segment-anything layout and mapping them onto ``SamTextPromptModel``.

``load_sam_checkpoint(path)`` reads ``sam_vit_*.pth`` (``torch.load(weights_only=True)``, so no pickled code runs)
or a ``.safetensors`` file and returns the flat state dict. ``original_key_shapes(config)`` lists the keys/shapes
the original ``Sam`` module has for a configuration; ``convert_original_state_dict`` strips a prefix (VISA stores
SAM under ``model.visual_model.``), renames each key to this package's modules and reports what is missing,
unexpected or mis-shaped, in the original names.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..load_report import key_problem_lines
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


@dataclass
class SamLoadReport:
    """Outcome of mapping an original-layout state dict onto the model (keys in original names, prefix included)."""

    prefix: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatches: list[str] = field(default_factory=list)
    ignored_outside_prefix: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches)

    def __str__(self) -> str:
        lines = [
            f"SAM weights (prefix {self.prefix!r}): {self.loaded} tensors loaded, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.shape_mismatches)} with the wrong shape"
            + (
                f"; {self.ignored_outside_prefix} keys outside the prefix ignored"
                if self.ignored_outside_prefix
                else ""
            )
        ]
        lines += key_problem_lines(self.missing, self.unexpected, self.shape_mismatches, shown=20)
        return "\n".join(lines)


def convert_original_state_dict(
    state_dict: Mapping[str, Any], config: SamConfig, prefix: str = ""
) -> tuple[dict[str, torch.Tensor], SamLoadReport]:
    """Rename the keys under ``prefix`` to SamTextPromptModel names; tensors with a wrong shape are left out (and
    reported). Numpy arrays are accepted and converted."""
    expected = original_key_shapes(config)
    report = SamLoadReport(prefix=prefix)
    converted: dict[str, torch.Tensor] = {}
    seen = set()
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            report.ignored_outside_prefix += 1
            continue
        original = key[len(prefix) :]
        if original not in expected:
            report.unexpected.append(key)
            continue
        seen.add(original)
        tensor = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        if not isinstance(tensor, torch.Tensor):
            raise SamCheckpointError(f"value of {key!r} is a {type(value).__name__}, not a tensor")
        if tuple(tensor.shape) != expected[original]:
            report.shape_mismatches.append(f"{key} {tuple(tensor.shape)} != {expected[original]}")
            continue
        converted[internal_key(original, config)] = tensor
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
    """Read a SAM (or VISA) checkpoint: ``.pth``/``.pt``/``.bin`` via ``torch.load(weights_only=True)`` or
    ``.safetensors``. A ``{"model": ...}`` / ``{"state_dict": ...}`` wrapper is unwrapped."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SAM checkpoint not found: {path}")
    if not path.is_file():
        raise SamCheckpointError(f"SAM checkpoint path is not a file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise SamCheckpointError(f"reading {path} needs the 'safetensors' package") from exc
        try:
            state = load_file(str(path))
        except Exception as exc:
            raise SamCheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SamCheckpointError(
                f"{path} could not be read with torch.load(weights_only=True) (not a torch checkpoint, corrupt, or "
                f"it pickles objects other than tensors): {exc}"
            ) from exc
    else:
        raise SamCheckpointError(f"unsupported SAM checkpoint format {suffix!r} ({path}); use .pth or .safetensors")
    for wrapper in ("model", "state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SamCheckpointError(f"{path} does not hold a flat state dict of tensors")
    return dict(state)
