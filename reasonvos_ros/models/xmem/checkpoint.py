"""Loading XMem weights: the published ``XMem.pth`` layout, weights-only, strict, with a readable key report.

``load_state_dict(path)`` reads ``.pth``/``.pt`` files with ``torch.load(weights_only=True)`` (no pickled code runs)
and ``.safetensors`` files with safetensors (through ``models.weights``). ``build_network(state)`` reads the
dimensions from the tensors, builds ``XMemNetwork`` and loads strictly; a mismatch raises ``CheckpointError`` with a
``LoadReport`` listing the missing, unexpected and mis-shaped keys (first few of each), instead of torch's wall of
text or a silently half-loaded model.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..weights import as_tensor, compare_state_dict, read_state_dict
from .network import CheckpointError, XMemConfig, XMemNetwork

__all__ = [
    "CheckpointError",
    "build_network",
    "golden_network",
    "load_network",
    "load_state_dict",
    "state_dict_shapes",
]


def load_state_dict(path: str | pathlib.Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file. Raises FileNotFoundError naming the path, CheckpointError for bad content."""
    return read_state_dict(path, what="XMem checkpoint", error=CheckpointError)


def build_network(state: Mapping[str, Any], source: str = "state dict") -> XMemNetwork:
    """XMemNetwork with dimensions read from ``state``, loaded strictly, in eval mode, on the CPU."""
    state = {k: as_tensor(v, k, CheckpointError) for k, v in state.items()}
    config = XMemConfig.from_state_dict(state)
    network = XMemNetwork(config)
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    report = compare_state_dict(state, expected, source)
    if not report.ok:
        raise CheckpointError(f"the checkpoint does not match the XMem layout ({_describe(config)}):\n{report}")
    network.load_state_dict(state, strict=True)
    return network.eval()


def load_network(path: str | pathlib.Path) -> XMemNetwork:
    return build_network(load_state_dict(path), source=str(path))


def golden_network(config: XMemConfig, weights_fn) -> XMemNetwork:
    """Network with deterministic golden weights: ``weights_fn({key: shape}) -> {key: ndarray}`` (e.g.
    ``GoldenCase.weights``), for the key list of ``config``."""
    shapes = state_dict_shapes(config)
    return build_network({k: torch.from_numpy(np.asarray(v)) for k, v in weights_fn(shapes).items()}, "golden weights")


def state_dict_shapes(config: XMemConfig) -> dict[str, tuple[int, ...]]:
    """Checkpoint keys and shapes for ``config`` (built on the meta device: no memory, no initialisation)."""
    with torch.device("meta"):
        network = XMemNetwork(config)
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}


def _describe(config: XMemConfig) -> str:
    return f"key_dim {config.key_dim}, value_dim {config.value_dim}, hidden_dim {config.hidden_dim}"
