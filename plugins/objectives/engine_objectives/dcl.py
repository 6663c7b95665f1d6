"""Decoupled contrastive learning: InfoNCE without the positive in the denominator."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig, ObjectiveOutput

from .checks import check_pair
from .temperature import TemperatureMixin


class DCL(TemperatureMixin, nn.Module, Component):
    r"""Decoupled contrastive loss (DCL), optionally weighted (DCLW).

    InfoNCE's gradient carries a factor :math:`1 - \mathrm{softmax}_{ii}` that vanishes when the positive is
    already easy, which slows training at small batches. DCL removes the positive from the denominator:

    .. math::
        \mathcal{L} = \frac{1}{B} \sum_{i=1}^{B} \Big( -w_i \, s_{ii} / \tau
        + \log \sum_{j \ne i} e^{s_{ij} / \tau} \Big)

    with :math:`s_{ij} = \langle a_i, p_j \rangle` (cosine when ``normalize``) and :math:`w_i = 1`. DCLW weights
    easy positives down: :math:`w_i = 2 - B \, \mathrm{softmax}_i(s_{ii} / \sigma)` over the batch's positive
    pairs (mean weight 1). The loss can be negative. ``symmetric`` averages with the transposed direction;
    ``intra_view_negatives`` uses SimCLR's :math:`2B` rows :math:`z = [a; p]`, where row :math:`r`'s negatives are
    the :math:`2B - 2` rows other than itself and its positive (the paper's form).

    Related: :class:`~engine_objectives.InfoNCE`, :class:`~engine_objectives.HardNegativeInfoNCE`.
    Reference: Yeh et al., `Decoupled Contrastive Learning <https://arxiv.org/abs/2110.06848>`_ (ECCV 2022).

    Args:
        temperature (float, optional): :math:`\tau > 0`. (default: :obj:`0.1`)
        normalize (bool, optional): L2-normalise rows first (cosine similarity). (default: :obj:`True`)
        symmetric (bool, optional): average both directions (pair form only). (default: :obj:`False`)
        intra_view_negatives (bool, optional): negatives from both views (:math:`2B - 2` per row).
            (default: :obj:`False`)
        weight_sigma (float, optional): :math:`\sigma` of DCLW's weights (the paper uses 0.5); :obj:`None` for
            plain DCL. (default: :obj:`None`)
        learnable_temperature (bool, optional): learn :math:`\log \tau`. (default: :obj:`False`)

    Shapes:
        - **input:** anchor :math:`(B, D)`, positive :math:`(B, D)`, finite floats, :math:`B \ge 2`
        - **output:** :class:`~engine.components.ObjectiveOutput` with a scalar ``loss`` and
          ``parts={"dcl": loss}``
    """

    name: ClassVar[str] = "dcl"

    class Config(ComponentConfig):
        """Options of :class:`DCL`."""

        temperature: float = Field(0.1, gt=0, description="softmax temperature tau")
        normalize: bool = Field(True, description="L2-normalise embeddings first: cosine similarity")
        symmetric: bool = Field(False, description="average both directions (pair form)")
        intra_view_negatives: bool = Field(False, description="2B-2 negatives per row from both views (SimCLR form)")
        weight_sigma: float | None = Field(None, gt=0, description="DCLW: weight positives by 2 - B softmax(s/sigma)")
        learnable_temperature: bool = Field(False, description="learn log(tau) as a parameter")

    def __init__(self, temperature: float = 0.1, normalize: bool = True, symmetric: bool = False,
                 intra_view_negatives: bool = False, weight_sigma: float | None = None,
                 learnable_temperature: bool = False) -> None:
        super().__init__()
        c = self.Config(temperature=temperature, normalize=normalize, symmetric=symmetric,
                        intra_view_negatives=intra_view_negatives, weight_sigma=weight_sigma,
                        learnable_temperature=learnable_temperature)
        self.normalize, self.symmetric, self.intra_view_negatives = c.normalize, c.symmetric, c.intra_view_negatives
        self.weight_sigma, self.learnable_temperature = c.weight_sigma, c.learnable_temperature
        self._init_temperature(c.temperature, c.learnable_temperature)

    def get_config_dict(self) -> dict[str, Any]:
        """The options as a flat dict, for tracking."""
        return {"temperature": self.temperature, "normalize": self.normalize, "symmetric": self.symmetric,
                "intra_view_negatives": self.intra_view_negatives, "weight_sigma": self.weight_sigma,
                "learnable_temperature": self.learnable_temperature}

    def get_weights(self, positive_similarity: Tensor) -> Tensor:
        """DCLW's :math:`w_i` for the positive similarities :math:`s_{ii}` (ones for plain DCL)."""
        if self.weight_sigma is None:
            return torch.ones_like(positive_similarity)
        n = positive_similarity.shape[0]
        return 2 - n * torch.softmax(positive_similarity / self.weight_sigma, dim=0)

    def _one_way(self, sim: Tensor, weights: Tensor) -> Tensor:
        """Mean over rows of ``-w_i s_ii / tau + logsumexp_{j != i} s_ij / tau`` for a square ``sim``."""
        logits = self.scale(sim)
        eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
        negatives = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1)
        return (negatives - weights * logits.diagonal()).mean()

    def forward(self, anchor: Tensor, positive: Tensor) -> ObjectiveOutput:
        check_pair(anchor, positive, "DCL")
        b = anchor.shape[0]
        if b < 2:
            raise ValueError(f"DCL: needs a batch of at least 2 rows (negatives are the other rows), got {b}")
        if self.normalize:
            anchor, positive = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)
        sim = anchor @ positive.T
        weights = self.get_weights(sim.diagonal())
        if self.intra_view_negatives:
            z = torch.cat([anchor, positive])
            zz = z @ z.T
            partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
            logits = self.scale(zz)
            mask = torch.eye(2 * b, dtype=torch.bool, device=z.device)
            mask[torch.arange(2 * b, device=z.device), partner] = True
            negatives = torch.logsumexp(logits.masked_fill(mask, float("-inf")), dim=1)
            pos = logits[torch.arange(2 * b, device=z.device), partner]
            loss = (negatives - weights.repeat(2) * pos).mean()
        else:
            loss = self._one_way(sim, weights)
            if self.symmetric:
                loss = (loss + self._one_way(sim.T, weights)) / 2
        return ObjectiveOutput(loss=loss, parts={"dcl": loss})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.get_config_dict().items())
