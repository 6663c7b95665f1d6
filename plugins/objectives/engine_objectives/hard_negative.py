"""Debiased (Chuang et al.) and hard-negative-weighted (Robinson et al.) InfoNCE: one estimator, two names."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig, ObjectiveOutput

from .checks import check_pair

__all__ = ["DebiasedInfoNCE", "HardNegativeInfoNCE"]


def _log1mexp(u: Tensor) -> Tensor:
    """``log(1 - exp(u))`` for ``u < 0``, accurate near 0 and for very negative ``u``."""
    return torch.where(u > -math.log(2), torch.log(-torch.expm1(u)), torch.log1p(-torch.exp(u)))


class HardNegativeInfoNCE(nn.Module, Component):
    r"""InfoNCE with a debiased, hardness-weighted estimate of the negative term.

    For a row with positive logit :math:`l^+` and :math:`N` negative logits :math:`l_j = s_j / \tau` (cosine
    similarities, so :math:`e^{l_j} \ge e^{-1/\tau}`), the negative term of InfoNCE, :math:`\sum_j e^{l_j}`, is
    replaced by

    .. math::
        \hat N = \max\left( \frac{N \sum_j \omega_j e^{l_j} - N \tau^+ e^{l^+}}{1 - \tau^+},\; N e^{-1/\tau}
        \right), \qquad \omega_j = \frac{e^{\beta l_j}}{\sum_k e^{\beta l_k}}, \qquad
        \mathcal{L} = \operatorname{mean} -\log \frac{e^{l^+}}{e^{l^+} + \hat N}

    :math:`\beta > 0` concentrates the weight on hard negatives (Robinson et al.); the class prior
    :math:`\tau^+ > 0` subtracts the expected share of false negatives, same-class samples drawn as negatives
    (Chuang et al.). :math:`\beta = \tau^+ = 0` is plain InfoNCE. It is evaluated in log space, so any
    :math:`\tau` is safe. Negatives of row :math:`i` are the other rows of ``positive`` (:math:`N = B - 1`), or with
    ``intra_view_negatives`` the other :math:`2B - 2` rows of both views, as in both papers' code.

    One module with two options rather than two: the papers share the estimator, and :math:`\beta` and
    :math:`\tau^+` combine (Robinson et al. use both). :class:`DebiasedInfoNCE` is the same class under the name
    ``debiased_infonce`` with :math:`\beta = 0` fixed.

    Related: :class:`~engine_objectives.InfoNCE`, :class:`~engine_objectives.MoCHi` (synthesised hard negatives),
    :class:`~engine_objectives.DCL`.
    References: Chuang et al., `Debiased Contrastive Learning <https://arxiv.org/abs/2007.00224>`_ (NeurIPS 2020);
    Robinson et al., `Contrastive Learning with Hard Negative Samples <https://arxiv.org/abs/2010.04592>`_
    (ICLR 2021).

    Args:
        temperature (float, optional): :math:`\tau > 0`. (default: :obj:`0.5`)
        beta (float, optional): hardness concentration :math:`\beta \ge 0`. (default: :obj:`1.0`)
        tau_plus (float, optional): class prior :math:`\tau^+ \in [0, 1)`. (default: :obj:`0.1`)
        symmetric (bool, optional): average both directions (pair form only). (default: :obj:`False`)
        intra_view_negatives (bool, optional): negatives from both views. (default: :obj:`False`)

    Shapes:
        - **input:** anchor :math:`(B, D)`, positive :math:`(B, D)`, :math:`B \ge 2`; rows are L2-normalised
        - **output:** :class:`~engine.components.ObjectiveOutput` with a scalar ``loss`` and
          ``parts={name: loss}``
    """

    name: ClassVar[str] = "hard_negative_infonce"

    class Config(ComponentConfig):
        """Options of :class:`HardNegativeInfoNCE`."""

        temperature: float = Field(0.5, gt=0, description="softmax temperature tau (on cosine similarities)")
        beta: float = Field(1.0, ge=0, description="hardness concentration: weight negatives by exp(beta s / tau)")
        tau_plus: float = Field(0.1, ge=0, lt=1, description="class prior: expected share of false negatives")
        symmetric: bool = Field(False, description="average both directions (pair form)")
        intra_view_negatives: bool = Field(False, description="2B-2 negatives per row from both views (SimCLR form)")

    def __init__(self, temperature: float = 0.5, beta: float = 1.0, tau_plus: float = 0.1, symmetric: bool = False,
                 intra_view_negatives: bool = False) -> None:
        super().__init__()
        c = HardNegativeInfoNCE.Config(temperature=temperature, beta=beta, tau_plus=tau_plus, symmetric=symmetric,
                                       intra_view_negatives=intra_view_negatives)
        self.temperature, self.beta, self.tau_plus = c.temperature, c.beta, c.tau_plus
        self.symmetric, self.intra_view_negatives = c.symmetric, c.intra_view_negatives

    def get_config_dict(self) -> dict[str, Any]:
        """The options as a flat dict, for tracking."""
        return {"temperature": self.temperature, "beta": self.beta, "tau_plus": self.tau_plus,
                "symmetric": self.symmetric, "intra_view_negatives": self.intra_view_negatives}

    def row_losses(self, pos: Tensor, logits: Tensor, negative: Tensor) -> Tensor:
        """Per-row loss from positive logits :math:`(R,)`, logits :math:`(R, C)` and a negative mask :math:`(R, C)`.

        Every row must have the same number :math:`N` of negatives.
        """
        n = int(negative[0].sum())
        masked = lambda x: x.masked_fill(~negative, float("-inf"))  # noqa: E731
        log_weighted = torch.logsumexp(masked((1 + self.beta) * logits), dim=1)
        if self.beta != 0:
            log_weighted = log_weighted - torch.logsumexp(masked(self.beta * logits), dim=1) + math.log(n)
        # log of the numerator N sum w e^l - N tau+ e^l+ (minus log(1 - tau+)), -inf where it is not positive
        log_neg = log_weighted
        if self.tau_plus > 0:
            u = math.log(n * self.tau_plus) + pos - log_weighted
            ok = u < 0
            safe = torch.where(ok, u, torch.full_like(u, -1.0))
            log_neg = torch.where(ok, log_weighted + _log1mexp(safe), torch.full_like(u, float("-inf")))
        log_neg = log_neg - math.log1p(-self.tau_plus)
        floor = torch.full_like(log_neg, math.log(n) - 1 / self.temperature)
        log_neg = torch.maximum(log_neg, floor)
        return torch.logaddexp(pos, log_neg) - pos

    def forward(self, anchor: Tensor, positive: Tensor) -> ObjectiveOutput:
        check_pair(anchor, positive, type(self).__name__)
        b = anchor.shape[0]
        if b < 2:
            raise ValueError(f"{type(self).__name__}: needs a batch of at least 2 rows (negatives are the other "
                             f"rows), got {b}")
        anchor, positive = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)
        if self.intra_view_negatives:
            z = torch.cat([anchor, positive])
            logits = z @ z.T / self.temperature
            rows = torch.arange(2 * b, device=z.device)
            partner = (rows + b) % (2 * b)
            negative = torch.ones(2 * b, 2 * b, dtype=torch.bool, device=z.device)
            negative[rows, rows] = False
            negative[rows, partner] = False
            loss = self.row_losses(logits[rows, partner], logits, negative).mean()
        else:
            logits = anchor @ positive.T / self.temperature
            negative = ~torch.eye(b, dtype=torch.bool, device=anchor.device)
            loss = self.row_losses(logits.diagonal(), logits, negative).mean()
            if self.symmetric:
                loss = (loss + self.row_losses(logits.diagonal(), logits.T, negative).mean()) / 2
        return ObjectiveOutput(loss=loss, parts={self.name: loss})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.get_config_dict().items())


class DebiasedInfoNCE(HardNegativeInfoNCE):
    r"""Debiased contrastive loss: :class:`HardNegativeInfoNCE` with :math:`\beta = 0` (uniform negative weights).

    .. math::
        \hat N = \max\left( \frac{\sum_j e^{l_j} - N \tau^+ e^{l^+}}{1 - \tau^+},\; N e^{-1/\tau} \right), \qquad
        \mathcal{L} = \operatorname{mean} -\log \frac{e^{l^+}}{e^{l^+} + \hat N}

    Reference: Chuang et al., `Debiased Contrastive Learning <https://arxiv.org/abs/2007.00224>`_ (NeurIPS 2020).

    Args:
        temperature (float, optional): :math:`\tau > 0`. (default: :obj:`0.5`)
        tau_plus (float, optional): class prior :math:`\tau^+ \in [0, 1)`. (default: :obj:`0.1`)
        symmetric (bool, optional): average both directions (pair form only). (default: :obj:`False`)
        intra_view_negatives (bool, optional): negatives from both views. (default: :obj:`False`)

    Shapes:
        - **input:** anchor :math:`(B, D)`, positive :math:`(B, D)`, :math:`B \ge 2`
        - **output:** :class:`~engine.components.ObjectiveOutput` with ``parts={"debiased_infonce": loss}``
    """

    name: ClassVar[str] = "debiased_infonce"

    class Config(ComponentConfig):
        """Options of :class:`DebiasedInfoNCE`."""

        temperature: float = Field(0.5, gt=0, description="softmax temperature tau (on cosine similarities)")
        tau_plus: float = Field(0.1, ge=0, lt=1, description="class prior: expected share of false negatives")
        symmetric: bool = Field(False, description="average both directions (pair form)")
        intra_view_negatives: bool = Field(False, description="2B-2 negatives per row from both views (SimCLR form)")

    def __init__(self, temperature: float = 0.5, tau_plus: float = 0.1, symmetric: bool = False,
                 intra_view_negatives: bool = False) -> None:
        super().__init__(temperature=temperature, beta=0.0, tau_plus=tau_plus, symmetric=symmetric,
                         intra_view_negatives=intra_view_negatives)

    def get_config_dict(self) -> dict[str, Any]:
        """The options as a flat dict, for tracking."""
        config = super().get_config_dict()
        del config["beta"]
        return config
