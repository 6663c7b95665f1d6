"""CoSeRec's insert: correlated items inserted before random positions."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from engine.components import Component, ComponentConfig

from ._batch import check_batch
from .correlation import CorrelationFitted


class Insert(CorrelationFitted, Component):
    r"""Insert from `"Contrastive Self-supervised Sequential Recommendation with Robust Augmentation"
    <https://arxiv.org/abs/2108.06479>`_ (Liu et al., 2021, CoSeRec).

    .. math::
        s' = [\dots, \mathrm{top1}(v_t), v_t, \dots] \text{ for } t \in \mathcal{T}, \qquad
        |\mathcal{T}| = \max(1, \lfloor r n \rfloor)

    :math:`\mathcal{T}` is a uniform subset of the real positions and :math:`\mathrm{top1}` the most correlated item
    of :class:`~engine_seqrec.augment.correlation.ItemCorrelation`. The result has ``n + |T|`` items; when that
    exceeds ``L``, the oldest are dropped so the most recent ``L`` stay. Empty rows stay empty. CoSeRec's
    ``max_insert_num_per_pos`` (default 1, "not studied") is fixed to 1. Call :meth:`fit` first.

    Args:
        rate (float, optional): fraction of positions that get an item inserted, in :math:`(0, 1]`.
            (default: :obj:`0.4`, CoSeRec's ``--insert_rate`` and ``Insert`` default)
        window (int, optional): co-occurrence window of the correlation, or :obj:`None` for whole sequences.
            (default: :obj:`1`)
    """

    name = "insert"
    view_kind: ClassVar[str] = "sequence"

    class Config(ComponentConfig):
        rate: float = Field(0.4, gt=0.0, le=1.0, description="Fraction of positions preceded by an inserted item.")
        window: int | None = Field(
            1, ge=1, description="Co-occurrence window of the item correlation (None: whole sequences, slow)."
        )

    def __init__(self, rate: float = 0.4, window: int | None = 1):
        super().__init__(rate, window)

    def __call__(
        self, seqs: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``seqs`` ``[B, L]`` with correlated items inserted, truncated on the left to ``L``, and new lengths."""
        check_batch(seqs, lengths)
        B, L = seqs.shape
        n, real, m, chosen = self.choose(seqs, lengths, generator)
        similar = self.most_similar(seqs)
        # slots taken after column c (right-aligned): items to its right, each with its insertion
        width = real.long() + chosen.long()
        after = width.flip(1).cumsum(1).flip(1) - width
        # write into a [B, 2L + 1] buffer whose column 0 collects the dropped writes, then keep the last L
        item_col = torch.where(real, 2 * L - after, 0)
        insert_col = torch.where(chosen, 2 * L - 1 - after, 0)
        buf = torch.zeros(B, 2 * L + 1, dtype=seqs.dtype, device=seqs.device)
        buf.scatter_(1, item_col, seqs)
        buf.scatter_(1, insert_col, similar)
        buf[:, 0] = 0
        return buf[:, L + 1 :].contiguous(), (n + m).clamp(max=L)
