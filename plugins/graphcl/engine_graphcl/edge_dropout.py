"""SGL's edge dropout (SGL-ED): a view of the graph with each edge dropped independently."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from engine.components import Component, ComponentConfig

from .graph import Graph


def keep_mask(size: int, p: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """A boolean ``[size]`` mask, each entry kept (true) with probability ``1 - p``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return (torch.rand(size, generator=generator, device=gen_device) >= p).to(device)


class EdgeDropout(Component):
    r"""Edge dropout from `"Self-supervised Graph Learning for Recommendation"
    <https://arxiv.org/abs/2010.10783>`_ (Wu et al., SIGIR 2021), SGL-ED.

    .. math::
        \mathcal{G}' = (\mathcal{V}, \mathbf{M} \odot \mathcal{E}), \qquad M_e \sim \mathrm{Bernoulli}(1 - p)

    The kept edges are renormalised as :math:`\mathbf{D}'^{-1/2}\mathbf{A}'\mathbf{D}'^{-1/2}`; all nodes stay.

    Args:
        p (float, optional): probability of dropping each edge, in :math:`[0, 1)`. (default: :obj:`0.1`)
    """

    name = "edge_dropout"
    view_kind: ClassVar[str] = "graph"

    class Config(ComponentConfig):
        p: float = Field(0.1, ge=0.0, lt=1.0, description="Probability of dropping each edge.")

    def __init__(self, p: float = 0.1):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p must lie in [0, 1), got {p}")
        self.p = p

    def __call__(self, graph: Graph, generator: torch.Generator | None = None) -> Graph:
        """A freshly normalised graph with each edge of ``graph`` dropped with probability ``p``."""
        return graph.subgraph(keep_mask(graph.num_edges, self.p, generator, graph.users.device))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p={self.p})"
