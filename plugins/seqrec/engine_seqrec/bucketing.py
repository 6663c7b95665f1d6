"""Run a sequence encoder on groups of rows of similar length, each group cut to its own width.

Left-padded batches are mostly padding: on Amazon Beauty the average training input has 6 items, padded to 50. The
encoders here treat every row independently and give the same output for a row whatever padding precedes it
(SASRec masks padded keys and counts positions from the right; GRU4Rec's state stays zero over padding), so
running them on each group of rows cut to the group's longest row gives exactly the same result as one padded
pass, at a fraction of the cost. The batch itself is unchanged (no length-sorted batches): only the computation is
grouped.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["by_length"]


def _width(lengths: Tensor, max_width: int) -> Tensor:
    """The group width of each row: the next power of two >= its length (at least 1), capped at ``max_width``."""
    n = lengths.clamp(min=1).double()
    return torch.exp2(torch.ceil(torch.log2(n))).long().clamp(max=max_width)


def by_length(fn: Callable[[Tensor], Tensor], seqs: Tensor) -> Tensor:
    """``fn(seqs)``, computed per group of rows whose lengths round up to the same power of two.

    Args:
        fn: an encoder call on a left-padded batch ``[b, W]``, returning ``[b, W, D]`` (all positions, zero on
            padding) or ``[b, D]`` (one vector per row). Rows must not interact (no batch statistics).
        seqs (Tensor): ``[B, L]`` item ids, left-padded with 0.

    Returns:
        What ``fn(seqs)`` returns: ``[B, L, D]`` (left-padded with zeros) or ``[B, D]``, rows in the input order.
    """
    B, L = seqs.shape
    widths = _width((seqs != 0).sum(1), L)
    groups = torch.unique(widths).tolist()

    def run(rows: Tensor | None, width: int) -> Tensor:
        out = fn(seqs[:, L - width :] if rows is None else seqs[rows, L - width :])
        return F.pad(out, (0, 0, L - width, 0)) if out.dim() == 3 and width < L else out

    if len(groups) == 1:
        return run(None, groups[0])
    outputs, order = [], []
    for width in groups:
        rows = torch.nonzero(widths == width).flatten()
        outputs.append(run(rows, width))
        order.append(rows)
    inverse = torch.empty(B, dtype=torch.long, device=seqs.device)
    perm = torch.cat(order)
    inverse[perm] = torch.arange(B, device=seqs.device)
    return torch.cat(outputs)[inverse]
