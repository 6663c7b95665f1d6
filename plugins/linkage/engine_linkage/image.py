"""An image field encoder: the field's value is the path of an image file (a scan, a photo, a rendered text line).

Featurisation (outside the graph, deterministic): each file is opened with PIL, a transparent background composited
on white, converted to grayscale (``channels: 1``) or RGB (``channels: 3``), resized to ``height x width`` (bilinear,
aspect ratio not kept) and scaled to ``[0, 1]``. A value becomes ``float32 [1 + C*H*W]``: a presence flag (1.0 / 0.0)
then the pixels in ``C, H, W`` order. A value is absent (flag 0, zero pixels) when it is empty (``missing``), names no
file (``not_found``) or names a file PIL cannot decode (``corrupt``); the counts are kept in :attr:`skipped` and the
last two logged as a warning with the first paths. Relative paths are resolved by the data source (against the
dataset folder), so the encoder itself reads paths as given.

Encoding (the graph): the pixels go through a backbone, then a linear layer to ``dim``:

* ``cnn`` (default, trained from scratch): the image standardised, stages of 3x3 convolution, batch norm, ReLU and
  2x2 max pooling (no pooling after the last), then the global average and maximum of the last feature map,
  batch-normalised (:class:`SmallCNN`): a bag of local visual features, the image counterpart of a character n-gram
  bag;
* ``resnet18``: ImageNet-normalised input (a grayscale image repeated on three channels), ResNet-18 up to its global
  pool (:class:`engine_linkage.resnet.ResNet18`, torchvision's layout).

``weights`` names a local ``state_dict`` file of the backbone (:func:`load_weights`: torchvision's format for
``resnet18``, ``fc.*`` keys ignored; for ``cnn`` e.g. the font-invariance pretraining of
``benchmarks/pretrain_image_cnn.py``); nothing is ever downloaded, and without ``weights`` the backbone starts random.

Reference: the image tower of CLIPPINGS (Arora et al., `Linking Representations with Multimodal Contrastive
Learning <https://arxiv.org/abs/2304.03464>`_, 2023), which matches scans of records with their OCR text.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig
from engine.errors import ConfigError

from .resnet import ResNet18

__all__ = ["ImageEncoder", "SmallCNN", "load_image", "load_weights"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_image(path: str | Path, channels: int, height: int, width: int) -> np.ndarray:
    """``float32 [C, H, W]`` in ``[0, 1]``: the file converted and resized as :class:`ImageEncoder` featurises it.
    Raises ``OSError`` (or ``ValueError``) when PIL cannot read it."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
        im = im.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(im, dtype=np.float32) / 255.0
    return pixels.reshape(height, width, channels).transpose(2, 0, 1)


def load_weights(module: nn.Module, path: str | Path, backbone: str) -> None:
    """Load a local ``state_dict`` file into ``module`` (``module.`` prefixes and a classifier's ``fc.*`` keys
    dropped); a file that is not one raises :class:`engine.errors.ConfigError`. Nothing is downloaded."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"image encoder: weights {str(path)!r} is not a file (a local {backbone} state_dict; "
                          "nothing is downloaded)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        raise ConfigError(f"image encoder: {path} is not a {backbone} state_dict of this shape "
                          f"({str(exc).strip().splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise ConfigError(f"image encoder: {path} is not a {backbone} state_dict ({len(missing)} missing keys, "
                          f"e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})")


class SmallCNN(nn.Module):
    """Each image standardised (zero mean, unit variance: paper and ink levels vary from scan to scan), stages of
    conv3x3 + BN + ReLU (+ 2x2 max pool, but after the last), then the global average and maximum of each channel,
    batch-normalised: ``[B, C, H, W]`` -> ``[B, 2 * filters[-1]]``. The final batch norm centres the pooled
    features, which all images share largely (paper), so that a contrastive loss does not start collapsed."""

    def __init__(self, in_channels: int, filters: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, out in enumerate(filters):
            layers += [nn.Conv2d(in_channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            if i < len(filters) - 1:
                layers.append(nn.MaxPool2d(2))
            in_channels = out
        self.features = nn.Sequential(*layers)
        self.out_features = 2 * int(filters[-1])
        self.norm = nn.BatchNorm1d(self.out_features)

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
        h = self.features((x - mean) / (std + 1e-2))
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        if self.training and pooled.shape[0] == 1:  # no batch statistics from one row: use the running ones
            n = self.norm
            return F.batch_norm(pooled, n.running_mean, n.running_var, n.weight, n.bias, False, 0.0, n.eps)
        return self.norm(pooled)


class ImageEncoder(nn.Module, Component):
    """Image file paths -> pixels (featurised) -> a small CNN or ResNet-18 -> linear projection."""

    name: ClassVar[str] = "image"
    input_kind: ClassVar[str] = "values"

    class Config(ComponentConfig):
        backbone: Literal["cnn", "resnet18"] = Field("cnn", description="cnn: small CNN from scratch; resnet18: "
                                                     "ResNet-18 (random or `weights`)")
        channels: Literal[1, 3] = Field(1, description="1: grayscale, 3: RGB")
        height: int = Field(32, ge=8, le=1024, description="images are resized to height x width pixels")
        width: int = Field(128, ge=8, le=1024, description="images are resized to height x width pixels")
        filters: list[int] = Field(default_factory=lambda: [16, 32, 64, 128], min_length=1,
                                   description="cnn: output channels of each stage")
        weights: str | None = Field(None, description="a local state_dict file of the backbone (resnet18: "
                                                      "torchvision's layout; cnn: e.g. from "
                                                      "benchmarks/pretrain_image_cnn.py); none: random init")

    def __init__(self, dim: int = 64, backbone: str = "cnn", channels: int = 1, height: int = 32, width: int = 128,
                 filters: Sequence[int] = (16, 32, 64, 128), weights: str | None = None) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3 (got {channels})")
        self.dim, self.channels, self.height, self.width = dim, channels, height, width
        self.skipped = {"missing": 0, "not_found": 0, "corrupt": 0}  #: absent values since construction, by cause
        if backbone == "cnn":
            self.backbone: nn.Module = SmallCNN(channels, filters)
        elif backbone == "resnet18":
            self.backbone = ResNet18()
        else:
            raise ValueError(f"backbone must be 'cnn' or 'resnet18' (got {backbone!r})")
        if weights is not None:
            load_weights(self.backbone, weights, backbone)
        self.normalize = backbone == "resnet18"
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.proj = nn.Linear(self.backbone.out_features, dim)
        self.backbone_name, self.weights_path = backbone, weights

    def get_config_dict(self) -> dict[str, Any]:
        """What ``featurize`` needs (the backbone and its weights live in the exported graph)."""
        return {"channels": self.channels, "height": self.height, "width": self.width}

    def featurize(self, values: Sequence[str | None]) -> np.ndarray:
        """``float32 [N, 1 + C*H*W]``: a presence flag, then the pixels (zeros when absent)."""
        c, h, w = self.channels, self.height, self.width
        out = np.zeros((len(values), 1 + c * h * w), dtype=np.float32)
        bad: dict[str, list[str]] = {"not_found": [], "corrupt": []}
        for i, v in enumerate(values):
            path = None if v is None else str(v).strip()
            if not path:
                self.skipped["missing"] += 1
                continue
            if not Path(path).is_file():
                bad["not_found"].append(path)
                continue
            try:
                pixels = load_image(path, c, h, w)
            except (OSError, ValueError, SyntaxError):  # PIL's errors for files it cannot decode
                bad["corrupt"].append(path)
                continue
            out[i, 0] = 1.0
            out[i, 1:] = pixels.ravel()
        for cause, paths in bad.items():
            self.skipped[cause] += len(paths)
            if paths:
                what = "not found" if cause == "not_found" else "could not be decoded"
                log.warning("image encoder: %d of %d image files %s (absent values): %s%s", len(paths), len(values),
                            what, ", ".join(paths[:3]), ", ..." if len(paths) > 3 else "")
        return out

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, 1 + C*H*W]`` -> (vectors ``[B, D]``, present ``[B]`` bool)."""
        pixels = x[:, 1:].reshape(-1, self.channels, self.height, self.width)
        if self.normalize:
            pixels = (pixels.expand(-1, 3, -1, -1) - self.mean) / self.std
        return self.proj(self.backbone(pixels)), x[:, 0] > 0.5

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, backbone={self.backbone_name}, channels={self.channels}, "
                f"size={self.height}x{self.width}")
