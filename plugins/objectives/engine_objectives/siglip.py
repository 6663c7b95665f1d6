"""SigLIP's pairwise sigmoid loss: every (anchor, candidate) pair is an independent binary classification."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig, ObjectiveOutput

from .checks import check_pair


class SigLIP(nn.Module, Component):
    r"""The sigmoid loss of SigLIP: no softmax, so no normalisation across the batch.

    With logits :math:`l_{ij} = s_{ij} / \tau + b` (:math:`s_{ij} = \langle a_i, p_j \rangle`, cosine when
    ``normalize``) and labels :math:`z_{ij} = 1` if :math:`i = j` else :math:`-1`:

    .. math::
        \mathcal{L} = \frac{1}{B} \sum_{i=1}^{B} \sum_{j=1}^{B} -\log \sigma(z_{ij} \, l_{ij})
                    = \frac{1}{B} \sum_{i, j} \mathrm{softplus}(-z_{ij} \, l_{ij})

    (summed over candidates, averaged over anchors, as in the paper). The loss is symmetric in anchor and
    positive. With ``learnable`` (the paper's setting) both :math:`\log(1/\tau)` and the bias :math:`b` are
    parameters; the paper starts from :math:`1/\tau = 10`, :math:`b = -10` so that the :math:`B^2 - B` negatives do
    not dominate the first steps.

    Related: :class:`~engine_objectives.InfoNCE` (softmax over the batch), :class:`~engine_objectives.AUCLoss`.
    Reference: Zhai et al., `Sigmoid Loss for Language Image Pre-Training <https://arxiv.org/abs/2303.15343>`_
    (ICCV 2023).

    Args:
        temperature (float, optional): :math:`\tau > 0` (the logit scale is :math:`1/\tau`); the initial value when
            learnable. (default: :obj:`0.1`)
        bias (float, optional): :math:`b`; the initial value when learnable. (default: :obj:`-10.0`)
        learnable (bool, optional): learn :math:`\log(1/\tau)` and :math:`b`. (default: :obj:`True`)
        normalize (bool, optional): L2-normalise rows first (cosine similarity). (default: :obj:`True`)

    Shapes:
        - **input:** anchor :math:`(B, D)`, positive :math:`(B, D)`, finite floats
        - **output:** :class:`~engine.components.ObjectiveOutput` with a scalar ``loss`` and
          ``parts={"siglip": loss}``
    """

    name: ClassVar[str] = "siglip"

    class Config(ComponentConfig):
        """Options of :class:`SigLIP`."""

        temperature: float = Field(0.1, gt=0, description="tau; logits are s / tau + bias (initial if learnable)")
        bias: float = Field(-10.0, description="logit bias b (initial value if learnable)")
        learnable: bool = Field(True, description="learn log(1/tau) and the bias, as in the paper")
        normalize: bool = Field(True, description="L2-normalise embeddings first: cosine similarity")

    def __init__(self, temperature: float = 0.1, bias: float = -10.0, learnable: bool = True,
                 normalize: bool = True) -> None:
        super().__init__()
        config = self.Config(temperature=temperature, bias=bias, learnable=learnable, normalize=normalize)
        self.learnable, self.normalize = config.learnable, config.normalize
        log_scale = torch.tensor(-math.log(config.temperature))
        bias_t = torch.tensor(float(config.bias))
        if self.learnable:
            self.log_scale, self.bias = nn.Parameter(log_scale), nn.Parameter(bias_t)
        else:
            self.register_buffer("log_scale", log_scale, persistent=False)
            self.register_buffer("bias", bias_t, persistent=False)

    @property
    def temperature(self) -> float:
        """The current :math:`\\tau` (a float, for logging)."""
        return float(torch.exp(-self.log_scale.detach()))

    def get_config_dict(self) -> dict[str, Any]:
        """The options as a flat dict, for tracking (temperature and bias are the current ones)."""
        return {"temperature": self.temperature, "bias": float(self.bias.detach()), "learnable": self.learnable,
                "normalize": self.normalize}

    def get_logits(self, anchor: Tensor, positive: Tensor) -> Tensor:
        """Logits :math:`s_{ij} / \\tau + b`, shape :math:`(B, B)`."""
        if self.normalize:
            anchor, positive = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)
        return anchor @ positive.T * self.log_scale.exp() + self.bias

    def get_ground_truth(self, batch_size: int, device: torch.device | str | None = None,
                         dtype: torch.dtype = torch.float32) -> Tensor:
        """Labels :math:`z`: :math:`+1` on the diagonal, :math:`-1` elsewhere, shape :math:`(B, B)`."""
        return 2 * torch.eye(batch_size, device=device, dtype=dtype) - 1

    def forward(self, anchor: Tensor, positive: Tensor) -> ObjectiveOutput:
        check_pair(anchor, positive, "SigLIP")
        logits = self.get_logits(anchor, positive)
        labels = self.get_ground_truth(anchor.shape[0], logits.device, logits.dtype)
        loss = F.softplus(-labels * logits).sum() / anchor.shape[0]
        return ObjectiveOutput(loss=loss, parts={"siglip": loss})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.get_config_dict().items())
