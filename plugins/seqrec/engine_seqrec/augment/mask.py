"""CL4SRec's item mask: random positions replaced by a mask token."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from engine.components import Component, ComponentConfig

from ._batch import check_batch, random_subset, ratio_count, real_mask


class Mask(Component):
    r"""Item mask from `"Contrastive Learning for Sequential Recommendation" <https://arxiv.org/abs/2010.14395>`_
    (Xie et al., ICDE 2022).

    .. math::
        s' = [\hat v_1, \dots, \hat v_n], \qquad \hat v_t = [\mathrm{mask}] \text{ if } t \in \mathcal{T}
        \text{ else } v_t, \quad |\mathcal{T}| = \lfloor \gamma n \rfloor

    :math:`\mathcal{T}` is a uniform subset of the real positions; lengths do not change. The mask token is
    ``num_items + 1`` (items are ``1..num_items``, 0 is padding), so the encoder needs ``num_items + 2`` embeddings.
    Rows with :math:`\lfloor \gamma n \rfloor = 0` (e.g. one item at the default) are returned unchanged.
    CoSeRec's code writes 0, the padding id, instead of a dedicated token.

    Args:
        num_items (int): number of items; the mask token is ``num_items + 1``.
        gamma (float, optional): fraction of positions masked, in :math:`(0, 1]`. (default: :obj:`0.3`, the
            ``item_mask(gamma=0.3)`` of the RecBole/DuoRec CL4SRec code; CoSeRec's ``--gamma`` is 0.7)
    """

    name = "mask"
    view_kind: ClassVar[str] = "sequence"

    class Config(ComponentConfig):
        gamma: float = Field(0.3, gt=0.0, le=1.0, description="Fraction of each sequence's items replaced by the mask.")

    def __init__(self, num_items: int, gamma: float = 0.3):
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must lie in (0, 1], got {gamma}")
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        self.num_items = num_items
        self.gamma = gamma

    @property
    def mask_token(self) -> int:
        return self.num_items + 1

    def __call__(
        self, seqs: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """A copy of ``seqs`` ``[B, L]`` with ``floor(gamma * n)`` items per row masked, and the same ``lengths``."""
        check_batch(seqs, lengths)
        real = real_mask(lengths, seqs.size(1))
        chosen = random_subset(real, ratio_count(lengths, self.gamma), generator)
        return seqs.masked_fill(chosen, self.mask_token), lengths.clone()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_items={self.num_items}, gamma={self.gamma})"
