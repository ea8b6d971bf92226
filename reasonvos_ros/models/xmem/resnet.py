"""ResNet trunks for XMem's key and value encoders, written for this package (no torchvision here).

Only what XMem keeps of a torchvision-style ResNet is built: the stem (``conv1``/``bn1``, ReLU, 3x3 max-pool) and the
first three stages, stride 16 overall. Parameter names inside a stage follow the torchvision layout (``N.conv1``,
``N.bn1``, ..., ``N.downsample.0``/``N.downsample.1``) so that the published ``XMem.pth`` loads unchanged; the
encoders decide the stage attribute names (``res2``/``layer2``/``layer3`` for the key encoder, ``layer1..3`` for the
value encoder). Widths and block counts are parameters so that tests can build tiny networks with the same code.
"""

from __future__ import annotations

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34); stride on the first convolution."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _projection(in_channels, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck (ResNet-50), stride on the 3x3 convolution ("v1.5", as torchvision)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_channels, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    # A 1x1 projection is only needed where the residual changes shape (torchvision's rule).
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def make_stage(block: type[BasicBlock | Bottleneck], in_channels: int, planes: int, blocks: int, stride: int):
    """One ResNet stage: ``blocks`` blocks, the first one strided. Returns ``(stage, out_channels)``."""
    if blocks < 1:
        raise ValueError(f"a ResNet stage needs at least one block, got {blocks}")
    layers = [block(in_channels, planes, stride)]
    out_channels = planes * block.expansion
    layers += [block(out_channels, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers), out_channels


def make_stem(in_channels: int, width: int) -> tuple[nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]:
    """7x7/2 convolution, BatchNorm, ReLU and 3x3/2 max-pool: the stride-4 entry of a ResNet.

    The encoders keep these as flat attributes (``conv1``, ``bn1``) so that the checkpoint names stay flat.
    """
    return (
        nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
