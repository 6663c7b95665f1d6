"""LightGCN: linear propagation over the normalised user-item graph, and the encoding every graph encoder returns."""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Literal, Mapping, NamedTuple

import torch
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig

from .graph import Graph, spmm


class GraphEncoding(NamedTuple):
    """What a graph encoder returns.

    Args:
        users (Tensor): final user embeddings, ``[U, D]``.
        items (Tensor): final item embeddings, ``[I, D]``.
        layers (list[Tensor]): node embeddings per layer, ``[N, D]`` each; ``layers[0]`` is the ego embedding, then
            one entry per propagation layer (``num_layers + 1`` in all).
        views (dict[str, Tensor]): extra named views of all nodes, ``[N, D]`` each. (default: empty, read-only)
        extra_losses (dict[str, Tensor]): scalar regularisers the task adds to the loss. (default: empty,
            read-only)
    """

    users: Tensor
    items: Tensor
    layers: list[Tensor]
    views: Mapping[str, Tensor] = MappingProxyType({})
    extra_losses: Mapping[str, Tensor] = MappingProxyType({})


class LightGCN(nn.Module, Component):
    r"""LightGCN from `"LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation"
    <https://arxiv.org/abs/2002.02126>`_ (He et al., SIGIR 2020).

    .. math::
        \mathbf{E}^{(l+1)} = \mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}\mathbf{E}^{(l)}, \qquad
        \mathbf{E} = \frac{1}{L+1}\sum_{l=0}^{L}\mathbf{E}^{(l)}

    With ``perturb`` (SimGCL/XSimGCL), every propagated layer becomes :math:`\mathrm{perturb}(\mathbf{E}^{(l+1)},
    l)` before the next propagation. With ``skip_ego=True`` the mean runs over layers :math:`1..L` only, as SELFRec's
    SimGCL/XSimGCL encoders do.

    Args:
        num_users (int): number of users ``U``.
        num_items (int): number of items ``I``.
        embedding_dim (int, optional): embedding size ``D``. (default: :obj:`64`)
        num_layers (int, optional): number of propagation layers ``L``. (default: :obj:`3`)
        layer_combination (str, optional): ``"mean"`` of layers, or the ``"last"`` layer only. (default:
            :obj:`"mean"`)
    """

    name = "lightgcn"

    class Config(ComponentConfig):
        embedding_dim: int = Field(64, ge=1, description="Embedding size D.")
        num_layers: int = Field(3, ge=0, description="Number of propagation layers L.")
        layer_combination: Literal["mean", "last"] = Field(
            "mean", description="Combine layers by their mean (LightGCN) or keep the last one."
        )

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 64,
        num_layers: int = 3,
        layer_combination: Literal["mean", "last"] = "mean",
    ):
        super().__init__()
        if layer_combination not in ("mean", "last"):
            raise ValueError(f"layer_combination must be 'mean' or 'last', got {layer_combination!r}")
        self.num_users, self.num_items = num_users, num_items
        self.embedding_dim, self.num_layers = embedding_dim, num_layers
        self.layer_combination = layer_combination
        self.embedding = nn.Embedding(num_users + num_items, embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform embeddings, as SELFRec initialises them."""
        nn.init.xavier_uniform_(self.embedding.weight)

    def _adjacencies(self, graph: Graph | list[Graph]) -> list[Tensor]:
        if isinstance(graph, (list, tuple)):
            if len(graph) != self.num_layers:
                raise ValueError(f"got {len(graph)} per-layer graphs for {self.num_layers} layers")
            return [g.adj for g in graph]
        return [graph.adj] * self.num_layers

    def forward(
        self,
        graph: Graph | list[Graph],
        perturb: Callable[[Tensor, int], Tensor] | None = None,
        skip_ego: bool = False,
        item_input: Tensor | None = None,
    ) -> GraphEncoding:
        """Propagate the embeddings over ``graph``.

        Args:
            graph (Graph or list[Graph]): the graph, or one graph per layer (SGL's random walk).
            perturb (callable, optional): ``perturb(h, layer) -> h`` applied after each propagation.
            skip_ego (bool, optional): leave layer 0 out of the mean. (default: :obj:`False`)
            item_input (Tensor, optional): added to the items' ego embeddings, ``[I, D]`` (item content).
        """
        h = self.embedding.weight
        if item_input is not None:
            h = torch.cat([h[: self.num_users], h[self.num_users:] + item_input])
        layers = [h]
        for layer, adj in enumerate(self._adjacencies(graph)):
            h = spmm(adj.to(h.dtype), h, symmetric=True)
            if perturb is not None:
                h = perturb(h, layer)
            layers.append(h)
        if self.layer_combination == "last":
            out = layers[-1]
        else:
            used = layers[1:] if skip_ego and self.num_layers > 0 else layers
            out = torch.stack(used).mean(0)
        users, items = torch.split(out, [self.num_users, self.num_items])
        return GraphEncoding(users, items, layers, {}, {})

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.num_users}, {self.num_items}, dim={self.embedding_dim}, "
            f"num_layers={self.num_layers}, combination={self.layer_combination!r})"
        )
