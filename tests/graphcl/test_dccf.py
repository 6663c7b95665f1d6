import itertools

import pytest
import torch
from pydantic import ValidationError

from engine_graphcl.dccf import DCCF
from engine_graphcl.graph import build_graph
from engine_graphcl.lightgcn import GraphEncoding


def random_graph(num_users, num_items, num_edges, seed=0):
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(0, num_users, (num_edges,), generator=gen)
    items = torch.randint(0, num_items, (num_edges,), generator=gen)
    return build_graph(users, items, num_users, num_items, dtype=torch.float64)


def dense_weighted(graph, weight_of, normalization):
    """Normalised dense adjacency with edge (u, i) weighted by ``weight_of(u, i)``, by loops, float64."""
    n, nu = graph.num_nodes, graph.num_users
    a = torch.zeros(n, n, dtype=torch.float64)
    for u, i in zip(graph.users.tolist(), graph.items.tolist()):
        w = weight_of(u, nu + i)
        a[u, nu + i] += w
        a[nu + i, u] += w
    deg, out = a.sum(1), torch.zeros_like(a)
    for r, c in itertools.product(range(n), range(n)):
        if a[r, c]:
            out[r, c] = a[r, c] / (deg[r] if normalization == "row" else (deg[r] * deg[c]).sqrt())
    return out


def reference_layer(graph, e, w_user, w_item):
    """One DCCF layer written out densely, as in the official code."""
    nu = graph.num_users
    z = dense_weighted(graph, lambda r, c: 1.0, "symmetric") @ e
    r = torch.empty_like(e)
    for node in range(graph.num_nodes):
        w = w_user if node < nu else w_item
        logits = e[node] @ w
        r[node] = (logits.exp() / logits.exp().sum()) @ w.T

    def mask(x):
        def cosine_weight(a, b):
            return float((x[a] @ x[b] / (x[a].norm() * x[b].norm()) + 1) / 2)

        return dense_weighted(graph, cosine_weight, "row")

    g, h = mask(z) @ e, mask(r) @ e
    return z, r, g, h, z + r + g + h + e


@pytest.mark.parametrize(
    "num_users,num_items,dim,num_layers,num_intents",
    list(itertools.product([3, 6], [4], [2, 8], [1, 2], [1, 5])),
)
def test_dccf_matches_dense_reference(num_users, num_items, dim, num_layers, num_intents):
    graph = random_graph(num_users, num_items, 3 * (num_users + num_items), seed=dim + num_intents)
    model = DCCF(num_users, num_items, dim, num_layers, num_intents, intent_reg=0.01).double()
    out = model(graph)
    e, w_u, w_i = (p.detach() for p in (model.embedding.weight, model.user_intent, model.item_intent))
    layers = [e]
    for l in range(num_layers):
        z, r, g, h, e = reference_layer(graph, e, w_u, w_i)
        for name, want in zip(("gnn", "int", "gaa", "iaa"), (z, r, g, h)):
            assert torch.allclose(out.views[f"{name}_{l}"], want), name
        layers.append(e)
    for got, want in zip(out.layers, layers):
        assert torch.allclose(got, want)
    assert torch.allclose(torch.cat([out.users, out.items]), torch.stack(layers).sum(0))
    assert torch.allclose(out.extra_losses["intent_reg"], 0.01 * (w_u.pow(2).sum() + w_i.pow(2).sum()))


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_dccf_shapes_views_pairs_and_gradients(num_layers):
    # users 2, 4 and items 1, 3 are isolated
    graph = build_graph(torch.tensor([0, 1, 1, 3]), torch.tensor([0, 0, 2, 2]), 5, 4)
    model = DCCF(5, 4, embedding_dim=8, num_layers=num_layers, num_intents=3)
    out = model(graph)
    assert isinstance(out, GraphEncoding)
    assert out.users.shape == (5, 8) and out.items.shape == (4, 8) and len(out.layers) == num_layers + 1
    assert set(out.views) == {f"{v}_{l}" for v in ("gnn", "int", "gaa", "iaa") for l in range(num_layers)}
    assert all(v.shape == (9, 8) and torch.isfinite(v).all() for v in out.views.values())
    assert torch.isfinite(out.users).all() and torch.isfinite(out.items).all()
    pairs = model.contrast_pairs
    assert len(pairs) == 3 * num_layers and all(a in out.views and b in out.views for a, b in pairs)
    assert [b for a, b in pairs[:3]] == ["int_0", "gaa_0", "iaa_0"] and all(a.startswith("gnn_") for a, _ in pairs)
    loss = out.users.pow(2).sum() + out.items.sum() + out.extra_losses["intent_reg"]
    loss = loss + sum((out.views[a] * out.views[b]).sum() for a, b in pairs)
    loss.backward()
    for p in (model.embedding.weight, model.user_intent, model.item_intent):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def dense_dccf(graph, e, w_user, w_item, num_layers):
    """DCCF with dense matrices and plain torch ops (differentiable), for gradient checks."""
    nu, n = graph.num_users, graph.num_nodes
    pattern = torch.zeros(n, n, dtype=torch.float64)
    pattern[graph.users, nu + graph.items] = 1.0
    pattern = pattern + pattern.T  # no duplicate edges in this graph
    deg = pattern.sum(1).clamp(min=1)
    a_bar = pattern / deg.sqrt()[:, None] / deg.sqrt()[None, :]

    def mask(x):
        xn = x / x.norm(dim=1, keepdim=True)
        weighted = pattern * (xn @ xn.T + 1) / 2
        return weighted / weighted.sum(1, keepdim=True).clamp(min=1e-30)

    total = e
    for _ in range(num_layers):
        z = a_bar @ e
        r = torch.cat([torch.softmax(e[:nu] @ w_user, 1) @ w_user.T, torch.softmax(e[nu:] @ w_item, 1) @ w_item.T])
        e = z + r + mask(z) @ e + mask(r) @ e + e
        total = total + e
    return total


@pytest.mark.parametrize("num_layers", [1, 2])
def test_dccf_gradients_match_dense_reference(num_layers):
    gen = torch.Generator().manual_seed(num_layers)
    keys = torch.randperm(5 * 6, generator=gen)[:14]
    graph = build_graph(keys // 6, keys % 6, 5, 6, dtype=torch.float64)
    model = DCCF(5, 6, embedding_dim=4, num_layers=num_layers, num_intents=3).double()
    params = (model.embedding.weight, model.user_intent, model.item_intent)
    out = model(graph)
    got = torch.autograd.grad(torch.cat([out.users, out.items]).sin().sum(), params)
    ref = dense_dccf(graph, *params, num_layers)
    assert torch.allclose(torch.cat([out.users, out.items]), ref)
    want = torch.autograd.grad(ref.sin().sum(), params)
    assert all(torch.allclose(g, w) for g, w in zip(got, want))


def test_mask_gradient_reaches_embeddings():
    """The adaptive masks are differentiable: G's gradient differs from treating the mask as a constant."""
    graph = random_graph(4, 5, 15, seed=2)
    model = DCCF(4, 5, embedding_dim=3, num_layers=1, num_intents=2).double()
    full = torch.autograd.grad(model(graph).views["gaa_0"].sin().sum(), model.embedding.weight)[0]
    e = model.embedding.weight
    const_mask = model.mask(graph, model(graph).views["gnn_0"].detach())
    detached = torch.autograd.grad(torch.sparse.mm(const_mask, e).sin().sum(), e)[0]
    assert not torch.allclose(full, detached)


def test_dccf_config_init_and_repr():
    model = DCCF.from_config(DCCF.Config(embedding_dim=16, num_intents=4), num_users=7, num_items=9)
    assert model.num_layers == 2 and model.intent_reg == 5e-3 and DCCF.name == "dccf"
    assert model.embedding.weight.shape == (16, 16) and model.user_intent.shape == (16, 4)
    assert model.item_intent.shape == (16, 4)
    assert repr(model) == "DCCF(7, 9, dim=16, num_layers=2, num_intents=4)"
    for bad in ({"num_layers": 0}, {"num_intents": 0}, {"intent_reg": -1.0}, {"embedding_dim": 0}, {"k": 1}):
        with pytest.raises(ValidationError):
            DCCF.Config(**bad)
