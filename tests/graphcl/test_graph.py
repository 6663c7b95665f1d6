import itertools

import pytest
import torch

from engine_graphcl.graph import Graph, LearnedAdjacency, build_graph, normalized_adjacency, spmm


def random_edges(num_users, num_items, num_edges, seed=0):
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(0, num_users, (num_edges,), generator=gen)
    items = torch.randint(0, num_items, (num_edges,), generator=gen)
    return users, items


def dense_reference(users, items, num_users, num_items, weight=None, normalization="symmetric"):
    """D^-1/2 A D^-1/2 (or D^-1 A) written with loops, in float64; isolated nodes get zero rows."""
    n = num_users + num_items
    a = torch.zeros(n, n, dtype=torch.float64)
    for e, (u, i) in enumerate(zip(users.tolist(), items.tolist())):
        w = 1.0 if weight is None else float(weight[e])
        a[u, num_users + i] += w
        a[num_users + i, u] += w
    out = torch.zeros_like(a)
    deg = a.sum(1)
    for r in range(n):
        for c in range(n):
            if a[r, c] != 0:
                scale = 1 / deg[r] if normalization == "row" else 1 / (deg[r] * deg[c]).sqrt()
                out[r, c] = a[r, c] * scale
    return out


@pytest.mark.parametrize(
    "num_users,num_items,num_edges,weighted", list(itertools.product([1, 4, 9], [1, 5, 12], [1, 6, 30], [False, True]))
)
def test_adjacency_matches_dense_reference(num_users, num_items, num_edges, weighted):
    users, items = random_edges(num_users, num_items, num_edges, seed=num_users * 100 + num_items + num_edges)
    weight = torch.rand(num_edges, dtype=torch.float64) + 0.1 if weighted else None
    graph = build_graph(users, items, num_users, num_items, edge_weight=weight, dtype=torch.float64)
    expected = dense_reference(users, items, num_users, num_items, weight)
    assert graph.adj.layout == torch.sparse_csr
    assert graph.adj.shape == (num_users + num_items,) * 2
    assert torch.allclose(graph.adj.to_dense(), expected)
    direct = normalized_adjacency(users, items, num_users, num_items, weight, dtype=torch.float64)
    assert torch.equal(direct.to_dense(), graph.adj.to_dense())


def test_isolated_nodes_have_zero_rows_and_stay_finite():
    users, items = torch.tensor([0, 0, 2]), torch.tensor([1, 3, 1])
    graph = build_graph(users, items, num_users=4, num_items=5, dtype=torch.float64)
    dense = graph.adj.to_dense()
    assert torch.isfinite(dense).all()
    isolated = [1, 3, 4 + 0, 4 + 2, 4 + 4]
    assert dense[isolated].abs().sum() == 0 and dense[:, isolated].abs().sum() == 0
    assert torch.allclose(dense, dense.T)
    empty = build_graph(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), 3, 2)
    assert empty.adj.to_dense().abs().sum() == 0 and empty.num_edges == 0


def test_duplicate_edges_are_summed():
    users, items = torch.tensor([0, 0, 1]), torch.tensor([0, 0, 0])
    graph = build_graph(users, items, 2, 1, dtype=torch.float64)
    assert graph.adj._nnz() == 4
    assert torch.allclose(graph.adj.to_dense(), dense_reference(users, items, 2, 1))


def test_properties_to_and_repr():
    graph = build_graph(torch.tensor([0, 1]), torch.tensor([2, 0]), 2, 3)
    assert isinstance(graph, Graph)
    assert graph.num_nodes == 5 and graph.num_edges == 2
    assert graph.adj.dtype == torch.get_default_dtype()
    moved = graph.to("cpu")
    assert torch.equal(moved.adj.to_dense(), graph.adj.to_dense()) and moved.num_users == 2
    assert repr(graph) == "Graph(num_users=2, num_items=3, num_edges=2)"


@pytest.mark.parametrize("normalization,with_slot", list(itertools.product(["symmetric", "row"], [True, False])))
def test_reweighted_matches_reference_and_is_differentiable(normalization, with_slot):
    users, items = random_edges(5, 7, 20, seed=3)
    graph = build_graph(users, items, 5, 7, dtype=torch.float64)
    if not with_slot:
        graph.slot = None
    weight = (torch.rand(20, dtype=torch.float64) + 0.1).requires_grad_()
    adj = graph.reweighted(weight, normalization)
    assert torch.allclose(adj.to_dense(), dense_reference(users, items, 5, 7, weight.detach(), normalization))
    x = torch.randn(12, 3, dtype=torch.float64)
    torch.sparse.mm(adj, x).pow(2).sum().backward()
    assert weight.grad is not None and torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0


def test_subgraph_keeps_nodes_and_renormalises():
    users, items = random_edges(6, 4, 15, seed=1)
    weight = torch.rand(15, dtype=torch.float64)
    graph = build_graph(users, items, 6, 4, edge_weight=weight)
    mask = torch.arange(15) % 3 != 0
    sub = graph.subgraph(mask)
    assert sub.num_nodes == graph.num_nodes and sub.num_edges == int(mask.sum())
    assert torch.equal(sub.edge_weight, weight[mask])
    expected = dense_reference(users[mask], items[mask], 6, 4, weight[mask])
    assert torch.allclose(sub.adj.to_dense(), expected)


@pytest.mark.parametrize(
    "users,items,message",
    [
        ([0, 5], [0, 1], "user ids"),
        ([0, 1], [0, 3], "item ids"),
        ([0, -1], [0, 1], "user ids"),
        ([[0]], [[0]], "1-D"),
        ([0, 1], [0], "1-D"),
    ],
)
def test_build_graph_rejects_bad_ids(users, items, message):
    with pytest.raises(ValueError, match=message):
        build_graph(torch.tensor(users), torch.tensor(items), 2, 3)


@pytest.mark.parametrize("normalization,with_slot", list(itertools.product(["symmetric", "row"], [True, False])))
def test_learned_adjacency_matches_torch_autograd(normalization, with_slot):
    users, items = random_edges(3, 4, 10, seed=7)  # with duplicate edges
    graph = build_graph(users, items, 3, 4, dtype=torch.float64)
    if not with_slot:
        graph.slot = None
    weight = (torch.rand(10, dtype=torch.float64) + 0.1).requires_grad_()
    x = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    adj = graph.reweighted(weight, normalization)
    assert isinstance(adj, LearnedAdjacency) and adj.shape == (7, 7)
    reference = torch.sparse.mm(adj.to_sparse_csr(), x)  # torch's own (dense-gradient) autograd
    want = torch.autograd.grad(reference.sin().sum(), (weight, x), retain_graph=True)
    outputs = [adj @ x, spmm(adj, x), torch.sparse.mm(adj, x), torch.mm(adj, x), torch.matmul(adj, x)]
    for out in outputs:
        assert torch.allclose(out, reference) and torch.allclose(out, adj.to_dense() @ x)
        got = torch.autograd.grad(out.sin().sum(), (weight, x), retain_graph=True)
        assert all(torch.allclose(g, w) for g, w in zip(got, want))
    torch.autograd.gradcheck(lambda w, x_: graph.reweighted(w, normalization) @ x_, (weight, x), fast_mode=True)


def test_spmm_dense_coo_csr():
    graph = build_graph(*random_edges(4, 5, 12, seed=2), 4, 5, dtype=torch.float64)
    dense, x = graph.adj.to_dense(), torch.randn(9, 3, dtype=torch.float64)
    for adj in (dense, dense.to_sparse_coo(), graph.adj):
        assert torch.allclose(spmm(adj, x), dense @ x)


@pytest.mark.parametrize("dim,with_slot", list(itertools.product([1, 4], [True, False])))
def test_edge_dot_matches_gather_and_gradcheck(dim, with_slot):
    users, items = random_edges(4, 5, 14, seed=dim)  # with duplicate edges
    graph = build_graph(users, items, 4, 5, dtype=torch.float64)
    if not with_slot:
        graph.slot = None
    x = torch.randn(9, dim, dtype=torch.float64, requires_grad=True)
    naive = torch.stack([x[u] @ x[4 + i] for u, i in zip(users.tolist(), items.tolist())])
    assert torch.allclose(graph.edge_dot(x), naive)
    torch.autograd.gradcheck(graph.edge_dot, (x,), fast_mode=True)


def test_symmetric_spmm_gradient_matches_torch():
    graph = build_graph(*random_edges(5, 6, 20, seed=5), 5, 6, dtype=torch.float64)
    x = torch.randn(11, 3, dtype=torch.float64, requires_grad=True)
    out = spmm(graph.adj, x, symmetric=True)
    assert torch.allclose(out, torch.sparse.mm(graph.adj, x))
    got = torch.autograd.grad(out.sin().sum(), x)[0]
    want = torch.autograd.grad(torch.sparse.mm(graph.adj, x).sin().sum(), x)[0]
    assert torch.allclose(got, want)
    torch.autograd.gradcheck(lambda x_: spmm(graph.adj, x_, symmetric=True), (x,), fast_mode=True)
