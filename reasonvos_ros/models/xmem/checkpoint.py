"""Loading XMem weights: the published ``XMem.pth`` layout, weights-only, strict, with a readable key report.

``load_state_dict(path)`` reads ``.pth``/``.pt`` files with ``torch.load(weights_only=True)`` (no pickled code runs)
and ``.safetensors`` files with safetensors. ``build_network(state)`` reads the dimensions from the tensors,
builds ``XMemNetwork`` and loads strictly; a mismatch raises ``CheckpointError`` listing the missing, unexpected and
mis-shaped keys (first few of each), instead of torch's wall of text or a silently half-loaded model.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .network import CheckpointError, XMemConfig, XMemNetwork

__all__ = [
    "CheckpointError",
    "build_network",
    "golden_network",
    "key_report",
    "load_network",
    "load_state_dict",
    "state_dict_shapes",
]

_REPORT_LIMIT = 8


def load_state_dict(path: str | pathlib.Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file. Raises FileNotFoundError naming the path, CheckpointError for bad content."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"XMem checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise CheckpointError(f"{path} is a safetensors file but the 'safetensors' package is missing") from exc
        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt or unsafe files
            raise CheckpointError(f"cannot read {path} as a weights-only torch checkpoint: {exc}") from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (got {type(state).__name__})")
    return dict(state)


def key_report(network: torch.nn.Module, state: Mapping[str, Any]) -> str:
    """Empty when ``state`` fits ``network`` exactly; otherwise a short description of every kind of mismatch."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
        if items:
            shown = ", ".join(items[:_REPORT_LIMIT])
            more = f", ... ({len(items) - _REPORT_LIMIT} more)" if len(items) > _REPORT_LIMIT else ""
            parts.append(f"{len(items)} {label}: {shown}{more}")
    return "; ".join(parts)


def build_network(state: Mapping[str, Any], source: str = "state dict") -> XMemNetwork:
    """XMemNetwork with dimensions read from ``state``, loaded strictly, in eval mode, on the CPU."""
    state = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}
    config = XMemConfig.from_state_dict(state)
    network = XMemNetwork(config)
    report = key_report(network, state)
    if report:
        raise CheckpointError(f"{source} does not match the XMem layout ({_describe(config)}): {report}")
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
