"""InfoNCE over in-batch negatives, split into open_clip-style steps: logits, ground truth, cross-entropy."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig, ObjectiveOutput
from engine.distributed import active, gather_rows

from .checks import check_pair
from .projection import ProjectionHead

__all__ = ["InfoNCE", "check_pair"]


class InfoNCE(nn.Module, Component):
    r"""InfoNCE (NT-Xent) with in-batch negatives, as in CPC, SimCLR and SGL / SimGCL / SELFRec.

    Row :math:`i` of ``positive`` is the positive of row :math:`i` of ``anchor``; the other rows of ``positive``
    are its negatives. With similarities :math:`s_{ij} = \langle a_i, p_j \rangle` (cosine when ``normalize``):

    .. math::
        \mathcal{L} = \frac{1}{B} \sum_{i=1}^{B}
        -\log \frac{\exp(s_{ii} / \tau)}{\sum_{j=1}^{B} \exp(s_{ij} / \tau)}

    computed as a cross-entropy over the logits :math:`s / \tau` (stable for any scale). With ``symmetric`` the
    loss is averaged with the same term from ``positive`` to ``anchor`` (CLIP's loss).

    With ``intra_view_negatives`` it is SimCLR's NT-Xent over the :math:`2B` rows :math:`z = [a; p]`: each row's
    positive is its other view, and its negatives are the other :math:`2B - 2` rows of *both* views (what CL4SRec,
    DuoRec and MCLRec compute). It is symmetric by construction, so ``symmetric`` changes nothing then:

    .. math::
        \mathcal{L} = \frac{1}{2B} \sum_{r=1}^{2B}
        -\log \frac{\exp(\langle z_r, z_{r^+} \rangle / \tau)}{\sum_{k \ne r} \exp(\langle z_r, z_k \rangle / \tau)}

    Data-parallel (``engine run --nproc N``): each rank's rows are anchors against the rows of *every* rank
    (:func:`engine.distributed.gather_rows`, with gradients), and the rank returns its share of the global
    batch's loss (summed over its anchors, divided by the global count, times the rank count), so that the loss and
    the gradients averaged over ranks equal those of one process on the whole batch.

    Related: :class:`~engine_objectives.BPR` (one sampled negative, no temperature).
    References: van den Oord et al., `Representation Learning with Contrastive Predictive Coding
    <https://arxiv.org/abs/1807.03748>`_ (2018); Chen et al., `A Simple Framework for Contrastive Learning of
    Visual Representations <https://arxiv.org/abs/2002.05709>`_ (ICML 2020); Wu et al., `Self-supervised Graph
    Learning for Recommendation <https://arxiv.org/abs/2010.10783>`_ (SIGIR 2021).

    Args:
        temperature (float, optional): :math:`\tau > 0`; the initial value when learnable. (default: :obj:`0.2`)
        normalize (bool, optional): L2-normalise rows first (cosine similarity). (default: :obj:`True`)
        symmetric (bool, optional): average both directions. (default: :obj:`False`)
        learnable_temperature (bool, optional): learn :math:`\log \tau` as a parameter. (default: :obj:`False`)
        intra_view_negatives (bool, optional): NT-Xent over both views' :math:`2B` rows. (default: :obj:`False`)
        projection_dim (int, optional): when set, both inputs first go through one shared
            :class:`~engine_objectives.projection.ProjectionHead` (Linear, ReLU, Linear) of this output size, as in
            SimCLR; its parameters train with the model. (default: :obj:`None`: no head)
        projection_hidden_dim (int, optional): hidden size of the head. (default: :obj:`projection_dim`)
        projection_input_dim (int, optional): the embeddings' size :math:`D`; when :obj:`None` the head's first
            layer is lazy and takes it from the first batch. (default: :obj:`None`)

    Shapes:
        - **input:** anchor :math:`(B, D)`, positive :math:`(B, D)`, finite floats
        - **output:** :class:`~engine.components.ObjectiveOutput` with a scalar ``loss`` and
          ``parts={"infonce": loss}``
    """

    name: ClassVar[str] = "infonce"
    #: splits over ranks by gathering every rank's candidates (see :mod:`engine.distributed`)
    data_parallel: ClassVar[str] = "gather"

    class Config(ComponentConfig):
        """Options of :class:`InfoNCE`."""

        temperature: float = Field(0.2, gt=0, description="softmax temperature tau (initial value if learnable)")
        normalize: bool = Field(True, description="L2-normalise embeddings first: cosine similarity")
        symmetric: bool = Field(False, description="average anchor->positive and positive->anchor losses")
        learnable_temperature: bool = Field(False, description="learn log(tau) as a parameter")
        intra_view_negatives: bool = Field(False, description="SimCLR NT-Xent: the other 2B-2 rows of both views "
                                                              "are negatives (CL4SRec, DuoRec, MCLRec)")
        projection_dim: int | None = Field(None, ge=1, description="SimCLR projection head (Linear-ReLU-Linear) "
                                                                   "of this output size on both inputs; none if null")
        projection_hidden_dim: int | None = Field(None, ge=1, description="hidden size of the projection head "
                                                                          "(default: projection_dim)")
        projection_input_dim: int | None = Field(None, ge=1, description="embedding size D for the head "
                                                                         "(default: inferred from the first batch)")

    def __init__(
        self,
        temperature: float = 0.2,
        normalize: bool = True,
        symmetric: bool = False,
        learnable_temperature: bool = False,
        intra_view_negatives: bool = False,
        projection_dim: int | None = None,
        projection_hidden_dim: int | None = None,
        projection_input_dim: int | None = None,
    ) -> None:
        super().__init__()
        config = self.Config(
            temperature=temperature,
            normalize=normalize,
            symmetric=symmetric,
            learnable_temperature=learnable_temperature,
            intra_view_negatives=intra_view_negatives,
            projection_dim=projection_dim,
            projection_hidden_dim=projection_hidden_dim,
            projection_input_dim=projection_input_dim,
        )
        if config.projection_dim is None and (projection_hidden_dim is not None or projection_input_dim is not None):
            raise ValueError("InfoNCE: projection_hidden_dim and projection_input_dim need projection_dim")
        self.projection = (
            None if config.projection_dim is None
            else ProjectionHead(config.projection_dim, config.projection_hidden_dim, config.projection_input_dim)
        )
        self.intra_view_negatives = config.intra_view_negatives
        self.normalize = config.normalize
        self.symmetric = config.symmetric
        self.learnable_temperature = config.learnable_temperature
        self._temperature = config.temperature
        log_tau = nn.Parameter(torch.tensor(math.log(config.temperature))) if self.learnable_temperature else None
        self.register_parameter("log_temperature", log_tau)

    @property
    def temperature(self) -> float:
        """The current temperature :math:`\\tau` (a float, for logging)."""
        if self.log_temperature is None:
            return self._temperature
        return float(self.log_temperature.detach().exp())

    def get_config_dict(self) -> dict[str, Any]:
        """The options as a flat dict, for tracking (the temperature is the current one)."""
        config = {
            "temperature": self.temperature,
            "normalize": self.normalize,
            "symmetric": self.symmetric,
            "learnable_temperature": self.learnable_temperature,
            "intra_view_negatives": self.intra_view_negatives,
        }
        if self.projection is not None:  # only when set, so runs without a head log what they always logged
            config.update(projection_dim=self.projection.output_dim, projection_hidden_dim=self.projection.hidden_dim,
                          projection_input_dim=self.projection.input_dim)
        return config

    def project(self, x: Tensor) -> Tensor:
        """The projection head applied to ``x`` (the identity without ``projection_dim``)."""
        return x if self.projection is None else self.projection(x)

    def get_logits(self, anchor: Tensor, positive: Tensor) -> Tensor:
        """Logits :math:`s_{ij} / \\tau`, shape :math:`(B, B)`; row ``i`` scores ``anchor[i]`` against all positives."""
        if self.normalize:
            anchor, positive = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)
        logits = anchor @ positive.T
        if self.log_temperature is not None:
            return logits / self.log_temperature.exp()
        return logits / self._temperature

    def get_ground_truth(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        """Targets of the cross-entropy: the positive of row ``i`` is column ``i``."""
        return torch.arange(batch_size, device=device, dtype=torch.long)

    def forward(self, anchor: Tensor, positive: Tensor) -> ObjectiveOutput:
        check_pair(anchor, positive, "InfoNCE")
        anchor, positive = self.project(anchor), self.project(positive)
        if active() is not None:
            return self._gathered(anchor, positive)
        if self.intra_view_negatives:
            return self._nt_xent(anchor, positive)
        logits = self.get_logits(anchor, positive)
        labels = self.get_ground_truth(anchor.shape[0], anchor.device)
        loss = F.cross_entropy(logits, labels)
        if self.symmetric:
            loss = (loss + F.cross_entropy(logits.T, labels)) / 2
        return ObjectiveOutput(loss=loss, parts={"infonce": loss})

    def _nt_xent(self, anchor: Tensor, positive: Tensor) -> ObjectiveOutput:
        b = anchor.shape[0]
        z = torch.cat([anchor, positive])
        logits = self.get_logits(z, z)
        logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
        labels = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
        loss = F.cross_entropy(logits, labels)
        return ObjectiveOutput(loss=loss, parts={"infonce": loss})

    def _gathered(self, anchor: Tensor, positive: Tensor) -> ObjectiveOutput:
        """This rank's share of the loss over the global batch: its rows as anchors, every rank's rows as
        candidates, the positive of local row ``i`` at global column ``offset + i``."""
        world = active().world
        a_all, offset, n = gather_rows(anchor)
        p_all, _, _ = gather_rows(positive)
        b = anchor.shape[0]
        own = torch.arange(b, device=anchor.device) + offset
        if self.intra_view_negatives:  # rows [a; p] of the global 2n: local a at own, local p at n + own
            logits = self.get_logits(torch.cat([anchor, positive]), torch.cat([a_all, p_all]))
            rows = torch.arange(2 * b, device=anchor.device)
            logits = logits.masked_fill(torch.zeros_like(logits, dtype=torch.bool).index_put_(
                (rows, torch.cat([own, own + n])), torch.tensor(True, device=anchor.device)), float("-inf"))
            labels = torch.cat([own + n, own])
            loss = F.cross_entropy(logits, labels, reduction="sum") * (world / (2 * n))
            return ObjectiveOutput(loss=loss, parts={"infonce": loss})
        loss = F.cross_entropy(self.get_logits(anchor, p_all), own, reduction="sum")
        if self.symmetric:
            loss = (loss + F.cross_entropy(self.get_logits(positive, a_all), own, reduction="sum")) / 2
        loss = loss * (world / n)
        return ObjectiveOutput(loss=loss, parts={"infonce": loss})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.get_config_dict().items() if not k.startswith("projection"))
