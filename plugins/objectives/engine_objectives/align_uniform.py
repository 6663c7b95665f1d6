"""Alignment and uniformity on the hypersphere (Wang & Isola) as differentiable losses."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig, ObjectiveOutput

from .checks import check_pair

__all__ = ["AlignUniform", "alignment_loss", "uniformity_loss"]


def alignment_loss(x: Tensor, y: Tensor, alpha: float = 2.0) -> Tensor:
    r""":math:`\frac{1}{B} \sum_i \lVert \hat x_i - \hat y_i \rVert_2^\alpha` over L2-normalised rows, with gradient."""
    sq = (F.normalize(x, dim=-1) - F.normalize(y, dim=-1)).pow(2).sum(dim=-1)
    return sq.mean() if alpha == 2 else sq.pow(alpha / 2).mean()


def uniformity_loss(x: Tensor, t: float = 2.0) -> Tensor:
    r""":math:`\log \frac{2}{B(B-1)} \sum_{i<j} e^{-t \lVert \hat x_i - \hat x_j \rVert^2}` over L2-normalised rows.

    Uses :math:`\lVert \hat x_i - \hat x_j \rVert^2 = 2 - 2 \langle \hat x_i, \hat x_j \rangle`, which is smooth even
    for coinciding rows. Needs :math:`B \ge 2`; memory :math:`O(B^2)`.
    """
    b = x.shape[0]
    if b < 2:
        raise ValueError(f"uniformity_loss: needs at least 2 rows, got shape {list(x.shape)}")
    xn = F.normalize(x, dim=-1)
    i, j = torch.triu_indices(b, b, offset=1, device=x.device)
    sq = (2 - 2 * (xn @ xn.T)[i, j]).clamp_min(0)
    return torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel())


class AlignUniform(nn.Module, Component):
    r"""Alignment plus uniformity: positives close, all embeddings spread over the unit sphere.

    .. math::
        \mathcal{L} = \lambda_a \underbrace{\frac{1}{B} \sum_i \lVert \hat a_i - \hat p_i \rVert^\alpha}_{align}
        + \lambda_u \underbrace{\tfrac{1}{2} \big( U(\hat a) + U(\hat p) \big)}_{uniform}, \qquad
        U(x) = \log \frac{2}{B(B-1)} \sum_{i<j} e^{-t \lVert x_i - x_j \rVert^2}

    Both parts are returned, so with weights :math:`\lambda = 0` the module only logs the two numbers as metrics
    (:mod:`engine.evaluate.geometry` computes the same quantities without gradient, on all embeddings, at
    evaluation). The paper's loss is :math:`\alpha = 2, t = 2`, :math:`\lambda_a = \lambda_u = 1`.

    Related: :class:`~engine_objectives.InfoNCE` (which optimises both asymptotically).
    Reference: Wang & Isola, `Understanding Contrastive Representation Learning through Alignment and Uniformity on
    the Hypersphere <https://arxiv.org/abs/2005.10242>`_ (ICML 2020).

    Args:
        alpha (float, optional): exponent of the alignment distance, :math:`> 0`. (default: :obj:`2.0`)
        t (float, optional): temperature of the Gaussian potential, :math:`> 0`. (default: :obj:`2.0`)
        align_weight (float, optional): :math:`\lambda_a \ge 0`. (default: :obj:`1.0`)
        uniform_weight (float, optional): :math:`\lambda_u \ge 0`. (default: :obj:`1.0`)

    Shapes:
        - **input:** anchor :math:`(B, D)`, positive :math:`(B, D)`, :math:`B \ge 2`
        - **output:** :class:`~engine.components.ObjectiveOutput` with a scalar ``loss`` and
          ``parts={"align": ..., "uniform": ...}`` (unweighted)
    """

    name: ClassVar[str] = "align_uniform"

    class Config(ComponentConfig):
        """Options of :class:`AlignUniform`."""

        alpha: float = Field(2.0, gt=0, description="exponent of the alignment distance")
        t: float = Field(2.0, gt=0, description="temperature of the uniformity Gaussian potential")
        align_weight: float = Field(1.0, ge=0, description="weight of the alignment part")
        uniform_weight: float = Field(1.0, ge=0, description="weight of the uniformity part")

    def __init__(self, alpha: float = 2.0, t: float = 2.0, align_weight: float = 1.0,
                 uniform_weight: float = 1.0) -> None:
        super().__init__()
        c = self.Config(alpha=alpha, t=t, align_weight=align_weight, uniform_weight=uniform_weight)
        self.alpha, self.t, self.align_weight, self.uniform_weight = c.alpha, c.t, c.align_weight, c.uniform_weight

    def get_config_dict(self) -> dict[str, Any]:
        """The options as a flat dict, for tracking."""
        return {"alpha": self.alpha, "t": self.t, "align_weight": self.align_weight,
                "uniform_weight": self.uniform_weight}

    def forward(self, anchor: Tensor, positive: Tensor) -> ObjectiveOutput:
        check_pair(anchor, positive, "AlignUniform")
        if anchor.shape[0] < 2:
            raise ValueError(f"AlignUniform: uniformity needs at least 2 rows, got {list(anchor.shape)}")
        align = alignment_loss(anchor, positive, self.alpha)
        uniform = (uniformity_loss(anchor, self.t) + uniformity_loss(positive, self.t)) / 2
        loss = self.align_weight * align + self.uniform_weight * uniform
        return ObjectiveOutput(loss=loss, parts={"align": align, "uniform": uniform})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.get_config_dict().items())
