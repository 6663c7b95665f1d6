"""CoSeRec's substitute: random items replaced by their most correlated item."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from engine.components import Component, ComponentConfig

from ._batch import check_batch
from .correlation import CorrelationFitted


class Substitute(CorrelationFitted, Component):
    r"""Substitute from `"Contrastive Self-supervised Sequential Recommendation with Robust Augmentation"
    <https://arxiv.org/abs/2108.06479>`_ (Liu et al., 2021, CoSeRec).

    .. math::
        s' = [\hat v_1, \dots, \hat v_n], \qquad \hat v_t = \mathrm{top1}(v_t) \text{ if } t \in \mathcal{T}
        \text{ else } v_t, \quad |\mathcal{T}| = \max(1, \lfloor r n \rfloor)

    :math:`\mathcal{T}` is a uniform subset of the real positions and :math:`\mathrm{top1}` the most correlated item
    of :class:`~engine_seqrec.augment.correlation.ItemCorrelation` (an item with no correlated item stays).
    Lengths do not change. Call :meth:`fit` first.

    Args:
        rate (float, optional): fraction of positions substituted, in :math:`(0, 1]`.
            (default: :obj:`0.1`, CoSeRec's ``--substitute_rate`` and ``Substitute`` default)
        window (int, optional): co-occurrence window of the correlation, or :obj:`None` for whole sequences.
            (default: :obj:`1`)
    """

    name = "substitute"
    view_kind: ClassVar[str] = "sequence"

    class Config(ComponentConfig):
        rate: float = Field(0.1, gt=0.0, le=1.0, description="Fraction of positions replaced by a correlated item.")
        window: int | None = Field(
            1, ge=1, description="Co-occurrence window of the item correlation (None: whole sequences, slow)."
        )

    def __init__(self, rate: float = 0.1, window: int | None = 1):
        super().__init__(rate, window)

    def __call__(
        self, seqs: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """A copy of ``seqs`` ``[B, L]`` with ``max(1, floor(rate * n))`` items per row substituted."""
        check_batch(seqs, lengths)
        _, _, _, chosen = self.choose(seqs, lengths, generator)
        return torch.where(chosen, self.most_similar(seqs), seqs), lengths.clone()
