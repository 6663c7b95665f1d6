"""Scored top-k (onnxruntime, chunked, seen items excluded) against a naive PyTorch top-k from the trained weights,
for the graph and the sequential family."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

K = 10


def known_items(task) -> list[set[int]]:
    """Each user's items in train, valid and test: what serving never recommends."""
    d = task.data
    seen = [set() for _ in range(d.num_users)]
    for frame in (d.train, d.valid, d.test):
        if frame is not None:
            for u, i in zip(frame["user"].to_list(), frame["item"].to_list()):
                seen[u].add(i)
    return seen


def naive_topk(scores: torch.Tensor, seen: list[set[int]], k: int, never: set[int] = frozenset()):
    """Per user, in float64: drop seen / never-recommended columns, sort the rest by score, keep k."""
    out = []
    for row, excluded in zip(scores.double(), seen):
        order = [int(j) for j in torch.argsort(row, descending=True, stable=True)
                 if int(j) not in excluded and int(j) not in never]
        out.append([(j, float(row[j])) for j in order[:k]])
    return out


def assert_same_ranking(got: pl.DataFrame, users: list, expected, item_of=lambda j: j):
    """Same items in the same order, scores within 1e-5; a swap is allowed only between near-tied scores."""
    assert got.columns == ["user", "item", "score", "rank"]
    assert got["score"].dtype == pl.Float32 and got["rank"].dtype == pl.Int32
    for user, want in zip(users, expected):
        rows = got.filter(pl.col("user") == user).sort("rank")
        assert rows["rank"].to_list() == list(range(1, len(want) + 1)), user
        np.testing.assert_allclose(rows["score"].to_numpy(), [s for _, s in want], atol=1e-5)
        for got_item, (j, s), got_score in zip(rows["item"].to_list(), want, rows["score"].to_list()):
            if got_item != item_of(j):  # only where two candidates tie within float32 error
                assert abs(got_score - s) < 1e-5, (user, got_item, item_of(j))


def test_graph_scores_match_torch_topk(graph_model, tmp_path):
    from engine_serving import load_model, run_job

    task, model = graph_model.task, graph_model.model
    users_emb, items_emb = task.embeddings(model)
    seen = known_items(task)
    users = list(range(task.data.num_users))
    expected = naive_topk(users_emb @ items_emb.T, seen, K)

    pl.DataFrame({"user": users[::-1]}).write_parquet(tmp_path / "users.parquet")  # any order: kept per row
    served = load_model(str(graph_model.export), threads=1)
    assert served.family == "graph" and served.provider == "CPUExecutionProvider"
    summary = run_job(served, tmp_path / "users.parquet", tmp_path / "out", top_k=K, chunk_size=64, progress=False)
    assert summary.parts == 7 and summary.parts_written == 7 and summary.rows == 400
    got = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "out").glob("part-*.parquet"))])
    assert got.height == 400 * K
    assert got["user"].unique(maintain_order=True).to_list() == users[::-1]  # input order
    assert_same_ranking(got, users, expected)


def test_sequential_scores_match_torch_topk(seq_model, tmp_path):
    from engine_serving import load_model, run_job

    from .conftest import write_sequences

    seqs = write_sequences(tmp_path / "again.txt")  # the fixture's data, regenerated
    task, model = seq_model.task, seq_model.model
    max_len = task.model_cfg.max_len
    padded = torch.tensor([[0] * (max_len - len(s[-max_len:])) + s[-max_len:] for s in seqs])
    with torch.no_grad():
        scores = model.encoder.encode(padded) @ model.encoder.item_embeddings().T
    expected = naive_topk(scores, [set(s) for s in seqs], K, never={0})
    users = [101 + u for u in range(len(seqs))]

    pl.DataFrame({"user": users, "other": ["x"] * len(users)}).write_csv(tmp_path / "users.csv")
    served = load_model(str(seq_model.export), threads=1)
    assert served.family == "sequence"
    run_job(served, tmp_path / "users.csv", tmp_path / "out", top_k=K, chunk_size=40, progress=False)
    got = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "out").glob("part-*.parquet"))])
    assert got.height == len(users) * K
    assert 0 not in got["item"].to_list()  # padding is never an item
    assert_same_ranking(got, users, expected)


def test_score_chunk_is_pure_and_matches_the_job(graph_model, tmp_path):
    """``score_chunk`` (the unit a distributed runner calls) gives the part the job writes, and sub-batching the
    score matrix does not change it."""
    from engine_serving import load_model, run_job, score_chunk

    served = load_model(str(graph_model.export), threads=1)
    rows = pl.DataFrame({"user": [5, 3, 5, 399]})  # a repeated user is scored once per row
    whole = score_chunk(served, 0, rows, 7)
    tiny = score_chunk(served, 0, rows, 7, batch=1)
    assert whole.equals(tiny)
    assert whole.height == 4 * 7 and whole["user"].to_list() == [5] * 7 + [3] * 7 + [5] * 7 + [399] * 7
    rows.write_parquet(tmp_path / "in.parquet")
    run_job(served, tmp_path / "in.parquet", tmp_path / "out", top_k=7, chunk_size=10, progress=False)
    assert pl.read_parquet(tmp_path / "out" / "part-00000.parquet").equals(whole)


def test_fewer_unseen_items_than_k_gives_fewer_rows(graph_model):
    from engine_serving import load_model, score_chunk

    served = load_model(str(graph_model.export), threads=1)
    part = score_chunk(served, 0, pl.DataFrame({"user": [0]}), 500)
    seen = int(served.seen_indptr[1] - served.seen_indptr[0])
    assert part.height == served.num_items - len(set(served.seen_items[:seen].tolist()))
    assert part["rank"].to_list() == list(range(1, part.height + 1))
    assert part["score"].is_sorted(descending=True)


def test_masked_topk_against_a_loop():
    from engine_serving import masked_topk

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 30)).astype(np.float32)
    rows, cols = np.array([0, 0, 3, 5]), np.array([1, 2, 29, 0])
    got_c, got_v = masked_topk(scores.copy(), 5, rows, cols, np.array([7]))
    for r in range(6):
        banned = {7} | {int(c) for rr, c in zip(rows, cols) if rr == r}
        order = [j for j in np.argsort(-scores[r], kind="stable") if j not in banned][:5]
        assert got_c[r].tolist() == order
        np.testing.assert_array_equal(got_v[r], scores[r, order])
    c, v = masked_topk(np.zeros((1, 3), np.float32), 5, np.array([0]), np.array([1]))
    assert c[0, 2:].tolist() == [-1, -1, -1] and np.isneginf(v[0, 2:]).all()


@pytest.mark.parametrize("n, k", [(100, 5), (5000, 1), (5000, 20), (40981, 20), (64 * 80, 20), (6000, 100)])
def test_two_stage_topk_equals_torch_topk(n, k):
    """The block-maxima selection is exact: same values, same columns (wherever the value is finite), including
    rows that are mostly or entirely excluded."""
    from engine_serving.topk import _topk

    g = torch.Generator().manual_seed(n + k)
    scores = torch.randn(9, n, generator=g)
    scores[3] = -float("inf")
    scores[4, : n - 3] = -float("inf")  # three candidates, in the ragged tail
    scores[5, ::2] = -float("inf")
    want, got = torch.topk(scores, k, dim=1), _topk(scores, k)
    assert torch.equal(want.values, got[0])
    finite = torch.isfinite(want.values)
    assert torch.equal(want.indices[finite], got[1][finite])


def test_graph_export_marks_every_known_interaction_seen(graph_model):
    """The export's seen items are each user's train, valid and test items (each pair once), and none of them is
    ever recommended; before, only train items were excluded."""
    from engine_serving import load_model, score_chunk

    served = load_model(str(graph_model.export), threads=1)
    known = known_items(graph_model.task)
    d = graph_model.task.data
    assert d.valid is not None and d.valid.height and d.test.height
    for u in range(d.num_users):
        row = served.seen_items[served.seen_indptr[u]:served.seen_indptr[u + 1]].tolist()
        assert row == sorted(known[u]), u  # sorted, no duplicate
    held_out = [(u, i) for u, i in zip(d.test["user"].to_list(), d.test["item"].to_list())][:50]
    users = sorted({u for u, _ in held_out})
    everything = score_chunk(served, 0, pl.DataFrame({"user": users}), served.num_items)
    recommended = set(zip(everything["user"].to_list(), everything["item"].to_list()))
    assert not recommended & set(held_out)
    assert everything.height == sum(served.num_items - len(known[u]) for u in users)
    kept = score_chunk(served, 0, pl.DataFrame({"user": users}), served.num_items, exclude_seen=False)
    assert set(held_out) <= set(zip(kept["user"].to_list(), kept["item"].to_list()))
