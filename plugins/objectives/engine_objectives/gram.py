"""GRAM: contrast an anchor modality with the others by the volume of the parallelotope they span."""

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

__all__ = ["GRAM", "gram_volume"]


def gram_volume(vectors: Tensor, eps: float = 1e-12) -> Tensor:
    r"""Volume :math:`\sqrt{\det(A A^\top)}` of the parallelotope spanned by the rows of ``vectors`` :math:`(*, k, D)`.

    ``eps`` clamps the determinant from below, so flat (collinear) sets keep a finite gradient.
    """
    gram = vectors @ vectors.transpose(-1, -2)
    return torch.linalg.det(gram).clamp_min(eps).sqrt()


class GRAM(TemperatureMixin, nn.Module, Component):
    r"""GRAM: a contrastive loss over :math:`k \ge 2` modalities by their Gramian volume.

    Rows are L2-normalised. The volume spanned by unit vectors :math:`v_1 \dots v_k` is
    :math:`\mathrm{Vol} = \sqrt{\det G}` with :math:`G_{uv} = \langle v_u, v_v \rangle`: 0 when they are aligned,
    1 when orthogonal (for :math:`k = 2`, :math:`|\sin \theta|`). With the anchor modality :math:`a` (``anchor``,
    e.g. text) and the others :math:`m^2 \dots m^k`:

    .. math::
        l_{ij} = -\frac{1}{\tau} \mathrm{Vol}(a_i, m^2_j, \dots, m^k_j), \qquad
        \mathcal{L} = \frac{1}{2B} \sum_{i} \Big( -\log \frac{e^{l_{ii}}}{\sum_j e^{l_{ij}}}
        - \log \frac{e^{l_{ii}}}{\sum_j e^{l_{ji}}} \Big)

    (anchor-to-data and data-to-anchor; ``symmetric=False`` keeps only the first). Memory is
    :math:`O(B^2 k^2)`: every anchor is scored against every sample's other modalities.

    Related: :class:`~engine_objectives.Symile`, :class:`~engine_objectives.InfoNCE`.
    Reference: Cicchetti et al., `Gramian Multimodal Representation Learning and Alignment
    <https://arxiv.org/abs/2412.11959>`_ (ICLR 2025).

    Args:
        temperature (float, optional): :math:`\tau > 0`; the initial value when learnable. (default: :obj:`0.1`)
        anchor (int, optional): index of the anchor modality in the input list. (default: :obj:`0`)
        symmetric (bool, optional): average both directions. (default: :obj:`True`)
        learnable_temperature (bool, optional): learn :math:`\log \tau`. (default: :obj:`False`)

    Shapes:
        - **input:** a list or tuple of :math:`k \ge 2` tensors :math:`(B, D)`, :math:`D \ge k` for non-zero volumes
        - **output:** :class:`~engine.components.ObjectiveOutput` with a scalar ``loss`` and
          ``parts={"gram": loss}``
    """

    name: ClassVar[str] = "gram"
    #: what forward() takes (a list of [B, D] tensors, one per modality); tasks that contrast two views reject it up front
    inputs: ClassVar[str] = "modalities"

    class Config(ComponentConfig):
        """Options of :class:`GRAM`."""

        temperature: float = Field(0.1, gt=0, description="softmax temperature tau (initial value if learnable)")
        anchor: int = Field(0, ge=0, description="index of the anchor modality (e.g. text) in the input list")
        symmetric: bool = Field(True, description="average anchor-to-data and data-to-anchor")
        learnable_temperature: bool = Field(False, description="learn log(tau) as a parameter")

    def __init__(self, temperature: float = 0.1, anchor: int = 0, symmetric: bool = True,
                 learnable_temperature: bool = False) -> None:
        super().__init__()
        c = self.Config(temperature=temperature, anchor=anchor, symmetric=symmetric,
                        learnable_temperature=learnable_temperature)
        self.anchor, self.symmetric, self.learnable_temperature = c.anchor, c.symmetric, c.learnable_temperature
        self._init_temperature(c.temperature, c.learnable_temperature)

    def get_config_dict(self) -> dict[str, Any]:
        """The options as a flat dict, for tracking."""
        return {"temperature": self.temperature, "anchor": self.anchor, "symmetric": self.symmetric,
                "learnable_temperature": self.learnable_temperature}

    def get_volumes(self, modalities: Sequence[Tensor]) -> Tensor:
        """:math:`\\mathrm{Vol}(a_i, m^2_j, \\dots)` for every anchor ``i`` and sample ``j``, shape :math:`(B, B)`."""
        xs = [F.normalize(x, dim=-1) for x in modalities]
        a = xs[self.anchor]
        others = torch.stack([x for k, x in enumerate(xs) if k != self.anchor], dim=1)  # [B, k-1, D]
        b, k1 = others.shape[:2]
        inner = others @ others.transpose(1, 2)                                          # [B, k-1, k-1]: <m_j, m_j>
        cross = torch.einsum("id,jkd->ijk", a, others)                                  # [B, B, k-1]: <a_i, m_j>
        gram = a.new_empty(b, b, k1 + 1, k1 + 1)
        gram[:, :, 0, 0] = (a * a).sum(dim=1)[:, None]
        gram[:, :, 0, 1:] = cross
        gram[:, :, 1:, 0] = cross
        gram[:, :, 1:, 1:] = inner[None]
        return torch.linalg.det(gram).clamp_min(1e-12).sqrt()

    def forward(self, modalities: Sequence[Tensor]) -> ObjectiveOutput:
        check_modalities(modalities, "GRAM")
        if self.anchor >= len(modalities):
            raise ValueError(f"GRAM: anchor={self.anchor} but only {len(modalities)} modalities were given")
        logits = -self.scale(self.get_volumes(modalities))
        labels = torch.arange(logits.shape[0], device=logits.device)
        loss = F.cross_entropy(logits, labels)
        if self.symmetric:
            loss = (loss + F.cross_entropy(logits.T, labels)) / 2
        return ObjectiveOutput(loss=loss, parts={"gram": loss})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.get_config_dict().items())
