"""XMem's network blocks: encoders, key projection, fusion blocks with CBAM attention, decoder, sensory-memory GRUs.

Written from the XMem paper's description and the published checkpoint layout (in this repository:
``test/golden_data/xmem_keys.json``).
Shapes: image features ``x`` are ``1 x C x H x W``; per-object features ``g`` carry the objects in the batch
dimension, ``num_objects x C x H x W`` (the reference code has an extra batch axis; inference always uses one
video, so objects take its place). Attribute names are the checkpoint names and must not change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resnet import BasicBlock, Bottleneck, make_stage, make_stem


def expand_to_objects(x: Tensor, num_objects: int) -> Tensor:
    """Repeat image features (1 x C x H x W) for every object (view, no copy)."""
    return x.expand(num_objects, -1, -1, -1)


class ResBlock(nn.Module):
    """Pre-activation residual block with biased 3x3 convolutions; a 3x3 ``downsample`` maps the shortcut when the
    channel count changes (it is a channel projection, the name comes from the checkpoint)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if in_channels != out_channels:
            self.downsample = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        else:
            self.downsample = None
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, g: Tensor) -> Tensor:
        out = self.conv1(F.relu(g))
        out = self.conv2(F.relu(out))
        shortcut = g if self.downsample is None else self.downsample(g)
        return out + shortcut


class ChannelGate(nn.Module):
    """CBAM channel attention: a shared MLP over global average and max pooling, summed, sigmoid."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        # Index layout (Flatten, Linear, ReLU, Linear) fixes the checkpoint names mlp.1 / mlp.3.
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels, channels // reduction),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        attention = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(attention)[:, :, None, None]


class SpatialConv(nn.Module):
    """Holder for the 7x7 spatial-attention convolution (checkpoint name ``spatial.conv``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class SpatialGate(nn.Module):
    """CBAM spatial attention: channel-wise max and mean maps -> 7x7 convolution -> sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = SpatialConv()

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Channel then spatial attention (Woo et al., 2018)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x: Tensor) -> Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    """Concatenate image features to every object's features, residual block, CBAM-refined residual block."""

    def __init__(self, x_channels: int, g_channels: int, mid_channels: int, out_channels: int, reduction: int) -> None:
        super().__init__()
        self.block1 = ResBlock(x_channels + g_channels, mid_channels)
        self.attention = CBAM(mid_channels, reduction)
        self.block2 = ResBlock(mid_channels, out_channels)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        g = self.block1(torch.cat([expand_to_objects(x, g.shape[0]), g], dim=1))
        return self.block2(g + self.attention(g))


def _gru_gates(values: Tensor, hidden: Tensor, hidden_dim: int) -> Tensor:
    # XMem's GRU variant: the candidate is computed before (not after) the reset-like gate; kept as trained.
    forget_gate = torch.sigmoid(values[:, :hidden_dim])
    update_gate = torch.sigmoid(values[:, hidden_dim : 2 * hidden_dim])
    candidate = torch.tanh(values[:, 2 * hidden_dim :])
    return forget_gate * hidden * (1 - update_gate) + update_gate * candidate


class HiddenUpdater(nn.Module):
    """Decoder-side sensory-memory update from the multi-scale decoder features (stride 16, 8, 4 + logits)."""

    def __init__(self, g_channels: tuple[int, int, int], mid_channels: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.g16_conv = nn.Conv2d(g_channels[0], mid_channels, 1)
        self.g8_conv = nn.Conv2d(g_channels[1], mid_channels, 1)
        self.g4_conv = nn.Conv2d(g_channels[2], mid_channels, 1)
        self.transform = nn.Conv2d(mid_channels + hidden_dim, hidden_dim * 3, 3, padding=1)

    def forward(self, g16: Tensor, g8: Tensor, g4: Tensor, hidden: Tensor) -> Tensor:
        g = (
            self.g16_conv(g16)
            + self.g8_conv(F.interpolate(g8, scale_factor=0.5, mode="area"))
            + self.g4_conv(F.interpolate(g4, scale_factor=0.25, mode="area"))
        )
        values = self.transform(torch.cat([g, hidden], dim=1))
        return _gru_gates(values, hidden, self.hidden_dim)


class HiddenReinforcer(nn.Module):
    """Value-encoder-side ("deep") sensory-memory update from the new memory value."""

    def __init__(self, g_channels: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.transform = nn.Conv2d(g_channels + hidden_dim, hidden_dim * 3, 3, padding=1)

    def forward(self, g: Tensor, hidden: Tensor) -> Tensor:
        values = self.transform(torch.cat([g, hidden], dim=1))
        return _gru_gates(values, hidden, self.hidden_dim)


class KeyEncoder(nn.Module):
    """ResNet-50 trunk to stride 16; returns (f16, f8, f4)."""

    def __init__(self, width: int = 64, blocks: tuple[int, int, int] = (3, 4, 6)) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = make_stem(3, width)
        self.res2, channels = make_stage(Bottleneck, width, width, blocks[0], stride=1)
        self.layer2, channels = make_stage(Bottleneck, channels, width * 2, blocks[1], stride=2)
        self.layer3, channels = make_stage(Bottleneck, channels, width * 4, blocks[2], stride=2)
        self.out_channels = (channels, channels // 2, channels // 4)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(image))))
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4


class KeyProjection(nn.Module):
    """f16 -> key, shrinkage (``d^2 + 1``, 1 channel) and selection (sigmoid, key_dim channels)."""

    def __init__(self, in_channels: int, key_dim: int) -> None:
        super().__init__()
        self.key_proj = nn.Conv2d(in_channels, key_dim, 3, padding=1)
        self.d_proj = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.e_proj = nn.Conv2d(in_channels, key_dim, 3, padding=1)

    def forward(self, f16: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        shrinkage = self.d_proj(f16) ** 2 + 1
        selection = torch.sigmoid(self.e_proj(f16))
        return self.key_proj(f16), shrinkage, selection


class ValueEncoder(nn.Module):
    """ResNet-18 trunk on [image, own mask, other objects' masks] per object, fused with f16, plus the deep
    sensory-memory update."""

    def __init__(
        self,
        f16_channels: int,
        value_dim: int,
        hidden_dim: int,
        single_object: bool,
        width: int = 64,
        blocks: tuple[int, int, int] = (2, 2, 2),
        reduction: int = 16,
    ) -> None:
        super().__init__()
        self.single_object = single_object
        self.conv1, self.bn1, self.relu, self.maxpool = make_stem(4 if single_object else 5, width)
        self.layer1, channels = make_stage(BasicBlock, width, width, blocks[0], stride=1)
        self.layer2, channels = make_stage(BasicBlock, channels, width * 2, blocks[1], stride=2)
        self.layer3, channels = make_stage(BasicBlock, channels, width * 4, blocks[2], stride=2)
        self.fuser = FeatureFusionBlock(f16_channels, channels, value_dim, value_dim, reduction)
        self.hidden_reinforce = HiddenReinforcer(value_dim, hidden_dim) if hidden_dim > 0 else None

    def forward(
        self, image: Tensor, f16: Tensor, hidden: Tensor | None, masks: Tensor, deep_update: bool
    ) -> tuple[Tensor, Tensor | None]:
        """``masks``: num_objects x H x W probabilities. Returns (value, hidden) per object."""
        num_objects = masks.shape[0]
        if self.single_object:
            mask_channels = masks[:, None]
        else:
            others = _sum_of_others(masks)
            mask_channels = torch.stack([masks, others], dim=1)
        g = torch.cat([expand_to_objects(image, num_objects), mask_channels.to(image.dtype)], dim=1)
        # Pooling before the ReLU equals ReLU before pooling (both monotone); this is the trained order.
        g = self.relu(self.maxpool(self.bn1(self.conv1(g))))
        g = self.layer3(self.layer2(self.layer1(g)))
        g = self.fuser(f16, g)
        if deep_update and self.hidden_reinforce is not None and hidden is not None:
            hidden = self.hidden_reinforce(g, hidden)
        return g, hidden


def _sum_of_others(masks: Tensor) -> Tensor:
    """For each object, the sum of the other objects' masks (an explicit sum, not total minus own, so that the
    result matches the reference to the bit)."""
    num_objects = masks.shape[0]
    if num_objects == 1:
        return torch.zeros_like(masks)
    return torch.stack([masks[[j for j in range(num_objects) if j != i]].sum(dim=0) for i in range(num_objects)])


class UpsampleBlock(nn.Module):
    """x2 bilinear upsampling of object features plus a convolved skip connection, then a residual block."""

    def __init__(self, skip_channels: int, up_channels: int, out_channels: int) -> None:
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_channels, up_channels, 3, padding=1)
        self.out_conv = ResBlock(up_channels, out_channels)

    def forward(self, skip: Tensor, g: Tensor) -> Tensor:
        skip = self.skip_conv(skip)
        g = F.interpolate(g, scale_factor=2, mode="bilinear", align_corners=False)
        return self.out_conv(g + skip)


class Decoder(nn.Module):
    """Memory readout + sensory memory + f16 -> fused stride-16 features -> stride 8 -> stride 4 -> logits."""

    def __init__(
        self,
        f_channels: tuple[int, int, int],
        value_dim: int,
        hidden_dim: int,
        dims: tuple[int, int, int] = (512, 256, 256),
        hidden_mid: int = 256,
        reduction: int = 16,
    ) -> None:
        super().__init__()
        f16_channels, f8_channels, f4_channels = f_channels
        self.fuser = FeatureFusionBlock(f16_channels, value_dim + hidden_dim, dims[0], dims[0], reduction)
        if hidden_dim > 0:
            self.hidden_update = HiddenUpdater((dims[0], dims[1], dims[2] + 1), hidden_mid, hidden_dim)
        else:
            self.hidden_update = None
        self.up_16_8 = UpsampleBlock(f8_channels, dims[0], dims[1])
        self.up_8_4 = UpsampleBlock(f4_channels, dims[1], dims[2])
        self.pred = nn.Conv2d(dims[2], 1, 3, padding=1)

    def forward(
        self, f16: Tensor, f8: Tensor, f4: Tensor, readout: Tensor, hidden: Tensor | None, update_hidden: bool
    ) -> tuple[Tensor | None, Tensor]:
        """Returns (new hidden state or None, logits num_objects x H x W at input resolution)."""
        g = readout if self.hidden_update is None else torch.cat([readout, hidden.to(readout.dtype)], dim=1)
        g16 = self.fuser(f16, g)
        g8 = self.up_16_8(f8, g16)
        g4 = self.up_8_4(f4, g8)
        logits = self.pred(F.relu(g4))
        new_hidden = None
        if update_hidden and self.hidden_update is not None:
            new_hidden = self.hidden_update(g16, g8, torch.cat([g4, logits], dim=1), hidden.to(g16.dtype))
        logits = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
        return new_hidden, logits[:, 0]
