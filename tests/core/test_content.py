"""Item content: ``content_knn`` against brute-force TF-IDF cosines computed with numpy, ``orthogonality`` against a
loop, ``ItemContent`` against a per-item float64 fusion, and ``load_item_content`` (features + cold items)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
import torch

from engine.content import ContentConfig, ItemContent, content_knn, load_item_content, orthogonality
from engine.data import InteractionData
from engine.data.item_features import ItemFeatures
from engine.errors import ConfigError
from engine.fields import FieldFeatures, FieldSlot

# -- brute-force references ------------------------------------------------------------------------------------------


def tfidf_cosines(block: np.ndarray) -> np.ndarray:
    """Rows of token ids (0 = padding) -> cosine matrix of their L2-normalised TF-IDF vectors: binary tf,
    idf = ln((1 + N) / (1 + df)) + 1 (smooth idf), vocabulary = the ids present in any row."""
    n = block.shape[0]
    vocab = sorted({int(t) for t in block.reshape(-1) if t > 0})
    tf = np.zeros((n, len(vocab)))
    for r in range(n):
        for t in set(int(x) for x in block[r] if x > 0):
            tf[r, vocab.index(t)] = 1.0
    idf = np.log((1 + n) / (1 + tf.sum(0))) + 1.0
    w = tf * idf
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    w = np.divide(w, norms, out=np.zeros_like(w), where=norms > 0)
    return w @ w.T


def vector_cosines(block: np.ndarray) -> np.ndarray:
    v = block[:, :-1].astype(np.float64)  # the last column is the present flag
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    return v @ v.T


def brute_similarity(features: FieldFeatures) -> np.ndarray:
    """Mean over the id fields and the vector fields (width > 2; numbers are left out) of the cosines."""
    mats = []
    for s in features.slots:
        if s.kind == "ids":
            mats.append(tfidf_cosines(features.ids[:, s.offset:s.offset + s.width]))
        elif s.width > 2:
            mats.append(vector_cosines(features.values[:, s.offset:s.offset + s.width]))
    return sum(mats) / len(mats)


def make_features(seed=0, n=14) -> FieldFeatures:
    """Two id fields (genres: up to 3 of 6 tokens, repeats and missing rows; tags: up to 2 of 20 ids, hashed-like
    large values), a pretrained-vector field (3 dims + present) and a numeric field (value, present)."""
    rng = np.random.default_rng(seed)
    genres = np.zeros((n, 3), np.int64)
    for r in range(n):
        if r % 5 != 4:  # every fifth item has no genre
            toks = rng.choice([11, 12, 13, 14, 15, 16], rng.integers(1, 4))  # repeats allowed: tf is binary
            genres[r, :len(toks)] = toks
    tags = np.zeros((n, 2), np.int64)
    for r in range(n):
        toks = rng.choice(np.arange(1000, 1020), rng.integers(0, 3), replace=False)
        tags[r, :len(toks)] = toks
    vec = np.zeros((n, 4), np.float32)
    vec[:, :3] = rng.standard_normal((n, 3))
    vec[:, 3] = 1.0
    vec[2] = 0.0  # item 2 has no text: a zero vector, absent
    num = np.stack([rng.standard_normal(n), np.ones(n)], 1).astype(np.float32)
    slots = [FieldSlot("genres", "multi_categorical", "multi_categorical", "ids", 0, 3),
             FieldSlot("tags", "multi_categorical", "multi_categorical", "ids", 3, 2),
             FieldSlot("title", "text", "sentence", "values", 0, 4),
             FieldSlot("year", "numeric", "numeric", "values", 4, 2)]
    return FieldFeatures(slots, np.concatenate([genres, tags], 1), np.concatenate([vec, num], 1))


# -- content_knn -----------------------------------------------------------------------------------------------------


def check_knn(features, k, candidates, nbr, sim):
    s = brute_similarity(features)
    n = features.ids.shape[0]
    cand = [int(c) for c in candidates]
    kk = min(k, len(cand) - 1)
    assert nbr.shape == sim.shape == (n, kk) and nbr.dtype == torch.long
    for row in range(n):
        allowed = [c for c in cand if c != row]
        best = sorted((s[row, c] for c in allowed), reverse=True)[:kk]
        got = nbr[row].tolist()
        assert len(set(got)) == kk and set(got) <= set(allowed), row  # distinct candidates, never itself
        np.testing.assert_allclose(sim[row].numpy(), best, atol=1e-5)  # the k best similarities, best first
        np.testing.assert_allclose(sim[row].numpy(), [s[row, c] for c in got], atol=1e-5)  # of these neighbours


@pytest.mark.parametrize("seed, k", list(itertools.product(range(3), [1, 3, 50])))
def test_content_knn_matches_brute_force_cosines(seed, k):
    features = make_features(seed)
    candidates = np.arange(14)
    nbr, sim = content_knn(features, k, candidates)
    check_knn(features, k, candidates, nbr, sim)


@pytest.mark.parametrize("chunk", [1, 4, 512])
def test_content_knn_among_candidates_only(chunk):
    features = make_features(5)
    warm = np.array([0, 1, 3, 4, 6, 9, 10, 13])
    nbr, sim = content_knn(features, 4, warm, chunk=chunk)
    check_knn(features, 4, warm, nbr, sim)
    assert set(nbr.reshape(-1).tolist()) <= set(warm.tolist())  # cold items are rows, never neighbours
    ref_nbr, ref_sim = content_knn(features, 4, warm)
    assert torch.allclose(sim, ref_sim)


def test_content_knn_hand_computed():
    """Three items, one id field: {a, b}, {a}, {c}; N = 3, df(a) = 2, df(b) = df(c) = 1.

    idf(a) = ln(4/3) + 1, idf(b) = ln(2) + 1: cos(0, 1) = idf(a) / sqrt(idf(a)^2 + idf(b)^2); item 2 shares nothing.
    """
    slots = [FieldSlot("g", "multi_categorical", "multi_categorical", "ids", 0, 2)]
    features = FieldFeatures(slots, np.array([[5, 7], [5, 0], [9, 0]]), np.zeros((3, 0), np.float32))
    nbr, sim = content_knn(features, 1, np.arange(3))
    ia, ib = math.log(4 / 3) + 1, math.log(2) + 1
    cos01 = ia / math.sqrt(ia ** 2 + ib ** 2)
    assert nbr[:2, 0].tolist() == [1, 0]
    assert sim[:2, 0].tolist() == pytest.approx([cos01, cos01], abs=1e-6)
    assert sim[2, 0].item() == 0.0  # nothing shared: similarity 0 with whichever neighbour


def test_content_knn_ignores_numbers():
    """A numeric field (width 2) takes no part: with a numeric field added the similarities are unchanged."""
    base = make_features(1)
    slots = [s for s in base.slots if s.name != "year"]
    without = FieldFeatures(slots, base.ids, base.values[:, :4])
    a = content_knn(base, 3, np.arange(14))
    b = content_knn(without, 3, np.arange(14))
    assert torch.allclose(a[1], b[1])


# -- orthogonality ---------------------------------------------------------------------------------------------------


def test_orthogonality_matches_a_loop():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    an = [a[r] / a[r].norm() for r in range(6)]
    bn = [b[r] / b[r].norm() for r in range(6)]
    want = sum(float(sum(an[r][p] * bn[r][q] for r in range(6))) ** 2 for p in range(4) for q in range(4)) / 6
    assert orthogonality(a, b).item() == pytest.approx(want, rel=1e-12)
    # rows are normalised: scaling a row changes nothing; orthogonal parts give 0
    assert orthogonality(a * 3.0, b).item() == pytest.approx(want, rel=1e-12)
    e = torch.eye(4, dtype=torch.float64)
    assert orthogonality(e[:, :2] @ torch.ones(2, 2, dtype=torch.float64), e[:, 2:] @ torch.ones(2, 2,
                                                                                               dtype=torch.float64)) \
        == 0.0


# -- ItemContent -----------------------------------------------------------------------------------------------------


def item_features(num_items=6) -> ItemFeatures:
    genres = ["Action|Comedy", "Drama", None, "comedy", "Action Drama War", None][:num_items]
    years = ["1995", "1979", "2001", None, "1995", None][:num_items]
    has_row = np.array([True, True, True, True, True, False])[:num_items]
    return ItemFeatures("items.csv", {"genres": "multi_categorical", "year": "numeric"},
                        {"genres": genres, "year": years}, has_row)


@pytest.mark.parametrize("split", [False, True])
def test_item_content_equals_a_per_item_mean_fusion(linkage_plugins, split):
    from engine.plugins import get_registry

    torch.manual_seed(1)
    cfg = ContentConfig(fusion="mean", split={"orth_weight": 0.5} if split else None)
    content = ItemContent.build(get_registry(), cfg, item_features(), out_dim=3, dim=5).double()
    assert content.num_items == 6 and [s.name for s in content.features.slots] == ["genres", "year"]
    enc = content.encoder.encoders
    out = content()
    assert out.shape == (6, 3)
    shared, specific = content.parts()
    assert (specific is not None) == split
    for item in range(6):
        vecs = []
        for s in content.features.slots:
            x = torch.from_numpy(content.features.ids if s.kind == "ids" else content.features.values)
            x = x[item:item + 1, s.offset:s.offset + s.width]
            v, present = enc[s.encoder](x.double() if s.kind == "values" else x)
            if bool(present[0]):
                vecs.append(v[0] / v[0].norm())
        fused = sum(vecs) / len(vecs) if vecs else torch.zeros(5, dtype=torch.float64)
        fused = fused / fused.norm() if vecs else fused
        want = content.head(fused)
        if split:
            assert torch.allclose(specific[item], content.specific(fused), atol=1e-10)
            want = want + content.specific(fused)
        assert torch.allclose(out[item], want, atol=1e-10), item
    # item 5 has no row: no field present, so its content is the head's bias alone
    assert torch.allclose(shared[5], content.head.bias, atol=1e-12)
    # rows of a subset equal the subset of the rows
    items = torch.tensor([4, 0, 4])
    assert torch.allclose(content(items), out[items], atol=1e-12)


def test_item_content_fits_numbers_on_every_item(linkage_plugins):
    from engine.plugins import get_registry

    content = ItemContent.build(get_registry(), ContentConfig(), item_features(), out_dim=4)
    numeric = content.encoder.encoders["numeric"]
    logs = np.log1p([1995, 1979, 2001, 1995])
    assert float(numeric.mean) == pytest.approx(logs.mean(), rel=1e-5)
    assert content.head.in_features == content.head.out_features == 4  # dim defaults to out_dim
    assert content.specific is None and content.encoder.fusion == "attention"
    assert not dict(content.named_buffers(recurse=False)).keys() & set(content.state_dict())  # inputs not saved


# -- load_item_content -----------------------------------------------------------------------------------------------


def interactions() -> InteractionData:
    rng = np.random.default_rng(0)
    rows = [(u, int(i)) for u in range(8) for i in rng.choice(10, 5, replace=False)]
    train = pl.DataFrame(rows[::2], schema={"user": pl.Int64, "item": pl.Int64}, orient="row")
    test = pl.DataFrame(rows[1::2], schema={"user": pl.Int64, "item": pl.Int64}, orient="row")
    return InteractionData(train, None, test, 8, 10)


def data_spec(tmp_path, **extra):
    from engine.config import DataSpec

    return DataSpec.model_validate({"source": "lightgcn_txt", "path": str(tmp_path), **extra})


def test_load_item_content(tmp_path):
    data = interactions()
    # items 0..7 have a row, 8 and 9 none: only items with content can be cold
    (tmp_path / "items.item").write_text("item_id:token\tgenre:token\n" + "".join(f"{i}\tg{i % 3}\n"
                                                                                  for i in range(8)))
    spec = data_spec(tmp_path, item_features={}, cold_items={"ratio": 0.25, "seed": 3})
    out, features, cold = load_item_content(spec, data)
    assert features.path == str(tmp_path / "items.item") and features.has_row.tolist() == [True] * 8 + [False] * 2
    assert cold.all.size == 2 and set(cold.all.tolist()) <= set(range(8))
    assert not set(out.train["item"].to_list()) & set(cold.all.tolist())
    assert out.train.height + out.test.height == data.train.height + data.test.height

    same, features, cold = load_item_content(data_spec(tmp_path, item_features={}), data)
    assert same is data and cold is None and features.fields == {"genre": "categorical"}
    same, features, cold = load_item_content(data_spec(tmp_path), data)
    assert (same, features, cold) == (data, None, None)


def test_cold_items_need_item_features(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.cold_items: needs data\.item_features"):
        load_item_content(data_spec(tmp_path, cold_items={"ratio": 0.2}), interactions())


def test_only_items_with_content_can_be_cold(tmp_path):
    import json

    data = interactions()
    # items 0..7 have a row, but only 0 and 1 have any attribute
    (tmp_path / "x_item2attributes.json").write_text(json.dumps({str(i): ([i] if i < 2 else []) for i in range(8)}))
    _, features, cold = load_item_content(data_spec(tmp_path, item_features={}, cold_items={"ratio": 0.5}), data)
    with_content = {i for i, v in enumerate(features.columns["attributes"]) if v is not None}
    assert with_content == {0, 1}
    assert set(cold.all.tolist()) <= with_content


def test_content_config_defaults():
    cfg = ContentConfig()
    assert (cfg.fusion, cfg.input, cfg.rec_weight, cfg.split, cfg.item_graph) == ("attention", True, 1.0, None, None)
    assert cfg.align.name == "infonce" and cfg.align.weight == 0.1 and cfg.align.options == {"temperature": 0.2}
    assert ContentConfig(item_graph={}).item_graph.k == 10
    with pytest.raises(Exception):
        ContentConfig(fusion="sum")
