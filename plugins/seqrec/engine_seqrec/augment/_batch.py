"""Shared pieces of the sequence augmenters: batch checks and vectorised random draws per row.

Every augmenter takes a left-padded batch: ``seqs`` ``LongTensor [B, L]`` with 0 as padding and the most recent
item in column ``L - 1``, so the real items of row ``b`` are ``seqs[b, L - lengths[b]:]``. Random numbers come from
the ``generator`` (on its own device, then moved), so a seeded generator gives the same views on CPU and GPU.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_batch(seqs: Tensor, lengths: Tensor) -> None:
    """Raise ``ValueError`` unless ``seqs`` is a ``LongTensor [B, L]`` and ``lengths`` ``[B]`` lies in ``[0, L]``."""
    if seqs.dim() != 2 or seqs.dtype != torch.int64:
        raise ValueError(f"seqs must be a LongTensor [B, L], got {tuple(seqs.shape)} {seqs.dtype}")
    if lengths.dim() != 1 or lengths.numel() != seqs.size(0):
        raise ValueError(f"lengths must be [B] = [{seqs.size(0)}], got {tuple(lengths.shape)}")
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > seqs.size(1)):
        raise ValueError(f"lengths must lie in [0, L] = [0, {seqs.size(1)}]")


def real_mask(lengths: Tensor, L: int) -> Tensor:
    """``[B, L]`` boolean: true on the real (non-padding) columns of each left-padded row."""
    cols = torch.arange(L, device=lengths.device)
    return cols.unsqueeze(0) >= (L - lengths).unsqueeze(1)


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Float64 uniform draws in ``[0, 1)`` from ``generator``, moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float64).to(device)


def ratio_count(lengths: Tensor, ratio: float) -> Tensor:
    """``int(ratio * n)`` per row, as the reference implementations compute it (``math.floor`` in float64)."""
    return torch.floor(lengths.to(torch.float64) * ratio).long()


def uniform_int(high: Tensor, generator: torch.Generator | None) -> Tensor:
    """One integer per row, uniform in ``[0, high[b]]`` (inclusive; ``high >= 0``)."""
    u = uniform(tuple(high.shape), generator, high.device)
    return torch.minimum(torch.floor(u * (high + 1).to(torch.float64)).long(), high)


def random_subset(real: Tensor, counts: Tensor, generator: torch.Generator | None) -> Tensor:
    """``[B, L]`` boolean with exactly ``counts[b]`` true entries, a uniform subset of the real columns of row ``b``.

    The real columns get iid uniform keys, padding gets key 2; the ``counts[b]`` smallest keys are chosen.
    """
    keys = uniform(tuple(real.shape), generator, real.device).masked_fill(~real, 2.0)
    rank = torch.empty_like(keys, dtype=torch.long)
    order = keys.argsort(dim=1)
    rank.scatter_(1, order, torch.arange(real.size(1), device=real.device).expand_as(order).contiguous())
    return (rank < counts.unsqueeze(1)) & real
