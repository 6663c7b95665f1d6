"""Next-item losses over hidden states and the (tied) item table, and vectorised negative sampling.

Each loss takes the hidden states of the positions trained on (``[N, D]``), the item table (``[num_items + 1, D]``,
row 0 padding), the next item of each position (``[N]``, ids ``1..num_items``) and, for the sampled losses, negatives
(``[N, K]``). Which positions: every non-padded position of each training sequence (``train_positions: all``, as
SASRec, CL4SRec and ICLRec train), or the last one only (``last``: with RecBole's prefix augmentation this is how
RecBole's SASRec, DuoRec and MCLRec train).

* ``ce``: softmax cross-entropy over all items (RecBole's ``loss_type: CE``, DuoRec, MCLRec). It beats the sampled
  losses on the Amazon sets by a wide margin (see ``docs/TARGETS.md``).
* ``bce``: binary cross-entropy with sampled negatives, SASRec's original loss (one negative per position) and the
  one of the CL4SRec / ICLRec code.
* ``bpr``: Bayesian personalised ranking over sampled negatives (RecBole's ``loss_type: BPR``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.components import ObjectiveOutput

__all__ = ["NextItemLoss", "CrossEntropyLoss", "BinaryCrossEntropyLoss", "BPRLoss", "LOSSES", "sample_negatives"]


def sample_negatives(targets: Tensor, num_items: int, num_negatives: int, generator: torch.Generator | None = None
                     ) -> Tensor:
    """``num_negatives`` items per target, uniform over ``1..num_items`` without the target itself.

    One draw from ``1..num_items - 1``, shifted up by one at or above the target: exact, with no rejection loop.
    SASRec's and ICLRec's code reject the user's whole history instead of the target alone; with thousands of items
    and histories of a few dozen, the two differ in a fraction of a percent of draws.

    Args:
        targets (Tensor): ``LongTensor`` of any shape, ids in ``1..num_items`` (padding targets get arbitrary draws).
        num_items (int): size of the catalogue (``>= 2``).
        num_negatives (int): ``K``.
        generator (torch.Generator, optional): CPU generator for reproducible draws.

    Returns:
        ``LongTensor [*targets.shape, K]`` on ``targets``' device.
    """
    if num_items < 2:
        raise ValueError(f"sampling a negative needs at least 2 items (got {num_items})")
    draws = torch.randint(1, num_items, (*targets.shape, num_negatives), generator=generator).to(targets.device)
    return draws + (draws >= targets.unsqueeze(-1)).long()


def _check(hidden: Tensor, items: Tensor, targets: Tensor) -> None:
    if hidden.dim() != 2 or items.dim() != 2 or hidden.shape[1] != items.shape[1]:
        raise ValueError(f"hidden [N, D] and items [num_items + 1, D] must share D (got {list(hidden.shape)} and "
                         f"{list(items.shape)})")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets must be [N] = [{hidden.shape[0]}] (got {list(targets.shape)})")


class NextItemLoss(nn.Module):
    """Base of the next-item losses: ``forward(hidden, items, targets, negatives=None) -> ObjectiveOutput``."""

    name: ClassVar[str]
    #: whether :meth:`forward` needs sampled ``negatives``
    needs_negatives: ClassVar[bool] = True

    def get_scores(self, hidden: Tensor, items: Tensor, targets: Tensor, negatives: Tensor) -> tuple[Tensor, Tensor]:
        """Scores of the positive ``[N]`` and of the negatives ``[N, K]`` (dot products with the item table)."""
        pos = (hidden * items[targets]).sum(-1)
        neg = torch.einsum("nd,nkd->nk", hidden, items[negatives])
        return pos, neg


class CrossEntropyLoss(NextItemLoss):
    r"""Softmax cross-entropy over every item (the padding row excluded):

    .. math::
        \mathcal{L} = \frac{1}{N} \sum_{n} -\log \frac{\exp(\mathbf{h}_n \cdot \mathbf{e}_{y_n})}
        {\sum_{i=1}^{|I|} \exp(\mathbf{h}_n \cdot \mathbf{e}_i)}
    """

    name: ClassVar[str] = "ce"
    needs_negatives: ClassVar[bool] = False

    def __init__(self, exclude: Tensor | None = None) -> None:
        super().__init__()
        #: bool ``[num_items + 1]``: items left out of the softmax (cold-start items, never in training)
        self.register_buffer("exclude", None if exclude is None else exclude[1:].clone(), persistent=False)

    def get_logits(self, hidden: Tensor, items: Tensor) -> Tensor:
        """``[N, num_items]``: column ``j`` scores item ``j + 1`` (``-inf`` for excluded items)."""
        logits = hidden @ items[1:].T
        return logits if self.exclude is None else logits.masked_fill(self.exclude, float("-inf"))

    def forward(self, hidden: Tensor, items: Tensor, targets: Tensor, negatives: Tensor | None = None
                ) -> ObjectiveOutput:
        _check(hidden, items, targets)
        loss = F.cross_entropy(self.get_logits(hidden, items), targets - 1)
        return ObjectiveOutput(loss, {"ce": loss})


class BinaryCrossEntropyLoss(NextItemLoss):
    r"""Binary cross-entropy with sampled negatives (SASRec's loss; ``K = 1`` there):

    .. math::
        \mathcal{L} = \frac{1}{N} \sum_{n} \Big[-\log \sigma(s_{n,y_n}) - \sum_{k=1}^{K} \log(1 - \sigma(s_{n,j_{nk}}))
        \Big]

    computed with ``softplus`` (never overflows).
    """

    name: ClassVar[str] = "bce"

    def forward(self, hidden: Tensor, items: Tensor, targets: Tensor, negatives: Tensor | None = None
                ) -> ObjectiveOutput:
        _check(hidden, items, targets)
        if negatives is None:
            raise ValueError("bce needs sampled negatives [N, K]")
        pos, neg = self.get_scores(hidden, items, targets, negatives)
        loss = (F.softplus(-pos) + F.softplus(neg).sum(-1)).mean()
        return ObjectiveOutput(loss, {"bce": loss})


class BPRLoss(NextItemLoss):
    r"""BPR over sampled negatives, averaged over positions and negatives:
    :math:`\mathcal{L} = \frac{1}{NK} \sum_{n,k} -\log \sigma(s_{n,y_n} - s_{n,j_{nk}})`."""

    name: ClassVar[str] = "bpr"

    def forward(self, hidden: Tensor, items: Tensor, targets: Tensor, negatives: Tensor | None = None
                ) -> ObjectiveOutput:
        _check(hidden, items, targets)
        if negatives is None:
            raise ValueError("bpr needs sampled negatives [N, K]")
        pos, neg = self.get_scores(hidden, items, targets, negatives)
        loss = F.softplus(neg - pos.unsqueeze(-1)).mean()
        return ObjectiveOutput(loss, {"bpr": loss})


LOSSES: dict[str, type[NextItemLoss]] = {c.name: c for c in (CrossEntropyLoss, BinaryCrossEntropyLoss, BPRLoss)}
