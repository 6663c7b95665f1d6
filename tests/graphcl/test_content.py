"""``model.content`` and ``data.cold_items`` in the ``graph_cf`` task, on a tiny LightGCN-format split with a RecBole
``.item`` table: cold items have no training edge and are never negatives, their serving vectors are their content
view, the loss terms equal a hand computation, and cold / warm metrics equal a naive per-user ranking of the task's own
embeddings; plus one short training run. (The item graph, the content kNN: test_item_graph.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.content import orthogonality
from engine.errors import ConfigError
from engine_graphcl.lightgcn import GraphEncoding
from engine_graphcl.sampling import NegativeSampler
from engine_graphcl.task import GraphCFTask
from graph_fixed_encoder import FixedEncoder
from naive_ranking import naive_ranking

NUM_USERS, NUM_ITEMS, DIM = 10, 16, 8
GENRES = ["Action", "Comedy", "Drama", "War"]


@pytest.fixture
def plugins():
    """The objectives, graphcl and linkage (the field encoders) plugins registered in memory."""
    from engine.plugins import plugin
    from engine_graphcl import plugin as gmod
    from engine_linkage import plugin as lmod
    from engine_objectives import plugin as omod

    with plugin(omod, name="objectives"), plugin(gmod, name="graphcl"), plugin(lmod, name="linkage"):
        yield


def make_splits(seed=0):
    """Per user, of 16 items: 6 train, 2 valid, 3 test; every item occurs."""
    rng = np.random.default_rng(seed)
    splits = {"train": {}, "valid": {}, "test": {}}
    for u in range(NUM_USERS):
        perm = np.roll(rng.permutation(NUM_ITEMS), u).tolist()
        splits["train"][u], splits["valid"][u], splits["test"][u] = sorted(perm[:6]), sorted(perm[6:8]), \
            sorted(perm[8:11])
    assert {i for s in splits.values() for items in s.values() for i in items} == set(range(NUM_ITEMS))
    return splits


def write_data(directory, item_table=True):
    directory.mkdir(exist_ok=True)
    splits = make_splits()
    for name, rows in splits.items():
        (directory / f"{name}.txt").write_text("\n".join(" ".join(map(str, [u, *items]))
                                                         for u, items in rows.items()) + "\n")
    if item_table:
        lines = ["item_id:token\ttitle:token_seq\tgenre:token\tyear:float"]
        lines += [f"{i}\tword{i % 5} other{i % 3}\t{GENRES[i % 4]}\t{1980 + i}" for i in range(NUM_ITEMS)]
        (directory / "items.item").write_text("\n".join(lines) + "\n")
    return splits


def make_doc(tmp_path, content=None, data=None, encoder=None, **train):
    return {
        "name": "unit",
        "task": "graph_cf",
        "seed": 5,
        "data": {"source": "lightgcn_txt", "path": str(tmp_path / "data"), "valid": "valid.txt",
                 "item_features": {}, "cold_items": {"ratio": 0.25, "seed": 1}, **(data or {})},
        "model": {"encoder": encoder or {"name": "lightgcn", "embedding_dim": DIM, "num_layers": 2},
                  **({"content": content} if content is not None else {})},
        "train": {"batch_size": 16, "epochs": 2, "patience": None, "monitor": "ndcg@5",
                  "checkpoint_dir": str(tmp_path / "checkpoints"), **train},
        "evaluate": {"ks": [2, 5], "chunk_size": 3},
        "tracking": {"enabled": False},
    }


def make_task(tmp_path, content=None, data=None, encoder=None, item_table=True, **train):
    from engine.config import load_pipeline
    from engine.run import prepare

    splits = write_data(tmp_path / "data", item_table)
    task, net = prepare(load_pipeline(make_doc(tmp_path, {} if content is None else content, data, encoder,
                                               **train)))
    assert isinstance(task, GraphCFTask)
    return task, net, splits


def dense_adjacency(task) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the training graph, float64, from its edge list."""
    n = NUM_USERS + NUM_ITEMS
    a = torch.zeros(n, n, dtype=torch.float64)
    for u, i in zip(task.graph.users.tolist(), task.graph.items.tolist()):
        a[u, NUM_USERS + i] = a[NUM_USERS + i, u] = 1.0
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    return inv[:, None] * a * inv[None, :]


def naive_lightgcn(net, task, item_input: torch.Tensor, num_layers=2):
    """The mean over layers of powers of the dense adjacency applied to (ego + item input on the item rows)."""
    h = net.encoder.embedding.weight.detach().double().clone()
    h[NUM_USERS:] += item_input.detach().double()
    adj = dense_adjacency(task)
    layers = [h]
    for _ in range(num_layers):
        layers.append(adj @ layers[-1])
    out = torch.stack(layers).mean(0)
    return out[:NUM_USERS], out[NUM_USERS:]


def frame_rows(frame) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    if frame is not None:
        for u, i in zip(frame["user"].to_list(), frame["item"].to_list()):
            out.setdefault(u, set()).add(i)
    return out


def naive_infonce(a: torch.Tensor, b: torch.Tensor, tau: float) -> float:
    """Row r: -log softmax over c of cos(a_r, b_c) / tau, at c = r; mean over rows (float64 loops)."""
    a, b = a.double(), b.double()
    total = 0.0
    for r in range(a.shape[0]):
        logits = [float(a[r] @ b[c] / (a[r].norm() * b[c].norm())) / tau for c in range(b.shape[0])]
        top = max(logits)
        total += top + math.log(sum(math.exp(x - top) for x in logits)) - logits[r]
    return total / a.shape[0]


# -- the split and the sampler ---------------------------------------------------------------------------------------


def test_cold_items_have_no_training_edge_and_are_never_negatives(tmp_path, plugins):
    task, _, splits = make_task(tmp_path)
    cold = task.cold.all
    assert cold.size == 4 and task.cold.valid.size == 2 and task.cold.test.size == 2
    assert not set(task.graph.items.tolist()) & set(cold.tolist())  # no training edge
    assert not set(task.data.train["item"].to_list()) & set(cold.tolist())
    assert task.warm.tolist() == [i not in cold for i in range(NUM_ITEMS)]
    # cold-valid items' interactions are validation targets, cold-test ones test targets
    assert set(task.cold.valid.tolist()) <= set(task.data.valid["item"].to_list())
    assert set(task.cold.test.tolist()) <= set(task.data.test["item"].to_list())
    summary = task.data_summary()
    assert summary["cold_items.valid"] == 2 and summary["cold_items.test"] == 2
    assert summary["item_features.items_with_row"] == NUM_ITEMS
    assert summary["item_features.fields"] == "title,genre,year"
    assert summary["num_train"] + summary["num_valid"] + summary["num_test"] == NUM_USERS * 11

    positives = {(u, i) for u, items in frame_rows(task.data.train).items() for i in items}
    users = torch.arange(NUM_USERS).repeat(300)
    neg = task.sampler.sample(users, torch.Generator().manual_seed(0))
    assert not set(neg.tolist()) & set(cold.tolist())
    assert not any((u, j) in positives for u, j in zip(users.tolist(), neg.tolist()))
    # every warm non-positive is drawn for some user: the pool is exactly the warm items
    assert set(neg.tolist()) == set(np.flatnonzero(task.warm.numpy()).tolist())
    for _, _, j in task.train_batches(1, torch.Generator().manual_seed(3)):
        assert not set(j.tolist()) & set(cold.tolist())


def test_negative_sampler_candidates():
    # user 0 has items 1 and 4 of the candidates {1, 3, 4, 6}: only 3 and 6 can be drawn
    sampler = NegativeSampler(torch.tensor([0, 0, 1]), torch.tensor([1, 4, 3]), 8,
                              candidates=torch.tensor([1, 3, 4, 6]))
    got = sampler.sample(torch.tensor([0, 1] * 300), torch.Generator().manual_seed(0))
    assert set(got[0::2].tolist()) == {3, 6} and set(got[1::2].tolist()) == {1, 4, 6}
    again = sampler.sample(torch.tensor([0, 1] * 300), torch.Generator().manual_seed(0))
    assert torch.equal(got, again)
    assert NegativeSampler(torch.tensor([0]), torch.tensor([1]), 3).candidates is None


def test_without_cold_items_the_sampler_draws_every_item(tmp_path, plugins):
    task, _, _ = make_task(tmp_path, data={"cold_items": None})
    assert task.cold is None and task.sampler.candidates is None and bool(task.warm.all())
    metrics = task.evaluate(task.build_model(), "test")
    assert not any(k.startswith(("cold_", "warm_")) for k in metrics)


def test_cold_items_without_content_is_the_id_only_baseline(tmp_path, plugins):
    """``data.cold_items`` without ``model.content``: the same split, cold items ranked by their (untrained) ids."""
    from engine.config import load_pipeline
    from engine.run import prepare

    write_data(tmp_path / "data")
    task, net = prepare(load_pipeline(make_doc(tmp_path)))  # no model.content
    with_content, _, _ = make_task(tmp_path, {})
    assert task.content is None and not hasattr(net, "content")
    assert np.array_equal(task.cold.test, with_content.cold.test)  # the same cold items with and without content
    assert task.sampler.candidates.tolist() == np.flatnonzero(task.warm.numpy()).tolist()
    users, items = task.embeddings(net)
    scores = (users @ items.T).double().numpy()
    d = task.data
    train, valid, test = frame_rows(d.train), frame_rows(d.valid), frame_rows(d.test)
    exclude = {u: train.get(u, set()) | valid.get(u, set()) for u in range(NUM_USERS)}
    got = task.evaluate(net, "test")
    want = naive_ranking(scores, test, exclude, task.cold.test, [2, 5])
    for key, value in want.items():
        assert got["cold_" + key] == pytest.approx(value, abs=1e-6), key


# -- embeddings: cold items get their content view -------------------------------------------------------------------


def test_embeddings_give_cold_items_their_content_view(tmp_path, plugins):
    task, net, _ = make_task(tmp_path, {"fusion": "mean"})
    net.double()
    users, items = task.embeddings(net)
    content = net.content().detach()
    cold, warm = task.cold.all, np.flatnonzero(task.warm.numpy())
    assert torch.equal(items[cold], content[cold])  # no item graph: exactly the content embedding
    # warm items: the tower with the content added to their ego embeddings (a dense reference)
    want_users, want_items = naive_lightgcn(net, task, content)
    assert torch.allclose(users, want_users, atol=1e-7)
    assert torch.allclose(items[warm], want_items[warm], atol=1e-7)
    assert not torch.allclose(items[cold], want_items[cold])  # the tower's cold rows are not served


def test_content_input_false_leaves_the_tower_alone(tmp_path, plugins):
    task, net, _ = make_task(tmp_path, {"input": False})
    net.double()
    users, items = task.embeddings(net)
    want_users, want_items = naive_lightgcn(net, task, torch.zeros(NUM_ITEMS, DIM))
    warm = np.flatnonzero(task.warm.numpy())
    assert torch.allclose(users, want_users, atol=1e-7) and torch.allclose(items[warm], want_items[warm], atol=1e-7)
    assert torch.equal(items[task.cold.all], net.content().detach()[task.cold.all])


# -- evaluation: all / warm / cold against a naive ranking -----------------------------------------------------------


def test_evaluate_reports_cold_and_warm_metrics(tmp_path, plugins):
    task, net, _ = make_task(tmp_path)
    # score with the task's own (untrained) embeddings and rank naively: all items, warm items, the split's cold items
    users, items = task.embeddings(net)
    scores = (users @ items.T).double().numpy()
    d = task.data
    train, valid, test = frame_rows(d.train), frame_rows(d.valid), frame_rows(d.test)
    warm = np.flatnonzero(task.warm.numpy())
    ks = [2, 5]
    for split, truth, seen in (("test", test, [train, valid]), ("valid", valid, [train])):
        exclude = {u: set().union(*(s.get(u, set()) for s in seen)) for u in range(NUM_USERS)}
        got = task.evaluate(net, split)
        want = {**naive_ranking(scores, truth, exclude, range(NUM_ITEMS), ks),
                **{"warm_" + k: v for k, v in naive_ranking(scores, truth, exclude, warm, ks).items()},
                **{"cold_" + k: v for k, v in naive_ranking(scores, truth, exclude, task.cold.of_split(split),
                                                            ks).items()}}
        assert set(got) == set(want), split
        assert {k for k in got if k.startswith("cold_")} == {f"cold_{m}@{k}" for m in
                                                             ("recall", "ndcg", "hr", "precision", "mrr") for k in ks}
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-6), (split, key)
    assert net.training


# -- loss terms ------------------------------------------------------------------------------------------------------


def test_content_loss_terms_equal_hand_computation(tmp_path, plugins):
    tau, align_w, rec_w, orth_w = 0.3, 0.5, 0.7, 0.2
    task, net, _ = make_task(tmp_path, {"fusion": "mean", "rec_weight": rec_w, "split": {"orth_weight": orth_w},
                                        "align": {"name": "infonce", "temperature": tau, "weight": align_w}})
    gen = torch.Generator().manual_seed(0)
    layers = [torch.randn(NUM_USERS + NUM_ITEMS, DIM, generator=gen) for _ in range(3)]
    final = torch.stack(layers).mean(0)
    enc = GraphEncoding(final[:NUM_USERS], final[NUM_USERS:], layers, {}, {})
    net.encoder = FixedEncoder(enc)
    u = torch.tensor([0, 3, 3, 9, 1])
    i = torch.tensor([2, 2, 7, 11, 5])
    j = torch.tensor([4, 9, 1, 1, 6])
    out = task.training_step(net, (u, i, j))
    shared, specific = (p.detach() for p in net.content.parts())
    view = shared + specific
    bpr = sum(math.log1p(math.exp(float(enc.users[u[k]] @ view[j[k]] - enc.users[u[k]] @ view[i[k]])))
              for k in range(5)) / 5
    ii = sorted(set(i.tolist()))
    align = naive_infonce(enc.items[ii], shared[ii], tau)
    orth = float(orthogonality(shared[ii].double(), specific[ii].double()))
    assert out.parts["content/rec"].item() == pytest.approx(rec_w * bpr, rel=1e-5)
    assert out.parts["content/align"].item() == pytest.approx(align_w * align, rel=1e-5)
    assert out.parts["content/orth"].item() == pytest.approx(orth_w * orth, rel=1e-5)
    assert out.loss.item() == pytest.approx(sum(v.item() for v in out.parts.values()), rel=1e-5)
    # the content terms reach the content encoder
    out.loss.backward()
    assert net.content.head.weight.grad.abs().sum() > 0 and net.content.specific.weight.grad.abs().sum() > 0


def test_no_align_no_rec(tmp_path, plugins):
    task, net, _ = make_task(tmp_path, {"align": None, "rec_weight": 0.0})
    u, i, j = next(iter(task.train_batches(1, torch.Generator().manual_seed(0))))
    out = task.training_step(net, (u, i, j))
    assert set(out.parts) == {"rec/bpr", "reg"} and not hasattr(net, "content_align")


# -- configuration errors --------------------------------------------------------------------------------------------


def test_content_without_item_features_is_a_config_error(tmp_path, plugins):
    with pytest.raises(ConfigError, match=r"model\.content: needs data\.item_features"):
        make_task(tmp_path, {}, data={"item_features": None, "cold_items": None}, item_table=False)


def test_cold_items_without_item_features_is_a_config_error(tmp_path, plugins):
    with pytest.raises(ConfigError, match=r"data\.cold_items: needs data\.item_features"):
        make_task(tmp_path, {}, data={"item_features": None}, item_table=False)


def test_content_input_needs_an_encoder_that_takes_it(tmp_path, plugins):
    dccf = {"name": "dccf", "embedding_dim": DIM, "num_layers": 1, "num_intents": 2}
    with pytest.raises(ConfigError, match=r"model\.content\.input: encoder 'dccf' takes no item input"):
        make_task(tmp_path, {}, encoder=dccf)
    task, net, _ = make_task(tmp_path, {"input": False}, encoder=dccf)
    _, items = task.embeddings(net)
    assert torch.equal(items[task.cold.all], net.content().detach()[task.cold.all])


# -- one short training run ------------------------------------------------------------------------------------------


def test_short_run_with_content_item_graph_and_cold_items(tmp_path, plugins):
    from engine.config import load_pipeline
    from engine.tracking import Tracker
    from engine.train.trainer import Trainer

    content = {"fusion": "attention", "item_graph": {"k": 3}, "split": {"orth_weight": 0.1},
               "encoders": {"genre": {"name": "categorical", "num_buckets": 64}}}
    task, net, _ = make_task(tmp_path, content, epochs=3, lr=0.05)
    encoders = net.content.encoder.encoders  # genre: the one named for the field; the others by modality
    assert set(encoders) == {"genre", "multi_categorical", "numeric"} and encoders["genre"].num_buckets == 64
    before = net.content.head.weight.detach().clone()
    cfg = load_pipeline(make_doc(tmp_path, content, None, None, epochs=3, lr=0.05))
    result = Trainer(task, cfg, Tracker(), tmp_path / "checkpoints" / "unit", torch.device("cpu"),
                     progress=False).fit(net)
    assert result.epochs_run == 3
    assert not torch.allclose(net.content.head.weight.detach(), before)  # the content encoder trained
    losses = [h for h in result.history if any(k.startswith("loss/content") for k in h)]
    assert losses and all(math.isfinite(v) for h in losses for k, v in h.items() if k.startswith("loss/"))
    metrics = task.evaluate(net, "test")
    for key in ("recall@5", "warm_recall@5", "cold_recall@5", "cold_ndcg@5", "warm_ndcg@2"):
        assert 0.0 <= metrics[key] <= 1.0, key
    # the reported numbers are those of the served embeddings, ranked naively
    users, items = task.embeddings(net)
    scores = (users @ items.T).double().numpy()
    d = task.data
    train, valid, test = frame_rows(d.train), frame_rows(d.valid), frame_rows(d.test)
    exclude = {u: train.get(u, set()) | valid.get(u, set()) for u in range(NUM_USERS)}
    cold = naive_ranking(scores, test, exclude, task.cold.test, [2, 5])
    for key, value in cold.items():
        assert metrics["cold_" + key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("detach", [False, True])
def test_detach_keeps_the_content_terms_off_the_collaborative_model(tmp_path, plugins, detach):
    """With ``detach`` (and no content input) the content terms' gradient reaches the content tower only."""
    task, net, _ = make_task(tmp_path, {"fusion": "mean", "input": False, "detach": detach, "rec_weight": 0.5,
                                        "item_graph": {"k": 3}})
    u, i, j = next(iter(task.train_batches(1, torch.Generator().manual_seed(0))))
    out = task.training_step(net, (u, i, j))
    content = out.parts["content/rec"] + out.parts["content/align"]
    content.backward()
    collaborative = [p for n, p in net.named_parameters() if not n.startswith("content")]
    reached = sum(float(p.grad.abs().sum()) for p in collaborative if p.grad is not None)
    assert (reached == 0.0) == detach
    assert net.content.head.weight.grad.abs().sum() > 0
