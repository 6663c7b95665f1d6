"""The char n-gram encoder against hand-made cases and a naive float64 mean."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from engine_linkage.char_ngram import CharNgramEncoder, char_ngrams, hash_ngrams, normalize_text


def test_ngrams_by_hand():
    assert char_ngrams("abc", (3,)) == ["#ab", "abc", "bc#"]
    assert char_ngrams("ab a", (2,), words=True) == ["w:ab", "w:a", "#a", "ab", "b ", " a", "a#"]
    assert char_ngrams("aaaa", (3,)) == ["#aa", "aaa", "aa#"]  # distinct, in order of first appearance
    assert char_ngrams("a", (3,)) == ["#a#"]  # shorter than n: the padded value itself
    assert char_ngrams("", (3,)) == []


def test_normalize():
    assert normalize_text("  Foo \t BAR\n") == "foo bar"
    assert normalize_text(None) == ""
    assert normalize_text("Foo", lowercase=False) == "Foo"


def test_hash_is_stable_and_in_range():
    ids = hash_ngrams(["#ab", "abc"], 97)
    assert ids == [zlib.crc32(b"#ab") % 96 + 1, zlib.crc32(b"abc") % 96 + 1]
    assert all(1 <= i < 97 for i in hash_ngrams([f"g{i}" for i in range(1000)], 97))


def test_featurize_pads_caps_and_marks_missing():
    enc = CharNgramEncoder(dim=4, num_buckets=1000, ngram_sizes=(3,), words=False, max_ngrams=2)
    x = enc.featurize(["abc", None, "x"])
    assert x.shape == (3, 2) and x.dtype == np.int64
    assert x[0].tolist() == hash_ngrams(["#ab", "abc"], 1000)  # capped at max_ngrams
    assert x[1].tolist() == [0, 0]
    assert x[2, 1] == 0 and x[2, 0] > 0
    assert (enc.featurize(["ABC"]) == enc.featurize(["abc"])).all()  # lower-cased


def test_forward_is_the_mean_of_the_ngram_embeddings():
    torch.manual_seed(0)
    enc = CharNgramEncoder(dim=5, num_buckets=50, ngram_sizes=(2, 3), words=True, projection=False).double()
    values = ["john smith", "jon smyth", None, "a"]
    ids = torch.from_numpy(enc.featurize(values))
    vec, present = enc(ids)
    assert present.tolist() == [True, True, False, True]
    table = enc.embedding.weight.detach()
    for i, v in enumerate(values):
        row = [t for t in ids[i].tolist() if t > 0]
        expected = table[row].mean(0) if row else torch.zeros(5, dtype=torch.float64)
        assert torch.allclose(vec[i], expected)


def test_similar_strings_are_closer_than_different_ones_before_training():
    torch.manual_seed(0)
    enc = CharNgramEncoder(dim=64, num_buckets=4096, projection=False)
    v, _ = enc(torch.from_numpy(enc.featurize(["jonathan smith", "jonathon smith", "mary brown"])))
    v = torch.nn.functional.normalize(v, dim=-1)
    assert (v[0] @ v[1]) > (v[0] @ v[2]) + 0.3


def test_bad_ngram_sizes():
    with pytest.raises(ValueError, match="ngram_sizes"):
        CharNgramEncoder(ngram_sizes=(0,))
