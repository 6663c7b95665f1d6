"""Supervised contrastive loss: every other row with the same label (class or entity id) is a positive."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig, ObjectiveOutput

from .checks import check_finite, check_labels, check_pair, describe
from .temperature import TemperatureMixin


class SupCon(TemperatureMixin, nn.Module, Component):
    r"""SupCon (:math:`\mathcal{L}^{sup}_{out}`): a multi-positive InfoNCE over rows that share a label.

    Over :math:`N` rows :math:`z` with labels :math:`y`, let :math:`P(i) = \{p \ne i : y_p = y_i\}` and
    :math:`A(i) = \{k \ne i\}`. With :math:`s_{ik} = \langle z_i, z_k \rangle` (cosine when ``normalize``):

    .. math::
        \mathcal{L} = \frac{1}{|I|} \sum_{i \in I} \frac{-1}{|P(i)|} \sum_{p \in P(i)}
        \log \frac{\exp(s_{ip} / \tau)}{\sum_{k \in A(i)} \exp(s_{ik} / \tau)}

    where :math:`I` is the set of rows with at least one positive (rows alone in their class are anchors of
    nothing, but still negatives of the others). Three ways to call it:

    - ``loss(z, labels=y)`` with ``z`` :math:`(N, D)` and ``y`` :math:`(N,)`: e.g. records and their entity ids;
    - ``loss(z, labels=y)`` with ``z`` :math:`(N, V, D)`: :math:`V` views of each row; without ``labels`` each row
      is its own class, which is SimCLR's NT-Xent;
    - ``loss(anchor, positive)`` or ``loss(anchor, positive, labels=y)`` with two :math:`(B, D)` views: the same as
      ``z = stack([anchor, positive], 1)``, so it drops in wherever :class:`~engine_objectives.InfoNCE` does.

    Related: :class:`~engine_objectives.InfoNCE` (``intra_view_negatives`` is SupCon without labels),
    :class:`~engine_objectives.CWCL` (graded instead of binary targets).
    Reference: Khosla et al., `Supervised Contrastive Learning <https://arxiv.org/abs/2004.11362>`_ (NeurIPS 2020).

    Args:
        temperature (float, optional): :math:`\tau > 0`. (default: :obj:`0.1`)
        normalize (bool, optional): L2-normalise rows first (cosine similarity). (default: :obj:`True`)
        learnable_temperature (bool, optional): learn :math:`\log \tau`. (default: :obj:`False`)

    Shapes:
        - **input:** embeddings :math:`(N, D)` or :math:`(N, V, D)` (or anchor and positive :math:`(B, D)`),
          labels :math:`(N,)` integers
        - **output:** :class:`~engine.components.ObjectiveOutput` with a scalar ``loss`` and
          ``parts={"supcon": loss}``
    """

    name: ClassVar[str] = "supcon"

    class Config(ComponentConfig):
        """Options of :class:`SupCon`."""

        temperature: float = Field(0.1, gt=0, description="softmax temperature tau")
        normalize: bool = Field(True, description="L2-normalise embeddings first: cosine similarity")
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

    @staticmethod
    def flatten(embeddings: Tensor, positive: Tensor | None, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """Checked rows :math:`(N V, D)` (view-major) and their labels :math:`(N V,)`."""
        where = "SupCon"
        if positive is not None:
            if isinstance(positive, Tensor) and not positive.is_floating_point():
                raise ValueError(f"{where}: the second argument is the positive view [B, D]; pass labels as a "
                                 f"keyword: loss(z, labels=y) (got {describe(positive)})")
            check_pair(embeddings, positive, where)
            embeddings = torch.stack([embeddings, positive], dim=1)
        if not isinstance(embeddings, Tensor) or embeddings.dim() not in (2, 3) or not embeddings.is_floating_point():
            raise ValueError(f"{where}: embeddings must be a float tensor [N, D] or [N, V, D], "
                             f"got {describe(embeddings)}")
        n = embeddings.shape[0]
        if n == 0 or embeddings.shape[-1] == 0 or (embeddings.dim() == 3 and embeddings.shape[1] == 0):
            raise ValueError(f"{where}: empty input (shape {list(embeddings.shape)})")
        check_finite(embeddings, "embeddings", where)
        if labels is None:
            if embeddings.dim() == 2:
                raise ValueError(f"{where}: [N, D] embeddings need labels [N] (one class or entity id per row); "
                                 "pass labels=..., or views as [N, V, D] or (anchor, positive)")
            labels = torch.arange(n, device=embeddings.device)
        check_labels(labels, n, where)
        if embeddings.dim() == 3:
            v = embeddings.shape[1]
            embeddings = embeddings.transpose(0, 1).reshape(n * v, embeddings.shape[-1])
            labels = labels.repeat(v)
        return embeddings, labels.to(embeddings.device)

    def get_logits(self, z: Tensor) -> Tensor:
        """Logits :math:`s_{ik} / \\tau`, shape :math:`(N, N)`."""
        if self.normalize:
            z = F.normalize(z, dim=-1)
        return self.scale(z @ z.T)

    def get_ground_truth(self, labels: Tensor) -> Tensor:
        """The positive mask :math:`[y_i = y_p, p \\ne i]`, shape :math:`(N, N)`."""
        same = labels[:, None] == labels[None, :]
        return same & ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)

    def forward(self, embeddings: Tensor, positive: Tensor | None = None, labels: Tensor | None = None
                ) -> ObjectiveOutput:
        z, y = self.flatten(embeddings, positive, labels)
        logits = self.get_logits(z)
        pos_mask = self.get_ground_truth(y)
        n_pos = pos_mask.sum(dim=1)
        anchors = n_pos > 0
        if not anchors.any():
            raise ValueError("SupCon: no two rows share a label, so there is no positive pair; pass two views "
                             "(positive=..., or [N, V, D]) or labels with repeated ids")
        eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
        log_prob = logits - torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
        per_row = -(log_prob.masked_fill(~pos_mask, 0.0)).sum(dim=1)[anchors] / n_pos[anchors]
        loss = per_row.mean()
        return ObjectiveOutput(loss=loss, parts={"supcon": loss})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.get_config_dict().items())
