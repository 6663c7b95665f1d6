"""Typed-span pair features against hand-computed examples and a naive reference; the pair-feature block's state
rebuilds the same features (TF-IDF vocabularies and idf, spans) over new records, as serving does."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine_linkage.pair_features import PairFeatures
from engine_linkage.spans import SpanPairFeatures, codes, numbers, record_spans, squash
from engine_linkage.tfidf import TfidfPairFeatures, TfidfSimilarity

pytest.importorskip("sklearn")

LEFT = {"name": ["netgear prosafe fs105 switch", "sony turntable ps-lx350h", "bose speaker", None],
        "price": ["49.0", "100", None, "12"]}
RIGHT = {"name": ["netgear fs105na 5 port 10/100 switch", "sony pslx350h belt drive 33-1/3 rpm", "bose am53bk", ""],
         "price": ["50", "abc", "399.0", "0"]}


def test_codes_numbers_and_squash_by_hand():
    assert codes("Sony PS-LX350H turntable, 10/100 s-video kdl-40v4100 802.11g") == {"pslx350h", "kdl40v4100",
                                                                                      "80211g"}
    assert codes("a1b x9 ab12") == {"ab12"}  # at least 4 characters, a letter and a digit
    assert numbers("33-1/3 rpm, 2.5 in, 100") == {"33", "1", "3", "2.5", "100"}
    assert squash("FS105 na-2") == "fs105na2"


def test_span_features_by_hand():
    f = SpanPairFeatures(LEFT, RIGHT, ["name"], ["price"])
    assert f.names == ["span_code_shared", "span_code_left_in_right", "span_code_right_in_left", "span_code_prefix",
                       "span_code_both", "span_code_one", "span_number_jaccard", "span_number_both",
                       "span_price_reldiff", "span_price_both"]
    x = f([0, 1, 2, 3, 0], [0, 1, 2, 3, 1])
    assert x.dtype == np.float32 and x.shape == (5, 10)
    # fs105 vs fs105na: not shared, fs105 inside "netgearfs105na5port10100switch", prefix 5/7; numbers {105} vs
    # {105, 5, 10, 100}: 1/4; price |49 - 50| / 50
    np.testing.assert_allclose(x[0], [0, 1, 0, 5 / 7, 1, 0, 1 / 4, 1, 1 / 50, 1], rtol=1e-6)
    # pslx350h on both sides (the left's ps-lx350h squashed): shared, contained both ways; price "abc" unparsed
    np.testing.assert_allclose(x[1], [1, 1, 1, 1, 1, 0, 1 / 4, 1, 0, 0], rtol=1e-6)  # {350} vs {350, 33, 1, 3}
    # only the right has a code; no left number; price |nan| -> not both
    np.testing.assert_allclose(x[2], [0, 0, 0, 0, 0, 1, 0, 0, 0, 0])
    # empty texts on both sides; prices 12 and 0: relative difference 1
    np.testing.assert_allclose(x[3], [0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    # fs105 vs pslx350h: common prefix 0
    assert x[4, 3] == 0 and x[4, 4] == 1


def _naive(a: str, b: str) -> list[float]:
    ca, cb, na, nb = codes(a), codes(b), numbers(a), numbers(b)
    sa, sb = squash(a), squash(b)

    def prefix(p, q):
        n = next((i for i, (x, y) in enumerate(zip(p, q)) if x != y), min(len(p), len(q)))
        return n / max(len(p), len(q))

    return [float(len(ca & cb) > 0), np.mean([c in sb for c in ca]) if ca else 0.0,
            np.mean([c in sa for c in cb]) if cb else 0.0,
            max((prefix(p, q) for p in ca for q in cb), default=0.0), float(bool(ca and cb)),
            float(bool(ca) ^ bool(cb)), len(na & nb) / len(na | nb) if na | nb else 0.0, float(bool(na and nb))]


def test_span_features_equal_a_naive_reference():
    rng = np.random.default_rng(0)
    words = ["ab12", "ab123", "x-100", "100", "2.5", "kdl-40v", "kdl40v4100", "tv", "sony", "12ab", "4"]
    left = {"t": [" ".join(rng.choice(words, rng.integers(0, 5))) for _ in range(30)]}
    right = {"t": [" ".join(rng.choice(words, rng.integers(0, 5))) for _ in range(25)]}
    f = SpanPairFeatures(left, right, ["t"])
    li, ri = rng.integers(0, 30, 200), rng.integers(0, 25, 200)
    want = np.array([_naive(left["t"][i], right["t"][j]) for i, j in zip(li, ri)])
    np.testing.assert_allclose(f(li, ri), want, rtol=1e-6)
    one = SpanPairFeatures(left, None, ["t"])  # dedup: the left table on both sides
    np.testing.assert_allclose(one(li, li[::-1]), [_naive(left["t"][i], left["t"][j]) for i, j in zip(li, li[::-1])],
                               rtol=1e-6)
    assert record_spans(left, ["t"]).numeric == {}


def test_tfidf_state_roundtrip():
    corpus = ["sony turntable pslx350h", "bose speaker am53bk", "netgear switch fs105"]
    for analyzer in ("word", "char"):
        sim = TfidfSimilarity(analyzer).fit(corpus)
        again = TfidfSimilarity.from_state(json.loads(json.dumps(sim.state())))
        probe = ["sony pslx350h belt", "unknown words only", ""]
        assert abs(again.transform(probe) - sim.transform(probe)).max() == 0
    bad = TfidfSimilarity("word").fit(corpus).state()
    bad["idf"] = bad["idf"][:-1]
    with pytest.raises(ValueError, match="terms but"):
        TfidfSimilarity.from_state(bad)


def test_pair_features_state_rebuilds_the_same_features_for_new_records():
    """Fitted on both tables; rebuilt from the JSON state over the right table with the left records passed as new
    ones (serving), the features of every pair are identical."""
    tfidf = TfidfPairFeatures(LEFT, RIGHT, ["name", "price"], ["word", "char"], per_field=["name"])
    fit = PairFeatures({"tfidf": tfidf, "spans": SpanPairFeatures(LEFT, RIGHT, ["name", "price"], ["price"])})
    assert fit.width == 4 + 10 and fit.names[:2] == ["tfidf_word_record", "tfidf_char_record"]
    served = PairFeatures.from_state(json.loads(json.dumps(fit.state())), RIGHT).with_left(LEFT)
    li, ri = np.repeat(np.arange(4), 4), np.tile(np.arange(4), 4)
    np.testing.assert_array_equal(served(li, ri), fit(li, ri))
    # one new record against the right table
    new = served.with_left({"name": ["netgear fs105"], "price": ["50"]})(np.zeros(4, np.int64), np.arange(4))
    assert new.shape == (4, 14) and new[0, fit.names.index("span_code_left_in_right")] == 1
    state = fit.state()
    state["names"] = state["names"][:-1]
    with pytest.raises(ValueError, match="the export names"):
        PairFeatures.from_state(state, RIGHT)
    with pytest.raises(ValueError, match="unknown part"):
        PairFeatures.from_state({"parts": [{"kind": "bm25"}], "names": []}, RIGHT)


def test_per_field_spans_are_each_fields_own():
    left = {"title": ["sony tv kdl-40v4100", "bose am53bk"], "modelno": ["kdl40v4100", None], "price": ["10", "5"]}
    right = {"title": ["sony bravia 40 inch", "bose speaker am53bk"], "modelno": ["kdl-40v4100", "am53bk"],
             "price": ["12", "5"]}
    f = SpanPairFeatures(left, right, ["title", "modelno", "price"], ["price"], per_field=["title", "modelno"])
    assert f.width == 3 * 8 + 2 and f.names[8] == "span_title_code_shared" and f.names[16] == "span_modelno_code_shared"
    li, ri = np.array([0, 1, 0]), np.array([0, 1, 1])
    x = f(li, ri)
    whole = SpanPairFeatures(left, right, ["title", "modelno", "price"], ["price"])(li, ri)
    np.testing.assert_array_equal(x[:, :8], whole[:, :8])
    np.testing.assert_array_equal(x[:, -2:], whole[:, -2:])
    for k, field in enumerate(["title", "modelno"], start=1):
        np.testing.assert_array_equal(x[:, 8 * k: 8 * k + 8], SpanPairFeatures(left, right, [field])(li, ri))
    assert x[0, 16] == 1 and x[0, 8] == 0  # the model numbers agree; the right title has no code
    served = SpanPairFeatures.from_state(json.loads(json.dumps(f.state())), right).with_left(left)
    np.testing.assert_array_equal(served(li, ri), x)
