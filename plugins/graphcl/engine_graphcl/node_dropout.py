"""SGL's node dropout (SGL-ND): a view of the graph without a random set of users and items."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from engine.components import Component, ComponentConfig

from .edge_dropout import keep_mask
from .graph import Graph


class NodeDropout(Component):
    r"""Node dropout from `"Self-supervised Graph Learning for Recommendation"
    <https://arxiv.org/abs/2010.10783>`_ (Wu et al., SIGIR 2021), SGL-ND.

    .. math::
        \mathcal{G}' = (\mathbf{M} \odot \mathcal{V}, \mathcal{E}'), \qquad M_v \sim \mathrm{Bernoulli}(1 - p)

    Every user and every item is dropped with probability :math:`p`; edges touching a dropped node are removed
    and the rest renormalised. Dropped nodes keep their ids and get zero rows. (SGL's code drops exactly
    :math:`\lfloor pU \rfloor` users and :math:`\lfloor pI \rfloor` items; here each node is drawn independently.)

    Args:
        p (float, optional): probability of dropping each node, in :math:`[0, 1)`. (default: :obj:`0.1`)
    """

    name = "node_dropout"
    view_kind: ClassVar[str] = "graph"

    class Config(ComponentConfig):
        p: float = Field(0.1, ge=0.0, lt=1.0, description="Probability of dropping each user and each item node.")

    def __init__(self, p: float = 0.1):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p must lie in [0, 1), got {p}")
        self.p = p

    def __call__(self, graph: Graph, generator: torch.Generator | None = None) -> Graph:
        """A freshly normalised graph without the edges of the dropped users and items."""
        device = graph.users.device
        keep_users = keep_mask(graph.num_users, self.p, generator, device)
        keep_items = keep_mask(graph.num_items, self.p, generator, device)
        return graph.subgraph(keep_users[graph.users] & keep_items[graph.items])

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p={self.p})"
