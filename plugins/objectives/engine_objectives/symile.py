"""Symile: a contrastive loss for any number of modalities via the multilinear inner product."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig, ObjectiveOutput

from .checks import check_modalities
from .temperature import TemperatureMixin


class Symile(TemperatureMixin, nn.Module, Component):
    r"""Symile: InfoNCE over :math:`M \ge 2` modalities, scored by the multilinear inner product (MIP).

    The MIP of :math:`M` vectors is :math:`\langle x^1, \dots, x^M \rangle = \sum_d \prod_m x^m_d`. For target
    modality :math:`m`, the other modalities of sample :math:`i` score every candidate :math:`x^m_j` of the batch:

    .. math::
        l^{(m)}_{ij} = \frac{1}{\tau} \langle x^m_j, \{x^{k}_i\}_{k \ne m} \rangle, \qquad
        \mathcal{L} = \frac{1}{M} \sum_{m=1}^{M} \frac{1}{B} \sum_{i=1}^{B}
        -\log \frac{\exp(l^{(m)}_{ii})}{\sum_{j} \exp(l^{(m)}_{ij})}

    Unlike pairwise CLIP losses, this lower-bounds the total correlation of all modalities, so it captures
    dependencies that only appear jointly (e.g. XOR-like ones). Negatives are the :math:`B - 1` in-batch candidates
    of each target modality (the paper's :math:`O(N)` sampling). With :math:`M = 2` it is CLIP's symmetric InfoNCE.

    Related: :class:`~engine_objectives.GRAM`, :class:`~engine_objectives.InfoNCE` (``symmetric``).
    Reference: Saporta et al., `Contrasting with Symile: Simple Model-Agnostic Representation Learning for Unlimited
    Modalities <https://arxiv.org/abs/2411.01053>`_ (NeurIPS 2024).

    Args:
        temperature (float, optional): :math:`\tau > 0`; the initial value when learnable. (default: :obj:`0.1`)
        normalize (bool, optional): L2-normalise each modality's rows first. (default: :obj:`True`)
        learnable_temperature (bool, optional): learn :math:`\log \tau`, as the paper does. (default: :obj:`False`)

    Shapes:
        - **input:** a list or tuple of :math:`M \ge 2` tensors :math:`(B, D)`, row :math:`i` of each one sample
        - **output:** :class:`~engine.components.ObjectiveOutput` with a scalar ``loss`` and
          ``parts={"symile": loss}``
    """

    name: ClassVar[str] = "symile"
    #: what forward() takes (a list of [B, D] tensors, one per modality); tasks that contrast two views reject it up front
    inputs: ClassVar[str] = "modalities"

    class Config(ComponentConfig):
        """Options of :class:`Symile`."""

        temperature: float = Field(0.1, gt=0, description="softmax temperature tau (initial value if learnable)")
        normalize: bool = Field(True, description="L2-normalise each modality first")
        learnable_temperature: bool = Field(False, description="learn log(tau) as a parameter")

    def __init__(self, temperature: float = 0.1, normalize: bool = True, learnable_temperature: bool = False) -> None:
        super().__init__()
        c = self.Config(temperature=temperature, normalize=normalize, learnable_temperature=learnable_temperature)
        self.normalize, self.learnable_temperature = c.normalize, c.learnable_temperature
        self._init_temperature(c.temperature, c.learnable_temperature)

    def get_config_dict(self) -> dict[str, Any]:
        """The options as a flat dict, for tracking."""
        return {"temperature": self.temperature, "normalize": self.normalize,
                "learnable_temperature": self.learnable_temperature}

    def get_logits(self, modalities: Sequence[Tensor], target: int) -> Tensor:
        """Logits :math:`l^{(m)}`, shape :math:`(B, B)`: row ``i`` = the other modalities of sample ``i``."""
        others = [x for k, x in enumerate(modalities) if k != target]
        product = others[0]
        for x in others[1:]:
            product = product * x
        return self.scale(product @ modalities[target].T)

    def forward(self, modalities: Sequence[Tensor]) -> ObjectiveOutput:
        check_modalities(modalities, "Symile")
        xs = [F.normalize(x, dim=-1) for x in modalities] if self.normalize else list(modalities)
        labels = torch.arange(xs[0].shape[0], device=xs[0].device)
        loss = sum(F.cross_entropy(self.get_logits(xs, m), labels) for m in range(len(xs))) / len(xs)
        return ObjectiveOutput(loss=loss, parts={"symile": loss})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.get_config_dict().items())
