"""TF-IDF similarity, pair features and sparse blocking against hand-computed values and a naive float64
reference (term counts x smoothed idf, L2 rows, dot products written out in Python)."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from engine_linkage.blocking import knn_candidates, sparse_knn_candidates, union_candidates  # noqa: E402
from engine_linkage.model import PairClassifier  # noqa: E402
from engine_linkage.tfidf import TfidfPairFeatures, TfidfSimilarity, pair_cosine, record_texts  # noqa: E402


def _terms(text: str, analyzer: str) -> list[str]:
    text = text.lower()
    if analyzer == "word":
        return re.findall(r"\b\w+\b", text)
    grams = []
    for w in text.split():
        w = f" {w} "
        grams += [w[i:i + 3] for i in range(len(w) - 2)]
    return grams


def _naive_cosines(corpus: list[str], a: list[str], b: list[str], analyzer: str) -> list[float]:
    n = len(corpus)
    df = Counter(t for doc in corpus for t in set(_terms(doc, analyzer)))
    idf = {t: math.log((1 + n) / (1 + d)) + 1 for t, d in df.items()}

    def vec(text):
        v = {t: c * idf[t] for t, c in Counter(_terms(text, analyzer)).items() if t in idf}
        norm = math.sqrt(sum(x * x for x in v.values()))
        return {t: x / norm for t, x in v.items()} if norm else {}

    out = []
    for x, y in zip(a, b):
        vx, vy = vec(x), vec(y)
        out.append(sum(w * vy.get(t, 0.0) for t, w in vx.items()))
    return out


LEFT = {"name": ["Sony TV", "Apple iPod", None], "brand": ["sony", None, "apple"]}
RIGHT = {"name": ["sony tv 40", "ipod", "Sony TV"], "brand": [None, "apple", "sony"]}


def test_record_texts_join_present_values():
    assert record_texts(LEFT) == ["Sony TV sony", "Apple iPod", "apple"]
    assert record_texts(RIGHT, ["name"]) == ["sony tv 40", "ipod", "Sony TV"]


def test_word_cosine_by_hand():
    """Corpus of 4 records: df(sony)=df(tv)=df(ipod)=2, df(apple)=df(40)=1, so idf2 = ln(5/3)+1, idf1 = ln(5/2)+1.
    cos("sony tv", "sony tv 40") = sqrt(2) idf2 / sqrt(2 idf2^2 + idf1^2); cos("apple ipod", "ipod") =
    idf2 / sqrt(idf1^2 + idf2^2); cos("sony tv", "ipod") = 0."""
    left, right = ["Sony TV", "Apple iPod"], ["sony tv 40", "ipod"]
    sim = TfidfSimilarity("word").fit(left + right)
    lm, rm = sim.transform(left), sim.transform(right)
    got = pair_cosine(lm, rm, np.array([0, 1, 0]), np.array([0, 1, 1]))
    i2, i1 = math.log(5 / 3) + 1, math.log(5 / 2) + 1
    want = [math.sqrt(2) * i2 / math.sqrt(2 * i2 ** 2 + i1 ** 2), i2 / math.sqrt(i1 ** 2 + i2 ** 2), 0.0]
    assert np.allclose(got, want, atol=1e-12)
    assert np.allclose(got, [0.744450, 0.619130, 0.0], atol=1e-6)  # the same, as numbers


@pytest.mark.parametrize("analyzer", ["word", "char"])
def test_cosines_match_the_naive_reference(analyzer):
    corpus = ["Sony Bravia KDL-40 40in LCD TV", "sony kdl40 lcd tv", "Apple iPod nano 8GB", "ipod nano 8 gb silver",
              "Canon EOS 5D", "a"]
    a, b = corpus[:3] + ["a", "zzz unseen"], corpus[1:4] + ["canon eos", "a"]
    sim = TfidfSimilarity(analyzer).fit(corpus)
    got = pair_cosine(sim.transform(a), sim.transform(b), np.arange(len(a)), np.arange(len(b)))
    assert np.allclose(got, _naive_cosines(corpus, a, b, analyzer), atol=1e-12)


def test_pair_features_scopes_and_dedup():
    feats = TfidfPairFeatures(LEFT, RIGHT, ["name", "brand"], ["word"], per_field=["name", "brand"])
    assert feats.names == ["tfidf_word_record", "tfidf_word_name", "tfidf_word_brand"]
    li, ri = np.array([0, 0, 1, 2]), np.array([2, 0, 1, 1])
    got = feats(li, ri)
    assert got.dtype == np.float32 and got.shape == (4, 3)
    lt, rt = record_texts(LEFT), record_texts(RIGHT)
    want_record = _naive_cosines(lt + rt, [lt[i] for i in li], [rt[j] for j in ri], "word")
    assert np.allclose(got[:, 0], want_record, atol=1e-6)
    assert got[0].tolist() == pytest.approx([1.0, 1.0, 1.0])  # "Sony TV sony" twice: identical in every scope
    names = [t for t in record_texts(LEFT, ["name"]) + record_texts(RIGHT, ["name"]) if t]  # idf: present values
    assert got[1, 1] == pytest.approx(_naive_cosines(names, ["Sony TV"], ["sony tv 40"], "word")[0], abs=1e-6)
    assert got[1, 2] == 0.0 and got[2, 1] == pytest.approx(_naive_cosines(names, ["Apple iPod"], ["ipod"],
                                                                           "word")[0], abs=1e-6)
    assert got[3, 1] == 0.0  # a missing name: cosine 0
    one = TfidfPairFeatures(LEFT, None, ["name", "brand"], ["char"])  # dedup: the left table on both sides
    assert one(np.array([0]), np.array([0]))[0, 0] == pytest.approx(1.0)


def test_sparse_blocking_equals_dense_exact_search():
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(["sony", "tv", "ipod", "nano", "canon", "eos", "40", "8gb"], 3)) for _ in range(30)]
    sim = TfidfSimilarity("word").fit(docs)
    lm, rm = sim.transform(docs[:12]), sim.transform(docs[12:])
    li, ri = sparse_knn_candidates(lm, rm, k=3, chunk=5)
    dense = (lm @ rm.T).toarray()
    want = set()
    for i in range(12):
        order = np.argsort(-dense[i], kind="stable")[:3]
        want |= {(i, int(j)) for j in order if dense[i, j] > 0}
    assert set(zip(li.tolist(), ri.tolist())) == want
    # dedup: never (i, i), each pair once as i < j, k others per record
    di, dj = sparse_knn_candidates(lm, None, k=2)
    assert (di < dj).all() and len(set(zip(di.tolist(), dj.tolist()))) == di.size
    u = union_candidates((np.array([0, 1]), np.array([1, 2])), (np.array([1, 0]), np.array([2, 3])))
    assert list(zip(*map(list, u))) == [(0, 1), (0, 3), (1, 2)]
    vi, vj = knn_candidates(lm.toarray().astype(np.float32), rm.toarray().astype(np.float32), 3)
    assert vi.size == 36  # the faiss path is unchanged: k per left record


def test_classifier_takes_tfidf_features():
    torch.manual_seed(0)
    clf = PairClassifier(num_fields=2, dim=4, num_jaccard=1, num_pair_features=3)
    fl, fr = torch.randn(5, 2, 4), torch.randn(5, 2, 4)
    m = torch.ones(5, 2, dtype=torch.bool)
    u, v = torch.randn(5, 4), torch.randn(5, 4)
    out = clf(fl, m, fr, m, u, v, torch.rand(5, 1), torch.rand(5, 3))
    assert out.shape == (5,) and clf.mlp[0].in_features == 3 * 2 + 1 + 3 + 1
    with pytest.raises(ValueError, match="built for 3 pair features, got none"):
        clf(fl, m, fr, m, u, v, torch.rand(5, 1))


def test_classifier_without_learned_features_ignores_the_encoder():
    """``learned_features=False``: the logit depends on presence, Jaccard and TF-IDF only (not on the field or record
    vectors), and its input width is 2 F + J + T."""
    torch.manual_seed(0)
    clf = PairClassifier(num_fields=2, dim=4, num_jaccard=1, num_pair_features=3, learned_features=False)
    assert clf.mlp[0].in_features == 2 * 2 + 1 + 3
    m = torch.tensor([[True, True], [True, False], [False, True]])
    jac, tf = torch.rand(3, 1), torch.rand(3, 3)
    a = clf(torch.randn(3, 2, 4), m, torch.randn(3, 2, 4), m, torch.randn(3, 4), torch.randn(3, 4), jac, tf)
    b = clf(torch.randn(3, 2, 4), m, torch.randn(3, 2, 4), m, torch.randn(3, 4), torch.randn(3, 4), jac, tf)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="vector_features are learned features"):
        PairClassifier(2, 4, vector_features=True, learned_features=False)
    from engine_linkage.config import RerankConfig

    with pytest.raises(ValueError, match="vector_features are learned features"):
        RerankConfig(vector_features=True, learned_features=False)


def test_tfidf_fallback_needs_tfidf_features():
    from engine_linkage.config import RerankConfig

    assert RerankConfig(tfidf=["word"], tfidf_fallback=True).tfidf_fallback
    with pytest.raises(ValueError, match="tfidf_fallback scores by a TF-IDF cosine: set tfidf"):
        RerankConfig(tfidf_fallback=True)
