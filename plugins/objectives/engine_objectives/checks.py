"""Input checks shared by the objectives: each raises :class:`ValueError` with the shapes and a remedy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["check_finite", "check_labels", "check_modalities", "check_pair", "describe"]


def describe(x: object) -> str:
    """``shape [3, 4], torch.float32`` for a tensor, the type name otherwise (for error messages)."""
    return f"shape {list(x.shape)}, {x.dtype}" if isinstance(x, Tensor) else type(x).__name__


def check_finite(x: Tensor, label: str, where: str) -> None:
    """Raise unless every value of ``x`` is finite."""
    if not torch.isfinite(x).all():
        raise ValueError(
            f"{where}: {label} {list(x.shape)} has NaN or inf values; check the encoder's output "
            "(a learning rate too high, or a division by a zero norm upstream)"
        )


def check_pair(anchor: Tensor, positive: Tensor, where: str) -> None:
    """Raise :class:`ValueError` unless ``anchor`` and ``positive`` are finite, non-empty float ``[B, D]`` tensors."""
    for label, x in (("anchor", anchor), ("positive", positive)):
        if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
            raise ValueError(f"{where}: {label} must be a float tensor [B, D], got {describe(x)}")
    if anchor.shape != positive.shape:
        raise ValueError(
            f"{where}: anchor {list(anchor.shape)} and positive {list(positive.shape)} must have the same "
            "[B, D]: row i of positive is the positive of row i of anchor"
        )
    if anchor.shape[0] == 0:
        raise ValueError(f"{where}: empty batch (shape {list(anchor.shape)})")
    check_finite(anchor, "anchor", where)
    check_finite(positive, "positive", where)


def check_labels(labels: Tensor, n: int, where: str) -> None:
    """Raise unless ``labels`` is an integer or bool tensor of shape ``[n]`` (one class / entity id per row)."""
    if not isinstance(labels, Tensor) or labels.shape != (n,):
        raise ValueError(f"{where}: labels must be a tensor of shape [{n}] (one id per row), got {describe(labels)}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{where}: labels must be integer ids (class or entity), got {labels.dtype}")


def check_modalities(modalities: Sequence[Tensor], where: str, minimum: int = 2) -> None:
    """Raise unless ``modalities`` is a list or tuple of at least ``minimum`` finite float ``[B, D]`` tensors."""
    if isinstance(modalities, Tensor) or not isinstance(modalities, Sequence):
        raise ValueError(f"{where}: expected a list or tuple of [B, D] tensors (one per modality), "
                         f"got {describe(modalities)}")
    if len(modalities) < minimum:
        raise ValueError(f"{where}: needs at least {minimum} modalities, got {len(modalities)}")
    for m, x in enumerate(modalities):
        if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
            raise ValueError(f"{where}: modality {m} must be a float tensor [B, D], got {describe(x)}")
    shapes = [list(x.shape) for x in modalities]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"{where}: every modality must have the same [B, D] (row i of each is one sample), "
                         f"got {shapes}")
    if shapes[0][0] == 0:
        raise ValueError(f"{where}: empty batch (shapes {shapes})")
    for m, x in enumerate(modalities):
        check_finite(x, f"modality {m}", where)
