"""A tiny XMem network for tests and benchmarks: same code as the published model, small widths, deterministic
golden weights (no download, no pretrained weights; its masks are not meaningful segmentations).

``TINY_CONFIG`` is the small configuration, ``golden_weights(config, seed)`` its state dict from the golden
parameter generator, and ``write_golden_checkpoint(path, config, seed)`` saves that state dict with ``torch.save``
so that it can be loaded through the real checkpoint loader.
"""

from __future__ import annotations

import pathlib

import torch

from .checkpoint import state_dict_shapes
from .network import XMemConfig

TINY_CONFIG = XMemConfig(
    key_dim=8,
    value_dim=16,
    hidden_dim=8,
    key_width=8,
    key_blocks=(1, 1, 1),
    value_width=8,
    value_blocks=(1, 1, 1),
    decoder_dims=(16, 8, 8),
    hidden_mid=8,
    cbam_reduction=4,
)


def golden_weights(config: XMemConfig, seed: int) -> dict[str, torch.Tensor]:
    """State dict of ``config`` filled by the deterministic golden generator (``golden.golden_weights``)."""
    from ...golden.golden_weights import golden_state_dict

    return {k: torch.from_numpy(v) for k, v in golden_state_dict(state_dict_shapes(config), seed).items()}


def write_golden_checkpoint(path: str | pathlib.Path, config: XMemConfig, seed: int) -> pathlib.Path:
    """Save ``golden_weights(config, seed)`` to ``path`` (a .pth file, plain tensor dict) and return the path."""
    path = pathlib.Path(path)
    torch.save(golden_weights(config, seed), path)
    return path
