"""CL4SRec's item reorder: a random contiguous window shuffled."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from engine.components import Component, ComponentConfig

from ._batch import check_batch, ratio_count, uniform, uniform_int


class Reorder(Component):
    r"""Item reorder from `"Contrastive Learning for Sequential Recommendation" <https://arxiv.org/abs/2010.14395>`_
    (Xie et al., ICDE 2022).

    .. math::
        s' = [v_1, \dots, v_{c-1}, \hat v_c, \dots, \hat v_{c+k-1}, v_{c+k}, \dots, v_n], \qquad
        k = \lfloor \beta n \rfloor, \quad c \sim U\{1, \dots, n - k + 1\}

    where :math:`\hat v` is a uniform random permutation of the window. Items outside the window and lengths do not
    change; rows with ``k <= 1`` are returned unchanged.

    Args:
        beta (float, optional): fraction of each sequence shuffled, in :math:`(0, 1]`. (default: :obj:`0.2`,
            CoSeRec's ``--beta``; RecBole-style CL4SRec code uses 0.6)
    """

    name = "reorder"
    view_kind: ClassVar[str] = "sequence"

    class Config(ComponentConfig):
        beta: float = Field(0.2, gt=0.0, le=1.0, description="Fraction of each sequence in the shuffled window.")

    def __init__(self, beta: float = 0.2):
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta must lie in (0, 1], got {beta}")
        self.beta = beta

    def __call__(
        self, seqs: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """A copy of ``seqs`` ``[B, L]`` with one window of ``floor(beta * n)`` items per row shuffled."""
        check_batch(seqs, lengths)
        L = seqs.size(1)
        n = lengths.long()
        k = ratio_count(n, self.beta)
        first = (L - n + uniform_int(n - k, generator)).unsqueeze(1)  # first column of the window
        cols = torch.arange(L, device=seqs.device).unsqueeze(0)
        inside = (cols >= first) & (cols < first + k.unsqueeze(1))
        # sort keys: column index outside the window; inside, first - 0.5 + k * U[0, 1), which stays strictly
        # between first - 1 and first + k, so the window keeps its place and is permuted by the random keys
        noise = first - 0.5 + uniform((seqs.size(0), L), generator, seqs.device) * k.unsqueeze(1)
        keys = torch.where(inside, noise, cols.to(torch.float64))
        return seqs.gather(1, keys.argsort(dim=1, stable=True)), lengths.clone()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(beta={self.beta})"
