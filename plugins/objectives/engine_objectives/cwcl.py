"""Continuously weighted contrastive loss: soft targets from a similarity in [0, 1] instead of the identity."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig, ObjectiveOutput

from .checks import check_pair, describe
from .temperature import TemperatureMixin


class CWCL(TemperatureMixin, nn.Module, Component):
    r"""CWCL: InfoNCE whose targets are graded similarities :math:`w_{ij} \in [0, 1]` rather than :math:`[i = j]`.

    With logits :math:`l_{ij} = s_{ij} / \tau`, :math:`s_{ij} = \langle a_i, p_j \rangle` (cosine when
    ``normalize``):

    .. math::
        \mathcal{L} = \frac{1}{B} \sum_{i=1}^{B} \frac{-1}{\sum_j w_{ij}} \sum_{j=1}^{B}
        w_{ij} \log \frac{\exp(l_{ij})}{\sum_{k} \exp(l_{ik})}

    By default the weights come from the anchor side, taken as the frozen, pre-trained modality:
    :math:`w_{ij} = (1 + \cos(a_i, a_j)) / 2`, computed without gradient (``weight_source="positive"`` uses the other
    side). Pass ``weights`` :math:`(B, B)` to ``forward`` for any other graded target (e.g. a string similarity of
    two records, or co-purchase rates). :math:`w = I` gives :class:`~engine_objectives.InfoNCE`. ``symmetric``
    averages with the transposed direction, whose targets are :math:`w^\top`.

    Related: :class:`~engine_objectives.InfoNCE`, :class:`~engine_objectives.SupCon` (binary multi-positive).
    Reference: Srinivasa et al., `CWCL: Cross-Modal Transfer with Continuously Weighted Contrastive Loss
    <https://arxiv.org/abs/2309.14580>`_ (NeurIPS 2023).

    Args:
        temperature (float, optional): :math:`\tau > 0`. (default: :obj:`0.1`)
        normalize (bool, optional): L2-normalise rows first (cosine similarity). (default: :obj:`True`)
        symmetric (bool, optional): average both directions. (default: :obj:`False`)
        weight_source (str, optional): ``"anchor"`` or ``"positive"``: whose intra-modal cosine gives the default
            weights. (default: :obj:`"anchor"`)
        learnable_temperature (bool, optional): learn :math:`\log \tau`. (default: :obj:`False`)

    Shapes:
        - **input:** anchor :math:`(B, D)`, positive :math:`(B, D)`, optional weights :math:`(B, B)` in
          :math:`[0, 1]` with no all-zero row
        - **output:** :class:`~engine.components.ObjectiveOutput` with a scalar ``loss`` and
          ``parts={"cwcl": loss}``
    """

    name: ClassVar[str] = "cwcl"

    class Config(ComponentConfig):
        """Options of :class:`CWCL`."""

        temperature: float = Field(0.1, gt=0, description="softmax temperature tau")
        normalize: bool = Field(True, description="L2-normalise embeddings first: cosine similarity")
        symmetric: bool = Field(False, description="average both directions (targets transposed)")
        weight_source: Literal["anchor", "positive"] = Field(
            "anchor", description="side whose (1 + cos) / 2 gives the default targets (the frozen modality)")
        learnable_temperature: bool = Field(False, description="learn log(tau) as a parameter")

    def __init__(self, temperature: float = 0.1, normalize: bool = True, symmetric: bool = False,
                 weight_source: Literal["anchor", "positive"] = "anchor", learnable_temperature: bool = False) -> None:
        super().__init__()
        c = self.Config(temperature=temperature, normalize=normalize, symmetric=symmetric,
                        weight_source=weight_source, learnable_temperature=learnable_temperature)
        self.normalize, self.symmetric, self.weight_source = c.normalize, c.symmetric, c.weight_source
        self.learnable_temperature = c.learnable_temperature
        self._init_temperature(c.temperature, c.learnable_temperature)

    def get_config_dict(self) -> dict[str, Any]:
        """The options as a flat dict, for tracking."""
        return {"temperature": self.temperature, "normalize": self.normalize, "symmetric": self.symmetric,
                "weight_source": self.weight_source, "learnable_temperature": self.learnable_temperature}

    def get_logits(self, anchor: Tensor, positive: Tensor) -> Tensor:
        """Logits :math:`s_{ij} / \\tau`, shape :math:`(B, B)`."""
        if self.normalize:
            anchor, positive = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)
        return self.scale(anchor @ positive.T)

    @torch.no_grad()
    def get_ground_truth(self, anchor: Tensor, positive: Tensor) -> Tensor:
        """Default targets :math:`(1 + \\cos(x_i, x_j)) / 2` of the ``weight_source`` side, shape :math:`(B, B)`."""
        x = F.normalize(anchor if self.weight_source == "anchor" else positive, dim=-1)
        return ((1 + x @ x.T) / 2).clamp(0, 1)

    @staticmethod
    def check_weights(weights: Tensor, b: int) -> None:
        if not isinstance(weights, Tensor) or weights.shape != (b, b) or not weights.is_floating_point():
            raise ValueError(f"CWCL: weights must be a float tensor [{b}, {b}] (row i: targets of anchor i), "
                             f"got {describe(weights)}")
        if not torch.isfinite(weights).all() or (weights < 0).any() or (weights > 1).any():
            raise ValueError("CWCL: weights must be finite and in [0, 1]; rescale the similarity, e.g. (1 + cos) / 2")
        if (weights.sum(dim=1) <= 0).any() or (weights.sum(dim=0) <= 0).any():
            raise ValueError("CWCL: every row and column of weights needs a positive entry (e.g. w_ii = 1)")

    @staticmethod
    def _soft_cross_entropy(logits: Tensor, weights: Tensor) -> Tensor:
        log_prob = torch.log_softmax(logits, dim=1)
        return (-(weights * log_prob).sum(dim=1) / weights.sum(dim=1)).mean()

    def forward(self, anchor: Tensor, positive: Tensor, weights: Tensor | None = None) -> ObjectiveOutput:
        check_pair(anchor, positive, "CWCL")
        if weights is None:
            weights = self.get_ground_truth(anchor, positive)
        else:
            self.check_weights(weights, anchor.shape[0])
        weights = weights.to(anchor.dtype)
        logits = self.get_logits(anchor, positive)
        loss = self._soft_cross_entropy(logits, weights)
        if self.symmetric:
            loss = (loss + self._soft_cross_entropy(logits.T, weights.T)) / 2
        return ObjectiveOutput(loss=loss, parts={"cwcl": loss})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.get_config_dict().items())
