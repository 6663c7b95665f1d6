"""ResNet-18 without its classifier, laid out as torchvision's ``resnet18`` so that its ``state_dict`` files load as
they are (keys ``conv1.weight``, ``layer2.0.downsample.1.running_mean``...; see
:func:`engine_linkage.image.load_weights`, which drops ``fc.*``).

Written here rather than imported: the torchvision wheels on PyPI are built against CUDA torch (their ``_C`` links
``libc10_cuda.so``), so ``import torchvision`` fails beside a CPU-only torch (and, installed, breaks the import of
transformers); nothing here needs torchvision.

Reference: He et al., `Deep Residual Learning for Image Recognition <https://arxiv.org/abs/1512.03385>`_, CVPR 2016
(BasicBlock, [2, 2, 2, 2] blocks, 64-128-256-512 channels; torchvision's initialisation).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ResNet18", "BasicBlock"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection (1x1 convolution + BN when the shape changes)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """``[B, 3, H, W]`` -> ``[B, 512]``: the network up to its global average pool."""

    out_features = 512

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, c = (64, 128, 256, 512), 64
        for i, w in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(c, w, stride), BasicBlock(w, w)))
            c = w
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))
