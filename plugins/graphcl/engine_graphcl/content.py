"""Item content in graph CF (``model.content``; the terms are described in :mod:`engine.content`).

* ``input``: the content embedding is added to the items' ego embeddings before propagation (``item_input`` of
  :class:`~engine_graphcl.lightgcn.LightGCN`).
* The content view of item ``i`` is its content embedding ``c_i`` (plus, with ``item_graph``, the mean of its warm
  content neighbours' collaborative embeddings). BPR on the content view (``rec_weight``) trains it to rank items
  for users, which is what ranks a cold item: at evaluation and export, an item with no training interaction is
  represented by its content view, a warm item by the tower's output (plus its item-graph view).
* ``align``: the pair objective between the tower's item embeddings and the (shared part of the) content
  embeddings, on the batch's unique positive items; ``split`` adds the orthogonality penalty.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from engine.content import ContentConfig, ContentParts, alignment_terms, attach_content, content_knn

from .lightgcn import GraphEncoding

__all__ = ["GraphContent", "item_graph_adjacency"]


def item_graph_adjacency(nbr: Tensor, sim: Tensor) -> Tensor:
    """Row-normalised sparse ``[I, I]`` adjacency from neighbours and similarities (negative ones dropped); a row
    whose similarities are all zero averages its neighbours uniformly."""
    w = sim.clamp(min=0)
    empty = w.sum(1, keepdim=True) <= 0
    w = torch.where(empty, torch.ones_like(w), w)
    w = w / w.sum(1, keepdim=True)
    n, k = nbr.shape
    rows = torch.arange(n).repeat_interleave(k)
    return torch.sparse_coo_tensor(torch.stack([rows, nbr.reshape(-1)]), w.reshape(-1), (n, n),
                                   check_invariants=True).coalesce()


class GraphContent:
    """What the graph task needs of the content: its losses, the item-graph view, the serving item vectors."""

    def __init__(self, cfg: ContentConfig, warm: Tensor, adjacency: Tensor | None) -> None:
        self.cfg, self.warm, self.adjacency = cfg, warm, adjacency

    @classmethod
    def build(cls, registry, cfg: ContentConfig, features, warm: Tensor, dim: int, model) -> "GraphContent":
        """Add ``model.content`` (and ``model.content_align``) to ``model``; build the item graph."""
        attach_content(registry, cfg, features, dim, model)
        adjacency = None
        if cfg.item_graph is not None:
            nbr, sim = content_knn(model.content.features, cfg.item_graph.k, np.flatnonzero(warm.numpy()))
            adjacency = item_graph_adjacency(nbr, sim)
        return cls(cfg, warm, adjacency)

    def with_item_graph(self, enc: GraphEncoding) -> GraphEncoding:
        """``enc`` with the item-graph view (``views["item_graph"]``, users' rows zero) added to the items."""
        if self.adjacency is None:
            return enc
        adj = self.adjacency.to(device=enc.items.device, dtype=enc.items.dtype)
        g = self.cfg.item_graph.weight * torch.sparse.mm(adj, enc.items)
        num_users = enc.users.shape[0]
        view = torch.cat([enc.users.new_zeros(num_users, g.shape[1]), g])
        return enc._replace(items=enc.items + g, views={**enc.views, "item_graph": view})

    def content_view(self, enc: GraphEncoding, content: Tensor) -> Tensor:
        """The content view of every item, ``[I, D]``."""
        if "item_graph" in enc.views:
            graph = enc.views["item_graph"][enc.users.shape[0]:]
            return content + (graph.detach() if self.cfg.detach else graph)
        return content

    def losses(self, model, enc: GraphEncoding, parts: ContentParts, u: Tensor, i: Tensor,
               j: Tensor) -> dict[str, Tensor]:
        cfg = self.cfg
        out: dict[str, Tensor] = {}
        if cfg.rec_weight > 0:
            view = self.content_view(enc, parts.total)
            users = enc.users[u].detach() if cfg.detach else enc.users[u]
            out["content/rec"] = cfg.rec_weight * model.loss(users, view[i], view[j]).loss
        out.update(alignment_terms(cfg, model, enc.items, parts, i))
        return out

    def serving_items(self, enc: GraphEncoding, content: Tensor) -> Tensor:
        """Item vectors for ranking: the tower's for warm items, the content view for cold ones."""
        view = self.content_view(enc, content)
        warm = self.warm.to(enc.items.device).unsqueeze(1)
        return torch.where(warm, enc.items, view)
