"""``--index faiss``: top-k from a faiss inner-product index with seen items excluded by over-fetching, against the
exact path (``masked_topk``) and a naive loop; the flat index is exact, IVF with every cell probed too."""

from __future__ import annotations

import itertools
import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from engine.cli import cli


def naive(queries, items, k, banned_pairs, invalid):
    """Per row, in float64: every column not banned, sorted by inner product, first k."""
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    out = []
    for r, row in enumerate(scores):
        order = [j for j in np.argsort(-row, kind="stable") if j not in invalid and (r, j) not in banned_pairs]
        out.append([(int(j), float(row[j])) for j in order[:k]])
    return out


def check_against_naive(cols, vals, reference, k, tol=1e-5):
    for r, want in enumerate(reference):
        got = [(int(c), float(v)) for c, v in zip(cols[r], vals[r]) if c >= 0]
        assert len(got) == len(want), r
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], atol=tol)
        for (gc, gv), (wc, wv) in zip(got, want):
            assert gc == wc or abs(gv - wv) < tol, (r, gc, wc)  # a swap only between near-ties
        assert (cols[r, len(want):] == -1).all() and np.isneginf(vals[r, len(want):]).all()


@pytest.mark.parametrize("n, k, heavy, ivf", list(itertools.product([50, 700], [1, 10], [False, True],
                                                                        [False, True])))
def test_faiss_topk_equals_naive(n, k, heavy, ivf):
    """Seen items per row from 0 to all-but-3 (``heavy``) or to all of them, plus invalid columns."""
    from engine_serving import FaissTopK, masked_topk

    rng = np.random.default_rng(n + k)
    d, b = 8, 40
    items = rng.standard_normal((n, d)).astype(np.float32)
    queries = rng.standard_normal((b, d)).astype(np.float32)
    invalid = np.array([0, n - 1])
    rows, cols = [], []
    for r in range(b):
        m = int(rng.integers(0, 6)) if not heavy else [0, 3, n - 5, n][r % 4]
        picked = rng.choice(n, size=min(m, n), replace=False)
        rows += [r] * picked.size
        cols += picked.tolist()
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    banned = set(zip(rows.tolist(), cols.tolist()))
    reference = naive(queries, items, k, banned, set(invalid.tolist()))
    options = {"ivf_min_items": 0, "nlist": 8, "nprobe": 8} if ivf else {}  # every cell probed: exact
    index = FaissTopK(items, invalid, threads=1, **options)
    assert index.kind == ("IVFFlat(nlist=8, nprobe=8)" if ivf else "FlatIP")
    got_c, got_v = index.search(queries, k, rows, cols, batch=7)
    check_against_naive(got_c, got_v, reference, k)
    exact_c, exact_v = masked_topk(queries @ items.T, k, rows, cols, invalid)
    np.testing.assert_allclose(got_v, exact_v, atol=1e-5)


def test_ivf_with_few_cells_probed_is_approximate_but_consistent():
    """nprobe < nlist may miss neighbours, but what it returns is sorted, never excluded, with true scores."""
    from engine_serving import FaissTopK

    rng = np.random.default_rng(0)
    items = rng.standard_normal((3000, 16)).astype(np.float32)
    queries = rng.standard_normal((64, 16)).astype(np.float32)
    rows = np.repeat(np.arange(64), 5)
    cols = rng.integers(0, 3000, rows.size)
    index = FaissTopK(items, np.array([7]), ivf_min_items=1000, nprobe=4, threads=1)
    assert index.nlist == int(4 * 3000 ** 0.5) and index.nprobe == 4
    got_c, got_v = index.search(queries, 20, rows, cols)
    banned = set(zip(rows.tolist(), cols.tolist()))
    exact = naive(queries, items, 20, banned, {7})
    recall = []
    for r in range(64):
        keep = got_c[r] >= 0
        assert not any((r, int(c)) in banned or c == 7 for c in got_c[r][keep])
        np.testing.assert_allclose(got_v[r][keep], queries[r] @ items[got_c[r][keep]].T, atol=1e-4)
        assert np.all(np.diff(got_v[r][keep]) <= 1e-6)
        recall.append(len(set(got_c[r][keep].tolist()) & {j for j, _ in exact[r]}) / 20)
    assert 0.2 < np.mean(recall) <= 1.0  # approximate; the figure is the benchmark's business


@pytest.mark.parametrize("which", ["graph_model", "seq_model"])
def test_score_job_with_faiss_equals_exact(which, request, tmp_path):
    from engine_serving import load_model, run_job

    trained = request.getfixturevalue(which)
    users = pl.read_parquet(trained.export / "users.parquet")["user"]
    pl.DataFrame({"user": users}).write_parquet(tmp_path / "in.parquet")
    exact = load_model(str(trained.export), threads=1)
    fast = load_model(str(trained.export), threads=1)
    assert fast.use_faiss() == "FlatIP" and fast.index_kind == "faiss FlatIP"
    run_job(exact, tmp_path / "in.parquet", tmp_path / "exact", top_k=10, chunk_size=64, progress=False)
    run_job(fast, tmp_path / "in.parquet", tmp_path / "faiss", top_k=10, chunk_size=64, progress=False)
    a = pl.read_parquet(sorted((tmp_path / "exact").glob("part-*.parquet")))
    b = pl.read_parquet(sorted((tmp_path / "faiss").glob("part-*.parquet")))
    assert a.height == b.height == users.len() * 10
    assert a.select("user", "rank").equals(b.select("user", "rank"))
    np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), atol=1e-5)
    differ = (a["item"] != b["item"]).to_numpy()
    assert differ.mean() < 0.01  # only near-ties may swap
    scores = a["score"].to_numpy()
    near_tie = np.zeros_like(differ)
    near_tie[:-1] |= np.abs(np.diff(scores)) < 1e-5
    near_tie[1:] |= np.abs(np.diff(scores)) < 1e-5
    assert not (differ & ~near_tie).any()
    if which == "seq_model":
        assert 0 not in b["item"].to_list()  # the padding column is never recommended


def test_engine_score_index_option(graph_model, tmp_path):
    pl.DataFrame({"user": [0, 1, 2, 3]}).write_csv(tmp_path / "in.csv")

    def score(out, *extra):
        return CliRunner().invoke(cli, ["score", "--model", str(graph_model.export), "--input",
                                        str(tmp_path / "in.csv"), "--output", str(tmp_path / out), "--top-k", "5",
                                        "--threads", "1", *extra])

    result = score("f", "--index", "faiss")
    assert result.exit_code == 0, result.output
    assert "top-k by faiss FlatIP" in result.output
    assert json.loads((tmp_path / "f" / "_job.json").read_text())["index"] == "faiss FlatIP"
    assert score("e").exit_code == 0
    a, b = (pl.read_parquet(tmp_path / name / "part-00000.parquet") for name in ("e", "f"))
    np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), atol=1e-5)
    mixed = score("f")  # the same directory, another index: refused, not mixed in
    assert mixed.exit_code == 2 and "another scoring job" in mixed.output and "index" in mixed.output


def test_faiss_on_an_export_without_embeddings_says_export_again(graph_model, tmp_path):
    import shutil

    from engine_serving import ModelError, load_model

    old = tmp_path / "old"
    shutil.copytree(graph_model.export, old)
    meta = json.loads((old / "export.json").read_text())
    for key in ("user_embeddings", "item_embeddings"):
        meta["serving"].pop(key)
        (old / f"{key}.npy").unlink()
    (old / "export.json").write_text(json.dumps(meta))
    model = load_model(str(old), threads=1)  # the exact path still works
    with pytest.raises(ModelError, match="user_embeddings.npy and item_embeddings.npy.*export the model again"):
        model.use_faiss()
