"""DCCF: disentangled intents and adaptive augmentation for contrastive collaborative filtering."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig

from .adaptive_mask import AdaptiveMask
from .graph import Graph, spmm
from .lightgcn import GraphEncoding


class DCCF(nn.Module, Component):
    r"""DCCF from `"Disentangled Contrastive Collaborative Filtering" <https://arxiv.org/abs/2305.02759>`_
    (Ren et al., SIGIR 2023), following the official code (HKUDS/DCCF).

    For each layer :math:`l`, from :math:`\mathbf{E}^{(l)}`:

    .. math::
        \mathbf{Z}^{(l)} &= \bar{\mathbf{A}}\mathbf{E}^{(l)} \qquad \text{(graph message passing)} \\
        \mathbf{R}^{(l)}_u &= \mathrm{softmax}(\mathbf{E}^{(l)}_u\mathbf{W}_u)\mathbf{W}_u^{\top}, \quad
        \mathbf{R}^{(l)}_i = \mathrm{softmax}(\mathbf{E}^{(l)}_i\mathbf{W}_i)\mathbf{W}_i^{\top}
        \qquad \text{(intents)} \\
        \mathbf{G}^{(l)} &= \mathcal{M}(\mathbf{Z}^{(l)})\mathbf{E}^{(l)}, \quad
        \mathbf{H}^{(l)} = \mathcal{M}(\mathbf{R}^{(l)})\mathbf{E}^{(l)} \qquad \text{(adaptive masks)} \\
        \mathbf{E}^{(l+1)} &= \mathbf{Z}^{(l)} + \mathbf{R}^{(l)} + \mathbf{G}^{(l)} + \mathbf{H}^{(l)}
        + \mathbf{E}^{(l)}, \qquad \mathbf{E} = \sum_{l=0}^{L}\mathbf{E}^{(l)}

    where :math:`\bar{\mathbf{A}}` is the graph's symmetric normalised adjacency and :math:`\mathcal{M}` the
    :class:`~engine_graphcl.adaptive_mask.AdaptiveMask` (row-normalised, as in the official code).

    The encoding's ``views`` hold ``gnn_l`` (:math:`\mathbf{Z}`), ``int_l`` (:math:`\mathbf{R}`), ``gaa_l``
    (:math:`\mathbf{G}`) and ``iaa_l`` (:math:`\mathbf{H}`) for every layer; :attr:`contrast_pairs` names the pairs
    the official loss contrasts, for users and for items: ``(gnn, int)``, ``(gnn, gaa)``, ``(gnn, iaa)``.
    ``extra_losses["intent_reg"]`` is :math:`\lambda(\lVert\mathbf{W}_u\rVert_F^2 + \lVert\mathbf{W}_i\rVert_F^2)`
    (the official ``cen_reg`` term). As in the official code, embeddings and intent prototypes are
    Xavier-normal (users and items initialised as separate tables). Deviations: duplicate edges are summed (the
    official code merges them); ``mask_normalization="symmetric"`` is an option, not in the paper.

    Args:
        num_users (int): number of users ``U``.
        num_items (int): number of items ``I``.
        embedding_dim (int, optional): embedding size ``D``. (default: :obj:`64`)
        num_layers (int, optional): number of layers ``L``. (default: :obj:`2`)
        num_intents (int, optional): number of intent prototypes ``K`` per side. (default: :obj:`128`)
        intent_reg (float, optional): weight :math:`\lambda` of the prototypes' L2 regulariser.
            (default: :obj:`5e-3`)
        mask_normalization (str, optional): ``"row"`` (official) or ``"symmetric"`` for the adaptive masks.
            (default: :obj:`"row"`)
    """

    name = "dccf"

    class Config(ComponentConfig):
        embedding_dim: int = Field(64, ge=1, description="Embedding size D.")
        num_layers: int = Field(2, ge=1, description="Number of layers L.")
        num_intents: int = Field(128, ge=1, description="Number of intent prototypes K (users and items each).")
        intent_reg: float = Field(5e-3, ge=0.0, description="Weight of the intent prototypes' squared L2 norm.")
        mask_normalization: Literal["row", "symmetric"] = Field(
            "row", description="Normalisation of the adaptive masks: D^-1 (official code) or D^-1/2 . D^-1/2."
        )

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 64,
        num_layers: int = 2,
        num_intents: int = 128,
        intent_reg: float = 5e-3,
        mask_normalization: Literal["row", "symmetric"] = "row",
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_users, self.num_items = num_users, num_items
        self.embedding_dim, self.num_layers = embedding_dim, num_layers
        self.num_intents, self.intent_reg = num_intents, intent_reg
        self.embedding = nn.Embedding(num_users + num_items, embedding_dim)
        self.user_intent = nn.Parameter(torch.empty(embedding_dim, num_intents))
        self.item_intent = nn.Parameter(torch.empty(embedding_dim, num_intents))
        self.mask = AdaptiveMask(normalization=mask_normalization)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            users, items = torch.split(self.embedding.weight, [self.num_users, self.num_items])
            nn.init.xavier_normal_(users)
            nn.init.xavier_normal_(items)
        nn.init.xavier_normal_(self.user_intent)
        nn.init.xavier_normal_(self.item_intent)

    @property
    def contrast_pairs(self) -> list[tuple[str, str]]:
        """``(gnn_l, int_l)``, ``(gnn_l, gaa_l)``, ``(gnn_l, iaa_l)`` for every layer ``l``."""
        return [(f"gnn_{k}", f"{v}_{k}") for k in range(self.num_layers) for v in ("int", "gaa", "iaa")]

    def intents(self, h: Tensor) -> Tensor:
        """Intent-aware embeddings :math:`\\mathrm{softmax}(\\mathbf{E}\\mathbf{W})\\mathbf{W}^{\\top}`, ``[N, D]``."""
        users, items = torch.split(h, [self.num_users, self.num_items])
        u = torch.softmax(users @ self.user_intent, dim=1) @ self.user_intent.T
        i = torch.softmax(items @ self.item_intent, dim=1) @ self.item_intent.T
        return torch.cat([u, i])

    def forward(self, graph: Graph) -> GraphEncoding:
        """Encode all nodes of ``graph``; see the class docstring for the views and regulariser."""
        h = self.embedding.weight
        adj = graph.adj.to(h.dtype)
        layers, views = [h], {}
        for k in range(self.num_layers):
            z = spmm(adj, h, symmetric=True)
            r = self.intents(h)
            g = spmm(self.mask(graph, z), h)
            v = spmm(self.mask(graph, r), h)
            views.update({f"gnn_{k}": z, f"int_{k}": r, f"gaa_{k}": g, f"iaa_{k}": v})
            h = z + r + g + v + h
            layers.append(h)
        users, items = torch.split(torch.stack(layers).sum(0), [self.num_users, self.num_items])
        reg = self.intent_reg * (self.user_intent.pow(2).sum() + self.item_intent.pow(2).sum())
        return GraphEncoding(users, items, layers, views, {"intent_reg": reg})

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.num_users}, {self.num_items}, dim={self.embedding_dim}, "
            f"num_layers={self.num_layers}, num_intents={self.num_intents})"
        )
