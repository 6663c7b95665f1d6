import itertools

import pytest
import torch
from pydantic import ValidationError
from torch_geometric.nn import LGConv

from engine_graphcl.graph import build_graph
from engine_graphcl.lightgcn import GraphEncoding, LightGCN


def random_graph(num_users, num_items, num_edges, seed=0):
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(0, num_users, (num_edges,), generator=gen)
    items = torch.randint(0, num_items, (num_edges,), generator=gen)
    return build_graph(users, items, num_users, num_items, dtype=torch.float64)


def dense_adjacency(graph):
    """D^-1/2 A D^-1/2 from the edge list, with loops, float64."""
    n = graph.num_nodes
    a = torch.zeros(n, n, dtype=torch.float64)
    for u, i in zip(graph.users.tolist(), graph.items.tolist()):
        a[u, graph.num_users + i] += 1
        a[graph.num_users + i, u] += 1
    deg = a.sum(1)
    out = torch.zeros_like(a)
    for r, c in itertools.product(range(n), range(n)):
        if a[r, c]:
            out[r, c] = a[r, c] / (deg[r] * deg[c]).sqrt()
    return out


def model_for(graph, dim, num_layers, **kwargs):
    return LightGCN(graph.num_users, graph.num_items, dim, num_layers, **kwargs).double()


@pytest.mark.parametrize(
    "num_users,num_items,dim,num_layers,combination",
    list(itertools.product([3, 7], [4, 9], [1, 8], [0, 1, 3], ["mean", "last"])),
)
def test_propagation_equals_powers_of_dense_adjacency(num_users, num_items, dim, num_layers, combination):
    graph = random_graph(num_users, num_items, 2 * (num_users + num_items), seed=num_users + num_items + dim)
    model = model_for(graph, dim, num_layers, layer_combination=combination)
    out = model(graph)
    a, e0 = dense_adjacency(graph), model.embedding.weight.detach()
    expected_layers = [torch.linalg.matrix_power(a, k) @ e0 for k in range(num_layers + 1)]
    expected = expected_layers[-1] if combination == "last" else torch.stack(expected_layers).mean(0)
    assert isinstance(out, GraphEncoding) and len(out.layers) == num_layers + 1
    assert out.users.shape == (num_users, dim) and out.items.shape == (num_items, dim)
    for got, want in zip(out.layers, expected_layers):
        assert torch.allclose(got, want)
    assert torch.allclose(torch.cat([out.users, out.items]), expected)
    assert out.views == {} and out.extra_losses == {}


@pytest.mark.parametrize("num_layers,skip_ego", list(itertools.product([1, 2, 3], [False, True])))
def test_perturb_and_skip_ego(num_layers, skip_ego):
    graph = random_graph(5, 6, 20, seed=num_layers)
    model = model_for(graph, 4, num_layers)
    calls = []

    def perturb(h, layer):
        calls.append(layer)
        return 2.0 * h + layer

    out = model(graph, perturb=perturb, skip_ego=skip_ego)
    a, h = dense_adjacency(graph), model.embedding.weight.detach()
    expected = [h]
    for layer in range(num_layers):
        h = 2.0 * (a @ h) + layer
        expected.append(h)
    assert calls == list(range(num_layers))
    used = expected[1:] if skip_ego else expected
    assert torch.allclose(torch.cat([out.users, out.items]), torch.stack(used).mean(0))


def test_per_layer_graph_list():
    graphs = [random_graph(4, 5, 12, seed=s) for s in range(3)]
    model = model_for(graphs[0], 3, 3)
    out = model(graphs)
    h, expected = model.embedding.weight.detach(), []
    expected.append(h)
    for g in graphs:
        h = dense_adjacency(g) @ h
        expected.append(h)
    for got, want in zip(out.layers, expected):
        assert torch.allclose(got, want)
    assert not torch.allclose(out.layers[1], dense_adjacency(graphs[0]) @ dense_adjacency(graphs[0]) @ expected[0])
    with pytest.raises(ValueError, match="2 per-layer graphs for 3 layers"):
        model(graphs[:2])


def test_matches_pyg_lgconv():
    graph = random_graph(6, 8, 30, seed=4)
    model = model_for(graph, 5, 2)
    row = torch.cat([graph.users, graph.items + graph.num_users])
    col = torch.cat([graph.items + graph.num_users, graph.users])
    conv, x = LGConv(normalize=True), model.embedding.weight.detach()
    # duplicate edges: PyG sums duplicate messages too, and gcn_norm counts them in the degree
    expected = conv(conv(x, torch.stack([col, row])), torch.stack([col, row]))
    assert torch.allclose(model(graph).layers[2], expected)


def test_gradients_isolated_nodes_and_float32():
    graph = build_graph(torch.tensor([0, 1]), torch.tensor([0, 0]), 3, 2)  # user 2 and item 1 isolated
    model = LightGCN(3, 2, embedding_dim=4, num_layers=2)
    out = model(graph)
    assert torch.isfinite(out.users).all() and torch.isfinite(out.items).all()
    assert torch.allclose(out.users[2], model.embedding.weight[2] / 3)
    (out.users.sum() + out.items.sum()).backward()
    assert torch.isfinite(model.embedding.weight.grad).all()


def test_config_init_and_repr():
    model = LightGCN.from_config(LightGCN.Config(embedding_dim=16, num_layers=2), num_users=10, num_items=20)
    assert model.embedding.weight.shape == (30, 16) and model.num_layers == 2
    bound = (6 / (30 + 16)) ** 0.5
    assert model.embedding.weight.abs().max() <= bound
    assert repr(model) == "LightGCN(10, 20, dim=16, num_layers=2, combination='mean')"
    assert LightGCN.name == "lightgcn"
    for bad in ({"embedding_dim": 0}, {"num_layers": -1}, {"layer_combination": "sum"}, {"dim": 3}):
        with pytest.raises(ValidationError):
            LightGCN.Config(**bad)
    with pytest.raises(ValueError, match="layer_combination"):
        LightGCN(2, 2, layer_combination="sum")


def test_graph_encoding_defaults_are_empty_and_read_only():
    enc = GraphEncoding(torch.zeros(2, 3), torch.zeros(4, 3), [torch.zeros(6, 3)])
    assert len(enc.views) == 0 and len(enc.extra_losses) == 0
    with pytest.raises(TypeError):
        enc.views["x"] = torch.zeros(6, 3)
