"""``model.content.item_graph`` in the ``graph_cf`` task: the row-normalised adjacency of the content kNN by hand, and
the items' serving vectors (the tower plus the graph term over warm neighbours) against a dense reference."""

from __future__ import annotations

import numpy as np
import torch

from engine.content import content_knn
from engine_graphcl.content import item_graph_adjacency
from tests.graphcl.test_content import NUM_ITEMS, make_task, naive_lightgcn, plugins  # noqa: F401  (fixture)


# -- the item graph --------------------------------------------------------------------------------------------------


def test_item_graph_adjacency_by_hand():
    nbr = torch.tensor([[1, 2], [0, 2], [0, 1], [1, 1]])
    sim = torch.tensor([[0.6, 0.2], [-0.5, 0.5], [0.0, 0.0], [0.3, 0.1]])
    adj = item_graph_adjacency(nbr, sim)
    assert adj.shape == (4, 4) and adj.is_sparse
    want = torch.tensor([[0.0, 0.75, 0.25, 0.0],
                         [0.0, 0.0, 1.0, 0.0],  # a negative similarity is dropped
                         [0.5, 0.5, 0.0, 0.0],  # all zero: uniform over the neighbours
                         [0.0, 1.0, 0.0, 0.0]])  # a repeated neighbour adds up
    assert torch.allclose(adj.to_dense(), want)
    assert torch.allclose(torch.sparse.sum(adj, 1).to_dense(), torch.ones(4))


def test_item_graph_view(tmp_path, plugins):
    task, net, _ = make_task(tmp_path, {"fusion": "mean", "item_graph": {"k": 3, "weight": 0.5}})
    warm = np.flatnonzero(task.warm.numpy())
    adj = task.content.adjacency.to_dense()
    assert torch.allclose(adj.sum(1), torch.ones(NUM_ITEMS, dtype=adj.dtype))  # rows sum to 1
    assert set(torch.nonzero(adj)[:, 1].tolist()) <= set(warm.tolist())  # neighbours are warm items
    assert (adj > 0).sum(1).le(3).all() and adj.diagonal().eq(0).all()
    want_adj = item_graph_adjacency(*content_knn(net.content.features, 3, warm)).to_dense()
    assert torch.allclose(adj, want_adj)

    users, items = task.embeddings(net)  # float32, the model's dtype
    content = net.content().detach().double()
    tower_users, tower_items = naive_lightgcn(net, task, content)
    g = 0.5 * adj.double() @ tower_items
    cold = task.cold.all
    assert torch.allclose(users.double(), tower_users, atol=1e-6)
    assert torch.allclose(items[warm].double(), tower_items[warm] + g[warm], atol=1e-6)
    assert torch.allclose(items[cold].double(), content[cold] + g[cold], atol=1e-6)  # content + warm neighbours


def test_item_graph_view_follows_the_model_dtype(tmp_path, plugins):
    task, net, _ = make_task(tmp_path, {"fusion": "mean", "item_graph": {"k": 3, "weight": 0.5}})
    net.double()
    users, items = task.embeddings(net)
    assert items.dtype == torch.float64
