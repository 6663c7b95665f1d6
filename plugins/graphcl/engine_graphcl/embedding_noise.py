"""SimGCL's uniform noise on embeddings: views without graph augmentation."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from engine.components import Component, ComponentConfig


class EmbeddingNoise(Component):
    r"""Random uniform noise from `"Are Graph Augmentations Necessary? Simple Graph Contrastive Learning for
    Recommendation" <https://arxiv.org/abs/2112.08679>`_ (Yu et al., SIGIR 2022), also used by XSimGCL.

    .. math::
        \mathbf{h}' = \mathbf{h} + \epsilon \, \mathrm{sign}(\mathbf{h}) \odot
        \frac{\boldsymbol{\Delta}}{\lVert \boldsymbol{\Delta} \rVert_2}, \qquad \boldsymbol{\Delta} \sim U(0, 1)^D

    so each row moves by exactly :math:`\epsilon` and stays in its orthant. Pass an instance as ``perturb`` to
    :class:`~engine_graphcl.lightgcn.LightGCN`. The noise comes from torch's global RNG, which the trainer seeds.

    Args:
        eps (float, optional): norm of the noise added to each row, :math:`> 0`. (default: :obj:`0.1`; SELFRec
            uses 0.1 for SimGCL and 0.2 for XSimGCL)
    """

    name = "embedding_noise"
    view_kind: ClassVar[str] = "embedding"

    class Config(ComponentConfig):
        eps: float = Field(0.1, gt=0.0, description="L2 norm of the noise added to each embedding row.")

    def __init__(self, eps: float = 0.1):
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = eps

    def __call__(self, h: Tensor, layer: int = 0) -> Tensor:
        """``h`` ``[N, D]`` plus sign-aligned noise of norm ``eps`` per row (``layer`` is unused)."""
        noise = torch.rand_like(h)
        return h + torch.sign(h) * F.normalize(noise, dim=-1) * self.eps

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(eps={self.eps})"
