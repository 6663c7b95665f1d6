"""DCCF's learned interaction mask: edges re-weighted by the agreement of their endpoints' embeddings."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from engine.components import Component, ComponentConfig

from .graph import Graph, LearnedAdjacency


class AdaptiveMask(Component):
    r"""Adaptive augmentation mask from `"Disentangled Contrastive Collaborative Filtering"
    <https://arxiv.org/abs/2305.02759>`_ (Ren et al., SIGIR 2023).

    .. math::
        \alpha_{ui} = \frac{1}{2}\left(\frac{\mathbf{z}_u^{\top}\mathbf{z}_i}
        {\lVert\mathbf{z}_u\rVert\,\lVert\mathbf{z}_i\rVert} + 1\right) \in [0, 1], \qquad
        \mathbf{G} = \mathbf{D}_\alpha^{-1}\mathbf{A}_\alpha

    for every edge :math:`(u, i)` (both directions get the same weight). As in DCCF's official code the masked
    adjacency is row-normalised by its weighted degrees (``normalization="row"``); ``"symmetric"`` gives
    :math:`\mathbf{D}_\alpha^{-1/2}\mathbf{A}_\alpha\mathbf{D}_\alpha^{-1/2}` instead. The result is a
    :class:`~engine_graphcl.graph.LearnedAdjacency`: ``mask @ x`` or ``torch.sparse.mm(mask, x)`` is differentiable
    with respect to ``z`` with a sparse backward.

    Args:
        normalization (str, optional): ``"row"`` or ``"symmetric"``. (default: :obj:`"row"`)
        eps (float, optional): floor on the norms in the cosine. (default: :obj:`1e-12`, as ``F.normalize``)
    """

    name = "adaptive_mask"
    view_kind: ClassVar[str] = "learned"

    class Config(ComponentConfig):
        normalization: Literal["row", "symmetric"] = Field(
            "row", description="Normalise the weighted adjacency by D^-1 (DCCF's code) or D^-1/2 . D^-1/2."
        )
        eps: float = Field(1e-12, gt=0.0, le=1e-3, description="Floor on the embedding norms in the cosine.")

    def __init__(self, normalization: Literal["row", "symmetric"] = "row", eps: float = 1e-12):
        if normalization not in ("row", "symmetric"):
            raise ValueError(f"normalization must be 'row' or 'symmetric', got {normalization!r}")
        self.normalization, self.eps = normalization, eps

    def edge_weight(self, graph: Graph, z: Tensor) -> Tensor:
        """Per-edge weights ``(cos(z[u], z[U + i]) + 1) / 2`` in ``[0, 1]``, ``[E]``, from ``z`` ``[N, D]``."""
        z = F.normalize(z, dim=-1, eps=self.eps)
        return (graph.edge_dot(z) + 1.0) / 2.0

    def __call__(self, graph: Graph, z: Tensor) -> LearnedAdjacency:
        """The normalised adjacency ``[N, N]`` with edges weighted by :meth:`edge_weight`."""
        return graph.reweighted(self.edge_weight(graph, z), self.normalization)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(normalization={self.normalization!r})"
