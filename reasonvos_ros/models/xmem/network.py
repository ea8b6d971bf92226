"""The XMem network: configuration (read from a checkpoint) and the per-frame operations used by inference.

``XMemConfig()`` is the published model (key_dim 64, value_dim 512, hidden_dim 64, multi-object, ResNet-50 /
ResNet-18 trunks); ``XMemConfig.from_state_dict`` reads every dimension from a checkpoint, so smaller networks built
with the same code (tests, benchmarks) load through the same path. ``XMemNetwork().state_dict()`` has exactly the
keys, shapes and order of the published ``XMem.pth`` (``test/golden_data/xmem_keys.json`` in this repository).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..weights import WeightsError
from .modules import Decoder, KeyEncoder, KeyProjection, ValueEncoder


class CheckpointError(WeightsError):
    """A state dict that does not fit the XMem layout (missing, unexpected or mis-shaped tensors)."""


@dataclass(frozen=True)
class XMemConfig:
    key_dim: int = 64
    value_dim: int = 512
    hidden_dim: int = 64  # 0 disables the sensory memory
    single_object: bool = False  # value encoder without the "other objects" mask channel
    key_width: int = 64  # ResNet-50 stem width; f4/f8/f16 have 4x/8x/16x this many channels
    key_blocks: tuple[int, int, int] = (3, 4, 6)
    value_width: int = 64  # ResNet-18 stem width
    value_blocks: tuple[int, int, int] = (2, 2, 2)
    decoder_dims: tuple[int, int, int] = (512, 256, 256)  # decoder features at stride 16, 8, 4
    hidden_mid: int = 256  # decoder hidden-updater projection width
    cbam_reduction: int = 16

    @property
    def feature_channels(self) -> tuple[int, int, int]:
        """Channels of f16, f8, f4."""
        return (self.key_width * 16, self.key_width * 8, self.key_width * 4)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> XMemConfig:
        """Read the dimensions from a state dict (same rules as the reference: key_dim from the key projection,
        value_dim from the value fuser, hidden_dim = third of the hidden updater's output, 0 if absent)."""
        required = (
            "key_proj.key_proj.weight",
            "value_encoder.conv1.weight",
            "value_encoder.fuser.block2.conv2.weight",
            "value_encoder.fuser.attention.ChannelGate.mlp.1.weight",
            "key_encoder.conv1.weight",
            "decoder.fuser.block2.conv2.weight",
            "decoder.up_16_8.out_conv.conv2.weight",
            "decoder.up_8_4.out_conv.conv2.weight",
        )
        missing = [k for k in required if k not in state]
        if missing:
            raise CheckpointError(
                "not an XMem state dict: missing "
                + ", ".join(missing)
                + f" ({len(state)} tensors present"
                + (f", e.g. {next(iter(state))!r})" if state else ")")
            )
        shape = {k: tuple(state[k].shape) for k in required}
        value_dim = shape["value_encoder.fuser.block2.conv2.weight"][0]
        hidden_key = "decoder.hidden_update.transform.weight"
        hidden_dim = _leading_dim(state, hidden_key) // 3 if hidden_key in state else 0
        value_in = shape["value_encoder.conv1.weight"][1]
        if value_in not in (4, 5):
            raise CheckpointError(f"value_encoder.conv1.weight takes {value_in} input channels; XMem uses 4 or 5")
        gate_hidden = shape["value_encoder.fuser.attention.ChannelGate.mlp.1.weight"][0]
        return cls(
            key_dim=shape["key_proj.key_proj.weight"][0],
            value_dim=value_dim,
            hidden_dim=hidden_dim,
            single_object=value_in == 4,
            key_width=shape["key_encoder.conv1.weight"][0],
            key_blocks=tuple(_count_blocks(state, f"key_encoder.{s}") for s in ("res2", "layer2", "layer3")),
            value_width=shape["value_encoder.conv1.weight"][0],
            value_blocks=tuple(_count_blocks(state, f"value_encoder.{s}") for s in ("layer1", "layer2", "layer3")),
            decoder_dims=(
                shape["decoder.fuser.block2.conv2.weight"][0],
                shape["decoder.up_16_8.out_conv.conv2.weight"][0],
                shape["decoder.up_8_4.out_conv.conv2.weight"][0],
            ),
            hidden_mid=_leading_dim(state, "decoder.hidden_update.g16_conv.weight") if hidden_dim else 256,
            cbam_reduction=max(1, value_dim // max(1, gate_hidden)),
        )


def _leading_dim(state: Mapping[str, Any], key: str) -> int:
    if key not in state:
        raise CheckpointError(f"not an XMem state dict: missing {key}")
    return int(state[key].shape[0])


def _count_blocks(state: Mapping[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    if not indices:
        raise CheckpointError(f"not an XMem state dict: no blocks under {prefix!r}")
    return max(indices) + 1


class KeyFeatures(NamedTuple):
    """Everything the key encoder gives for one frame (batch 1); cached and shared between tracker sessions."""

    key: Tensor  # 1 x key_dim x h x w (stride 16)
    shrinkage: Tensor  # 1 x 1 x h x w
    selection: Tensor  # 1 x key_dim x h x w
    f16: Tensor
    f8: Tensor
    f4: Tensor


class XMemNetwork(nn.Module):
    """XMem's four parts; the per-frame operations below are what ``inference.XMemInference`` calls."""

    def __init__(self, config: XMemConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or XMemConfig()
        self.key_encoder = KeyEncoder(config.key_width, config.key_blocks)
        f_channels = config.feature_channels
        self.value_encoder = ValueEncoder(
            f_channels[0],
            config.value_dim,
            config.hidden_dim,
            config.single_object,
            config.value_width,
            config.value_blocks,
            config.cbam_reduction,
        )
        self.key_proj = KeyProjection(f_channels[0], config.key_dim)
        self.decoder = Decoder(
            f_channels,
            config.value_dim,
            config.hidden_dim,
            config.decoder_dims,
            config.hidden_mid,
            config.cbam_reduction,
        )

    def encode_key(self, image: Tensor) -> KeyFeatures:
        """``image``: 1 x 3 x H x W normalised, H and W multiples of 16."""
        f16, f8, f4 = self.key_encoder(image)
        key, shrinkage, selection = self.key_proj(f16)
        return KeyFeatures(key, shrinkage, selection, f16, f8, f4)

    def encode_value(
        self, image: Tensor, f16: Tensor, hidden: Tensor | None, masks: Tensor, deep_update: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Memory value (num_objects x value_dim x h x w) for ``masks`` (num_objects x H x W) and the hidden state
        after the deep update (unchanged when ``deep_update`` is False)."""
        return self.value_encoder(image, f16, hidden, masks, deep_update)

    def segment(
        self, features: KeyFeatures, readout: Tensor, hidden: Tensor | None, update_hidden: bool
    ) -> tuple[Tensor | None, Tensor]:
        """Decode the memory readout; returns (new hidden or None, probabilities (num_objects + 1) x H x W with
        background first, after soft aggregation)."""
        new_hidden, logits = self.decoder(features.f16, features.f8, features.f4, readout, hidden, update_hidden)
        return new_hidden, soft_aggregate(torch.sigmoid(logits.float()))


def soft_aggregate(prob: Tensor) -> Tensor:
    """Objects' independent probabilities (num_objects x H x W) -> background-first distribution over
    (num_objects + 1) channels: background = prod(1 - p), odds clamped to [1e-7, 1 - 1e-7], softmax of logits."""
    stacked = torch.cat([torch.prod(1 - prob, dim=0, keepdim=True), prob], dim=0).clamp(1e-7, 1 - 1e-7)
    return torch.softmax(torch.log(stacked / (1 - stacked)), dim=0)
