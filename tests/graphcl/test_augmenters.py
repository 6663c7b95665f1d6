import itertools

import pytest
import torch
from pydantic import ValidationError

from engine_graphcl.adaptive_mask import AdaptiveMask
from engine_graphcl.edge_dropout import EdgeDropout
from engine_graphcl.embedding_noise import EmbeddingNoise
from engine_graphcl.graph import Graph, build_graph
from engine_graphcl.lightgcn import LightGCN
from engine_graphcl.node_dropout import NodeDropout
from engine_graphcl.random_walk import RandomWalk


def random_graph(num_users, num_items, num_edges, seed=0, weighted=False):
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randperm(num_users * num_items, generator=gen)[:num_edges]  # unique edges
    weight = torch.rand(num_edges, generator=gen, dtype=torch.float64) + 0.5 if weighted else None
    return build_graph(keys // num_items, keys % num_items, num_users, num_items, weight, dtype=torch.float64)


def edge_set(graph):
    return set(zip(graph.users.tolist(), graph.items.tolist()))


def dense_adjacency(users, items, num_users, num_items, weight=None, normalization="symmetric"):
    n = num_users + num_items
    a = torch.zeros(n, n, dtype=torch.float64)
    for e, (u, i) in enumerate(zip(users.tolist(), items.tolist())):
        w = 1.0 if weight is None else float(weight[e])
        a[u, num_users + i] += w
        a[num_users + i, u] += w
    deg, out = a.sum(1), torch.zeros_like(a)
    for r, c in itertools.product(range(n), range(n)):
        if a[r, c]:
            out[r, c] = a[r, c] / (deg[r] if normalization == "row" else (deg[r] * deg[c]).sqrt())
    return out


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_edge_dropout_p0_is_identity():
    graph = random_graph(20, 30, 200, weighted=True)
    view = EdgeDropout(p=0.0)(graph, gen(0))
    assert isinstance(view, Graph) and view is not graph
    assert torch.equal(view.users, graph.users) and torch.equal(view.items, graph.items)
    assert torch.allclose(view.adj.to_dense(), graph.adj.to_dense())


@pytest.mark.parametrize("p,weighted", list(itertools.product([0.1, 0.5], [False, True])))
def test_edge_dropout_keeps_about_1_minus_p_and_renormalises(p, weighted):
    graph = random_graph(100, 120, 5000, weighted=weighted)
    aug = EdgeDropout(p=p)
    view = aug(graph, gen(1))
    kept, expected = view.num_edges, (1 - p) * graph.num_edges
    assert abs(kept - expected) < 4 * (graph.num_edges * p * (1 - p)) ** 0.5
    assert edge_set(view) <= edge_set(graph) and view.num_nodes == graph.num_nodes
    assert view.adj.dtype == torch.float64
    same = aug(graph, gen(1))
    assert torch.equal(same.users, view.users) and torch.equal(same.items, view.items)
    assert edge_set(aug(graph, gen(2))) != edge_set(view)
    small = random_graph(6, 7, 25, seed=2, weighted=weighted)
    small_view = aug(small, gen(3))
    weight = small_view.edge_weight
    expected = dense_adjacency(small_view.users, small_view.items, 6, 7, weight)
    assert torch.allclose(small_view.adj.to_dense(), expected)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_node_dropout_removes_all_edges_of_dropped_nodes(p):
    graph = random_graph(100, 150, 3000)
    view = NodeDropout(p=p)(graph, gen(5))
    kept, before = edge_set(view), edge_set(graph)
    assert kept <= before
    deg_u = torch.bincount(view.users, minlength=100)
    deg_i = torch.bincount(view.items, minlength=150)
    # an edge whose two ends keep edges must stay; a removed edge must have an end with no edge left
    for u, i in before:
        alive = deg_u[u] > 0 and deg_i[i] > 0
        assert ((u, i) in kept) == bool(alive)
    expected = (1 - p) ** 2 * graph.num_edges
    assert abs(len(kept) - expected) < 0.1 * graph.num_edges
    again = NodeDropout(p=p)(graph, gen(5))
    assert edge_set(again) == kept
    assert NodeDropout(p=0.0)(graph, gen(5)).num_edges == graph.num_edges


@pytest.mark.parametrize("num_layers,p", list(itertools.product([1, 2, 3], [0.1, 0.3])))
def test_random_walk_returns_one_independent_graph_per_layer(num_layers, p):
    graph = random_graph(30, 40, 600)
    views = RandomWalk(p=p, num_layers=num_layers)(graph, gen(7))
    assert isinstance(views, list) and len(views) == num_layers
    sets = [edge_set(v) for v in views]
    assert all(s <= edge_set(graph) for s in sets)
    assert all(a != b for a, b in itertools.combinations(sets, 2))
    assert all(abs(len(s) - (1 - p) * 600) < 4 * (600 * p * (1 - p)) ** 0.5 for s in sets)
    again = RandomWalk(p=p, num_layers=num_layers)(graph, gen(7))
    assert [edge_set(v) for v in again] == sets
    out = LightGCN(30, 40, 4, num_layers).double()(views)
    assert len(out.layers) == num_layers + 1


@pytest.mark.parametrize("eps,shape", list(itertools.product([0.1, 0.2, 1.0], [(5, 1), (7, 16), (50, 64)])))
def test_embedding_noise_norm_and_sign(eps, shape):
    h = torch.randn(*shape, dtype=torch.float64)
    noise = EmbeddingNoise(eps=eps)
    delta = noise(h, 0) - h
    assert torch.allclose(delta.norm(dim=-1), torch.full((shape[0],), eps, dtype=torch.float64))
    assert torch.equal(torch.sign(delta), torch.sign(h))
    torch.manual_seed(3)
    first = noise(h, 1)
    torch.manual_seed(3)
    assert torch.equal(noise(h, 1), first)


def test_embedding_noise_as_lightgcn_perturb():
    graph = random_graph(8, 9, 30)
    model = LightGCN(8, 9, 4, 2).double()
    clean, noisy = model(graph), model(graph, perturb=EmbeddingNoise(eps=0.1), skip_ego=True)
    assert torch.equal(noisy.layers[0], clean.layers[0])
    assert not torch.allclose(noisy.layers[1], clean.layers[1])


def test_adaptive_mask_hand_example():
    # users 0, 1; items 0, 1 (nodes 2, 3); edges u0-i0, u0-i1, u1-i1
    graph = build_graph(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), 2, 2, dtype=torch.float64)
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    mask = AdaptiveMask()
    weight = mask.edge_weight(graph, z)
    s = 2**-0.5
    expected = torch.tensor([(1 + 1) / 2, (-s + 1) / 2, (s + 1) / 2], dtype=torch.float64)
    assert torch.allclose(weight, expected)
    for normalization in ("row", "symmetric"):
        adj = AdaptiveMask(normalization=normalization)(graph, z)
        ref = dense_adjacency(graph.users, graph.items, 2, 2, expected, normalization)
        assert torch.allclose(adj.to_dense(), ref)
    row_sums = mask(graph, z).to_dense().sum(1)
    assert torch.allclose(row_sums, torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize("normalization,dim", list(itertools.product(["row", "symmetric"], [2, 8])))
def test_adaptive_mask_weights_bounded_and_gradient_flows(normalization, dim):
    graph = random_graph(6, 7, 20, seed=dim)
    z = torch.randn(13, dim, dtype=torch.float64, requires_grad=True)
    mask = AdaptiveMask(normalization=normalization)
    weight = mask.edge_weight(graph, z)
    assert (weight >= -1e-12).all() and (weight <= 1 + 1e-12).all()
    x = torch.randn(13, 3, dtype=torch.float64)
    torch.sparse.mm(mask(graph, z), x).pow(2).sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0

    def dense_fn(z_):
        zu, zi = z_[graph.users], z_[graph.items + graph.num_users]
        w = (torch.nn.functional.cosine_similarity(zu, zi, dim=-1) + 1) / 2
        return dense_adjacency_diff(graph, w, normalization) @ x

    def sparse_fn(z_):
        return torch.sparse.mm(mask(graph, z_), x)

    z0 = torch.randn(13, dim, dtype=torch.float64, requires_grad=True)
    g_sparse = torch.autograd.grad(sparse_fn(z0).sin().sum(), z0)[0]
    g_dense = torch.autograd.grad(dense_fn(z0).sin().sum(), z0)[0]
    assert torch.allclose(g_sparse, g_dense)


def dense_adjacency_diff(graph, weight, normalization):
    """Differentiable dense reference built with index_put (accumulating duplicates)."""
    n, u, i = graph.num_nodes, graph.users, graph.items + graph.num_users
    a = torch.zeros(n, n, dtype=weight.dtype).index_put((u, i), weight, accumulate=True)
    a = a + a.T
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg, torch.ones_like(deg))
    return a / inv[:, None] if normalization == "row" else a / inv[:, None].sqrt() / inv[None, :].sqrt()


@pytest.mark.parametrize(
    "cls,kwargs,kind",
    [
        (EdgeDropout, {"p": 0.2}, "graph"),
        (NodeDropout, {"p": 0.2}, "graph"),
        (RandomWalk, {"p": 0.2, "num_layers": 2}, "graph"),
        (EmbeddingNoise, {"eps": 0.2}, "embedding"),
        (AdaptiveMask, {"normalization": "symmetric"}, "learned"),
    ],
)
def test_configs_and_view_kinds(cls, kwargs, kind):
    aug = cls.from_config(cls.Config(**kwargs))
    assert cls.view_kind == kind and isinstance(cls.name, str)
    for key, value in kwargs.items():
        assert getattr(aug, key) == value
    assert repr(aug).startswith(cls.__name__ + "(")
    with pytest.raises(ValidationError):
        cls.Config(unknown=1)


@pytest.mark.parametrize(
    "cls,bad",
    [
        (EdgeDropout, {"p": 1.0}),
        (EdgeDropout, {"p": -0.1}),
        (NodeDropout, {"p": 1.0}),
        (RandomWalk, {"num_layers": 0}),
        (EmbeddingNoise, {"eps": 0.0}),
        (AdaptiveMask, {"normalization": "col"}),
    ],
)
def test_config_bounds(cls, bad):
    with pytest.raises(ValidationError):
        cls.Config(**bad)
    with pytest.raises(ValueError):
        cls(**bad)
