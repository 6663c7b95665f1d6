"""The ``graph_cf`` task's pieces against naive references: negative sampling, epoch batches, the loss terms (BPR,
L2 reg, cross-layer InfoNCE) on a hand-built encoder output, the ONNX scorer, and masked full-ranking evaluation."""

from __future__ import annotations

import collections
import math
from types import MappingProxyType

import numpy as np
import pytest
import torch

from engine_graphcl.lightgcn import GraphEncoding
from engine_graphcl.sampling import NegativeSampler
from engine_graphcl.task import GraphCFTask, GraphScorer
from graph_fixed_encoder import FixedEncoder
from naive_ranking import naive_ranking

NUM_USERS, NUM_ITEMS = 6, 12


def make_splits(seed=0):
    """Per user, of 12 items: 6 train, 1 valid, 2 test (a dense-ish graph: half of all pairs are positives)."""
    rng = np.random.default_rng(seed)
    train, valid, test = {}, {}, {}
    for u in range(NUM_USERS):
        perm = rng.permutation(NUM_ITEMS).tolist()
        train[u], valid[u], test[u] = sorted(perm[:6]), sorted(perm[6:7]), sorted(perm[7:9])
    return train, valid, test


def write_split(path, rows):
    path.write_text("\n".join(" ".join(map(str, [u, *items])) for u, items in rows.items()) + "\n")


def make_task(tmp_path, model=None, **train):
    from engine.config import load_pipeline
    from engine.run import prepare

    splits = make_splits()
    for name, rows in zip(("train", "valid", "test"), splits):
        write_split(tmp_path / f"{name}.txt", rows)
    doc = {
        "name": "unit",
        "task": "graph_cf",
        "seed": 5,
        "data": {"source": "lightgcn_txt", "path": str(tmp_path), "valid": "valid.txt"},
        "model": model or {"encoder": {"name": "lightgcn", "embedding_dim": 8, "num_layers": 2}},
        "train": {"batch_size": 7, **train},
        "evaluate": {"ks": [1, 2, 6], "chunk_size": 2},
        "tracking": {"enabled": False},
    }
    task, net = prepare(load_pipeline(doc))
    assert isinstance(task, GraphCFTask)
    return task, net, splits


def val(t: torch.Tensor) -> float:
    return t.detach().item()


def positive_pairs(splits_train):
    return {(u, i) for u, items in splits_train.items() for i in items}


# -- negative sampling ------------------------------------------------------------------------------------------------


def test_negative_sampler_never_returns_a_training_positive(tmp_path, graphcl_plugins):
    task, _, (train, _, _) = make_task(tmp_path)
    positives = positive_pairs(train)
    users = torch.arange(NUM_USERS).repeat(400)
    negatives = task.sampler.sample(users, torch.Generator().manual_seed(1))
    assert negatives.shape == users.shape and negatives.dtype == torch.long
    assert int(negatives.min()) >= 0 and int(negatives.max()) < NUM_ITEMS
    assert not any((u, j) in positives for u, j in zip(users.tolist(), negatives.tolist()))
    # uniform over each user's 6 non-positives (400 draws each: expected 66.7, allow a wide band)
    counts = collections.Counter(zip(users.tolist(), negatives.tolist()))
    for u in range(NUM_USERS):
        allowed = set(range(NUM_ITEMS)) - set(train[u])
        assert {j for (v, j) in counts if v == u} == allowed
        assert all(35 <= counts[(u, j)] <= 105 for j in allowed)


def test_negative_sampler_with_one_free_item():
    # user 0 has every item but 3; user 1 every item but 0 and 7
    users = torch.tensor([0] * 9 + [1] * 8)
    items = torch.tensor([i for i in range(10) if i != 3] + [i for i in range(10) if i not in (0, 7)])
    sampler = NegativeSampler(users, items, 10)
    got = sampler.sample(torch.tensor([0, 1] * 200), torch.Generator().manual_seed(0))
    assert (got[0::2] == 3).all()
    assert set(got[1::2].tolist()) == {0, 7}
    assert sampler.is_positive(torch.tensor([0, 0, 1]), torch.tensor([3, 4, 0])).tolist() == [False, True, False]


def test_negative_sampler_is_deterministic_per_generator(tmp_path, graphcl_plugins):
    task, _, _ = make_task(tmp_path)
    users = torch.arange(NUM_USERS).repeat(20)
    a = task.sampler.sample(users, torch.Generator().manual_seed(42))
    state = torch.get_rng_state()
    b = task.sampler.sample(users, torch.Generator().manual_seed(42))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not touched
    c = task.sampler.sample(users, torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# -- epoch batches ----------------------------------------------------------------------------------------------------


def test_train_batches_cover_every_interaction_once_per_epoch(tmp_path, graphcl_plugins):
    task, _, (train, _, _) = make_task(tmp_path)
    expected = collections.Counter(positive_pairs(train))
    assert sum(expected.values()) == 36

    def epoch(seed):
        return list(task.train_batches(1, torch.Generator().manual_seed(seed)))

    batches = epoch(3)
    assert len(batches) == task.num_batches() == math.ceil(36 / 7)
    assert [b[0].numel() for b in batches] == [7, 7, 7, 7, 7, 1]
    seen = collections.Counter()
    for u, i, j in batches:
        assert u.shape == i.shape == j.shape
        seen.update(zip(u.tolist(), i.tolist()))
        assert not any((a, b) in expected for a, b in zip(u.tolist(), j.tolist()))  # negatives are not positives
    assert seen == expected
    # the same generator seed gives the same epoch; another seed another order
    again, other = epoch(3), epoch(4)
    assert all(all(torch.equal(x, y) for x, y in zip(b1, b2)) for b1, b2 in zip(batches, again))
    def order(bs):
        return [(a, b) for u, i, _ in bs for a, b in zip(u.tolist(), i.tolist())]

    assert order(other) != order(batches) and sorted(order(other)) == sorted(order(batches))


# -- loss terms on a hand-built encoder output --------------------------------------------------------------------------


def naive_infonce(a: torch.Tensor, b: torch.Tensor, tau: float) -> float:
    """Row r: -log softmax over c of cos(a_r, b_c) / tau, at c = r; mean over rows (float64 loops)."""
    a, b = a.double(), b.double()
    total = 0.0
    for r in range(a.shape[0]):
        logits = [float(a[r] @ b[c] / (a[r].norm() * b[c].norm())) / tau for c in range(b.shape[0])]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(x - top) for x in logits))
        total += log_z - logits[r]
    return total / a.shape[0]


def hand_encoding(num_layers=2, dim=5, seed=0) -> GraphEncoding:
    gen = torch.Generator().manual_seed(seed)
    n = NUM_USERS + NUM_ITEMS
    layers = [torch.randn(n, dim, generator=gen, dtype=torch.float64) for _ in range(num_layers + 1)]
    final = torch.stack(layers).mean(0)
    users, items = torch.split(final, [NUM_USERS, NUM_ITEMS])
    return GraphEncoding(users, items, layers, MappingProxyType({}), MappingProxyType({}))


def test_loss_terms_equal_hand_computation(tmp_path, graphcl_plugins):
    """BPR, the L2 reg on ego embeddings and the cross-layer InfoNCE, each computed by hand."""
    tau, weight, reg_weight, layer = 0.3, 0.25, 0.01, 1
    model_cfg = {
        "encoder": {"name": "lightgcn", "embedding_dim": 5, "num_layers": 2},
        "augmenter": {"name": "embedding_noise", "eps": 0.1},
        "contrast": {"objective": {"name": "infonce", "temperature": tau, "weight": weight},
                     "views": "cross_layer", "layer": layer},
        "reg_weight": reg_weight,
    }
    task, net, _ = make_task(tmp_path, model_cfg)
    enc = hand_encoding()
    net.encoder = FixedEncoder(enc)
    u = torch.tensor([0, 3, 3, 5, 1])
    i = torch.tensor([2, 2, 7, 11, 0])
    j = torch.tensor([4, 9, 1, 1, 6])
    out = task.training_step(net, (u, i, j))

    ego, nu, b = enc.layers[0], NUM_USERS, u.numel()
    reg = sum(float(ego[u[k]] @ ego[u[k]] + ego[nu + i[k]] @ ego[nu + i[k]] + ego[nu + j[k]] @ ego[nu + j[k]])
              for k in range(b)) / (2 * b)
    bpr = sum(math.log1p(math.exp(float(enc.users[u[k]] @ enc.items[j[k]] - enc.users[u[k]] @ enc.items[i[k]])))
              for k in range(b)) / b
    final, other = torch.cat([enc.users, enc.items]), enc.layers[layer]
    uu, ii = sorted(set(u.tolist())), sorted(set(i.tolist()))
    contrast = naive_infonce(final[uu], other[uu], tau) + naive_infonce(final[[nu + x for x in ii]],
                                                                          other[[nu + x for x in ii]], tau)
    assert val(out.parts["reg"]) == pytest.approx(reg_weight * reg, rel=1e-9)
    assert val(out.parts["rec/bpr"]) == pytest.approx(bpr, rel=1e-9)
    assert val(out.parts["contrast"]) == pytest.approx(contrast, rel=1e-9)
    assert val(out.loss) == pytest.approx(bpr + reg_weight * reg + weight * contrast, rel=1e-9)


def test_reg_term_on_the_real_encoder(tmp_path, graphcl_plugins):
    """LightGCN's reg: reg_weight * (|e_u|^2 + |e_i|^2 + |e_j|^2) / 2 per row, on layer-0 (ego) embeddings."""
    task, net, _ = make_task(tmp_path, {"encoder": {"name": "lightgcn", "embedding_dim": 8, "num_layers": 2},
                                        "reg_weight": 0.5})
    u, i, j = next(iter(task.train_batches(1, torch.Generator().manual_seed(0))))
    out = task.training_step(net, (u, i, j))
    e = net.encoder.embedding.weight.detach().double()
    rows = [e[a].pow(2).sum() + e[NUM_USERS + b].pow(2).sum() + e[NUM_USERS + c].pow(2).sum()
            for a, b, c in zip(u.tolist(), i.tolist(), j.tolist())]
    assert val(out.parts["reg"]) == pytest.approx(0.5 * float(sum(rows)) / (2 * len(rows)), rel=1e-5)
    assert set(out.parts) == {"rec/bpr", "reg"}


# -- the exported scorer ----------------------------------------------------------------------------------------------


def test_graph_scorer_matches_users_times_items():
    gen = torch.Generator().manual_seed(0)
    users = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    items = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    scorer = GraphScorer(users, items)
    batch = torch.tensor([3, 0, 3, 4])
    got = scorer(batch)
    assert got.dtype == torch.float32 and got.shape == (4, 7) and not got.requires_grad
    assert torch.allclose(got.double(), users.detach()[batch] @ items.T, atol=1e-6)
    assert torch.allclose(scorer(torch.arange(5)).double(), users.detach() @ items.T, atol=1e-6)
    assert set(dict(scorer.named_buffers())) == {"user_embedding", "item_embedding"}


# -- evaluation masks training items ----------------------------------------------------------------------------------


def naive_metrics(scores: np.ndarray, truth: dict, seen: list[dict], ks) -> dict[str, float]:
    """Rank each user's items not seen in any of ``seen`` by score; mean over users with ground truth."""
    exclude = {u: set().union(*(s.get(u, []) for s in seen)) for u in truth}
    return naive_ranking(scores, truth, exclude, range(scores.shape[1]), ks)


def test_evaluate_masks_seen_items(tmp_path, graphcl_plugins):
    task, net, (train, valid, test) = make_task(tmp_path)
    gen = torch.Generator().manual_seed(7)
    scores = torch.rand(NUM_USERS, NUM_ITEMS, generator=gen, dtype=torch.float64)
    for u in range(NUM_USERS):  # a model that scores training items (then valid items) highest
        scores[u, train[u]] += 10
        scores[u, valid[u]] += 5
    # users' embeddings are their score rows, items are one-hot: users @ items.T == scores
    net.encoder = FixedEncoder(GraphEncoding(scores, torch.eye(NUM_ITEMS, dtype=torch.float64), [scores]))
    ks = [1, 2, 6]  # 6 > the 5 candidates left on test (12 items - 6 train - 1 valid)

    got_test = task.evaluate(net, "test")
    want_test = naive_metrics(scores.numpy(), test, [train, valid], ks)
    assert set(got_test) == set(want_test)
    for key in want_test:
        assert got_test[key] == pytest.approx(want_test[key], abs=1e-12), key
    got_valid = task.evaluate(net, "valid")
    want_valid = naive_metrics(scores.numpy(), valid, [train], ks)
    for key in want_valid:
        assert got_valid[key] == pytest.approx(want_valid[key], abs=1e-12), key
    # without masking the training items would take the top ranks and nothing would be a hit
    unmasked = naive_metrics(scores.numpy(), test, [], ks)
    assert unmasked["ndcg@6"] == 0.0 < got_test["ndcg@6"]
    assert got_test["recall@6"] == 1.0 and got_test["precision@6"] == pytest.approx(2 / 6)
    assert net.training  # evaluate leaves the model in training mode
