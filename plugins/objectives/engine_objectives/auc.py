"""A pairwise AUC loss: a smooth surrogate of the Mann-Whitney statistic over (positive, negative) pairs."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig, ObjectiveOutput

from .checks import check_finite, check_pair, describe


class AUCLoss(nn.Module, Component):
    r"""Pairwise AUC loss: each anchor's positive should outscore each of its negatives.

    The AUC of anchor :math:`i` is the Mann-Whitney statistic
    :math:`\frac{1}{N} \sum_j \mathbb{1}[x_i^+ > x_{ij}^-]`. Its step function has no gradient, so the loss is a
    surrogate :math:`\ell` of the margin :math:`m_{ij} = (x_i^+ - x_{ij}^-) / \tau`, averaged over all pairs:

    .. math::
        \mathcal{L} = \frac{1}{B N} \sum_{i=1}^{B} \sum_{j=1}^{N} \ell(m_{ij}), \qquad
        \ell(m) \in \{\, \log(1 + e^{-m}),\; \sigma(-m),\; \max(0, \delta - m),\; (\delta - m)^2 \,\}

    for ``surrogate`` ``logistic`` (BPR's), ``sigmoid`` (a smooth step), ``hinge`` and ``squared`` (Gao & Zhou's
    consistent square loss), with margin :math:`\delta`. Scores are :math:`x^+_i = \langle a_i, p_i \rangle` and
    negatives are either the other rows of ``positive`` (in batch, :math:`N = B - 1`) or ``negatives`` :math:`(B, D)`
    or :math:`(B, N, D)` sampled per anchor. The part ``mann_whitney_auc`` is the exact (non-differentiable) AUC of
    the batch, ties counted 1/2, for logging.

    Related: :class:`~engine_objectives.BPR` (the logistic surrogate with sampled negatives),
    :class:`~engine_objectives.SigLIP`.
    References: Hanley & McNeil, `The meaning and use of the area under a receiver operating characteristic (ROC)
    curve <https://doi.org/10.1148/radiology.143.1.7063747>`_ (Radiology 1982); Gao & Zhou, `On the Consistency of
    AUC Pairwise Optimization <https://arxiv.org/abs/1208.0645>`_ (IJCAI 2015).

    Args:
        surrogate (str, optional): ``"logistic"``, ``"sigmoid"``, ``"hinge"`` or ``"squared"``.
            (default: :obj:`"logistic"`)
        margin (float, optional): :math:`\delta \ge 0` of ``hinge`` and ``squared``. (default: :obj:`1.0`)
        temperature (float, optional): :math:`\tau > 0` dividing the margin. (default: :obj:`1.0`)
        normalize (bool, optional): L2-normalise rows first (cosine scores). (default: :obj:`False`)

    Shapes:
        - **input:** anchor :math:`(B, D)`, positive :math:`(B, D)`, optional negatives :math:`(B, D)` or
          :math:`(B, N, D)`
        - **output:** :class:`~engine.components.ObjectiveOutput` with a scalar ``loss`` and
          ``parts={"auc": loss, "mann_whitney_auc": AUC}``
    """

    name: ClassVar[str] = "auc"

    class Config(ComponentConfig):
        """Options of :class:`AUCLoss`."""

        surrogate: Literal["logistic", "sigmoid", "hinge", "squared"] = Field(
            "logistic", description="smooth stand-in for the step 1[x+ > x-]")
        margin: float = Field(1.0, ge=0, description="margin delta of the hinge and squared surrogates")
        temperature: float = Field(1.0, gt=0, description="tau dividing the score margin")
        normalize: bool = Field(False, description="L2-normalise embeddings first: cosine scores")

    def __init__(self, surrogate: Literal["logistic", "sigmoid", "hinge", "squared"] = "logistic",
                 margin: float = 1.0, temperature: float = 1.0, normalize: bool = False) -> None:
        super().__init__()
        c = self.Config(surrogate=surrogate, margin=margin, temperature=temperature, normalize=normalize)
        self.surrogate, self.margin, self.temperature, self.normalize = c.surrogate, c.margin, c.temperature, \
            c.normalize

    def get_config_dict(self) -> dict[str, Any]:
        """The options as a flat dict, for tracking."""
        return {"surrogate": self.surrogate, "margin": self.margin, "temperature": self.temperature,
                "normalize": self.normalize}

    def get_scores(self, anchor: Tensor, positive: Tensor, negatives: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Positive scores :math:`(B, 1)`, negative scores :math:`(B, N)` and a mask of valid pairs :math:`(B, N)`."""
        if self.normalize:
            anchor, positive = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)
            negatives = None if negatives is None else F.normalize(negatives, dim=-1)
        pos = (anchor * positive).sum(dim=-1, keepdim=True)
        if negatives is None:
            neg = anchor @ positive.T
            valid = ~torch.eye(anchor.shape[0], dtype=torch.bool, device=anchor.device)
        else:
            neg = torch.einsum("bd,bnd->bn", anchor, negatives.unsqueeze(1) if negatives.dim() == 2 else negatives)
            valid = torch.ones_like(neg, dtype=torch.bool)
        return pos, neg, valid

    def surrogate_loss(self, margin: Tensor) -> Tensor:
        """:math:`\\ell(m)` elementwise."""
        if self.surrogate == "logistic":
            return F.softplus(-margin)
        if self.surrogate == "sigmoid":
            return torch.sigmoid(-margin)
        if self.surrogate == "hinge":
            return F.relu(self.margin - margin)
        return (self.margin - margin).pow(2)

    def forward(self, anchor: Tensor, positive: Tensor, negatives: Tensor | None = None) -> ObjectiveOutput:
        check_pair(anchor, positive, "AUCLoss")
        if negatives is None and anchor.shape[0] < 2:
            raise ValueError("AUCLoss: in-batch negatives need a batch of at least 2 rows; pass negatives=...")
        if negatives is not None:
            b, d = anchor.shape
            if not isinstance(negatives, Tensor) or not negatives.is_floating_point() or negatives.dim() not in (2, 3) \
                    or negatives.shape[0] != b or negatives.shape[-1] != d or negatives.shape[-2] == 0:
                raise ValueError(f"AUCLoss: negatives must be a float tensor [{b}, {d}] or [{b}, N, {d}], "
                                 f"got {describe(negatives)}")
            check_finite(negatives, "negatives", "AUCLoss")
        pos, neg, valid = self.get_scores(anchor, positive, negatives)
        margin = (pos - neg) / self.temperature
        loss = self.surrogate_loss(margin)[valid].mean()
        with torch.no_grad():
            diff = (pos - neg)[valid]
            auc = ((diff > 0).to(pos.dtype) + 0.5 * (diff == 0).to(pos.dtype)).mean()
        return ObjectiveOutput(loss=loss, parts={"auc": loss, "mann_whitney_auc": auc})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.get_config_dict().items())
