"""CL4SRec's item crop: a random contiguous sub-sequence of each row."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from engine.components import Component, ComponentConfig

from ._batch import check_batch, ratio_count, uniform_int


class Crop(Component):
    r"""Item crop from `"Contrastive Learning for Sequential Recommendation" <https://arxiv.org/abs/2010.14395>`_
    (Xie et al., ICDE 2022), as used by CoSeRec.

    .. math::
        s' = [v_c, v_{c+1}, \dots, v_{c+k-1}], \qquad k = \max(1, \lfloor \eta n \rfloor), \quad
        c \sim U\{0, \dots, n - k\}

    Rows stay left-padded: the kept items end in column ``L - 1`` and the new length is ``k``. Empty rows stay empty.
    CoSeRec draws ``c`` from ``{0, ..., n - k - 1}``, so it never keeps the most recent item; here every window
    is equally likely.

    Args:
        eta (float, optional): fraction of each sequence kept, in :math:`(0, 1]`. (default: :obj:`0.2`, CoSeRec's
            ``--tao``; RecBole-style CL4SRec code uses 0.6)
    """

    name = "crop"
    view_kind: ClassVar[str] = "sequence"

    class Config(ComponentConfig):
        eta: float = Field(0.2, gt=0.0, le=1.0, description="Fraction of each sequence kept (at least one item).")

    def __init__(self, eta: float = 0.2):
        if not 0.0 < eta <= 1.0:
            raise ValueError(f"eta must lie in (0, 1], got {eta}")
        self.eta = eta

    def __call__(
        self, seqs: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """A cropped copy of the left-padded batch ``seqs`` ``[B, L]`` and its new ``lengths`` ``[B]``."""
        check_batch(seqs, lengths)
        L = seqs.size(1)
        n = lengths.long()
        k = torch.where(n > 0, ratio_count(n, self.eta).clamp(min=1), 0)
        start = uniform_int(n - k, generator)
        # out column c holds item t = c - (L - k) of the window, read from column L - n + start + t
        cols = torch.arange(L, device=seqs.device).unsqueeze(0)
        src = cols + (k - n + start).unsqueeze(1)
        keep = cols >= (L - k).unsqueeze(1)
        out = seqs.gather(1, src.clamp(0, L - 1)).masked_fill(~keep, 0)
        return out, k

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(eta={self.eta})"
