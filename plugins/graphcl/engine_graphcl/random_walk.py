"""SGL's random walk (SGL-RW): an independent edge dropout for every propagation layer."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from engine.components import Component, ComponentConfig

from .edge_dropout import keep_mask
from .graph import Graph


class RandomWalk(Component):
    r"""Random-walk view from `"Self-supervised Graph Learning for Recommendation"
    <https://arxiv.org/abs/2010.10783>`_ (Wu et al., SIGIR 2021), SGL-RW.

    .. math::
        \mathcal{G}'^{(l)} = (\mathcal{V}, \mathbf{M}^{(l)} \odot \mathcal{E}), \qquad
        M^{(l)}_e \sim \mathrm{Bernoulli}(1 - p), \quad l = 1, \dots, L

    Returns one freshly normalised graph per layer, to pass as a list to
    :class:`~engine_graphcl.lightgcn.LightGCN`.

    Args:
        p (float, optional): probability of dropping each edge in each layer, in :math:`[0, 1)`.
            (default: :obj:`0.1`)
        num_layers (int, optional): number of graphs, one per propagation layer; must equal the encoder's.
            (default: :obj:`3`)
    """

    name = "random_walk"
    view_kind: ClassVar[str] = "graph"

    class Config(ComponentConfig):
        p: float = Field(0.1, ge=0.0, lt=1.0, description="Probability of dropping each edge, per layer.")
        num_layers: int = Field(3, ge=1, description="Number of per-layer graphs; must match the encoder's layers.")

    def __init__(self, p: float = 0.1, num_layers: int = 3):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p must lie in [0, 1), got {p}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.p, self.num_layers = p, num_layers

    def __call__(self, graph: Graph, generator: torch.Generator | None = None) -> list[Graph]:
        """``num_layers`` freshly normalised graphs, each with its own edge dropout."""
        device = graph.users.device
        return [graph.subgraph(keep_mask(graph.num_edges, self.p, generator, device)) for _ in range(self.num_layers)]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p={self.p}, num_layers={self.num_layers})"
