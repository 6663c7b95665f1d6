"""The ``multi_categorical`` field encoder: tokens split and deduplicated, hashed like categories, the field vector the
mean of the distinct tokens' embeddings (against a hand-computed mean), and its registration."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from engine.fields import build_field_encoders, featurize_fields
from engine_linkage.tabular import MultiCategoricalEncoder


def bucket(token: str, num_buckets: int) -> int:
    """CRC-32 of the token into 1..num_buckets-1 (0 is padding), as for ``categorical``."""
    return zlib.crc32(token.encode("utf-8")) % (num_buckets - 1) + 1


@pytest.mark.parametrize("value, tokens", [
    ("Action|Comedy", ["action", "comedy"]),
    ("Action Comedy  Action", ["action", "comedy"]),
    ("3|17|42", ["3", "17", "42"]),
    ("a, b;c | d", ["a", "b", "c", "d"]),
    ("Sci-Fi|sci-fi|SCI-FI", ["sci-fi"]),  # normalised (lower case) before deduplication
    ("  ||  ", []),
    ("", []),
    (None, []),
])
def test_tokens_split_normalise_and_dedupe(value, tokens):
    assert MultiCategoricalEncoder(dim=4).tokens(value) == tokens


def test_tokens_with_a_separator_and_a_cap():
    enc = MultiCategoricalEncoder(dim=4, separator=r"/", max_tokens=2)
    assert enc.tokens("Drama/drama/Crime Story/War") == ["drama", "crime story"]  # spaces kept inside a token
    assert enc.tokens("a b") == ["a b"]
    assert MultiCategoricalEncoder(dim=4, max_tokens=3).tokens("e d c b a") == ["e", "d", "c"]  # first ones kept


def test_tokens_with_a_separator_are_stripped():
    enc = MultiCategoricalEncoder(dim=4, separator=r"/")
    assert enc.tokens("Drama / drama/ Crime Story") == ["drama", "crime story"]


def test_featurize_hashes_each_distinct_token_and_pads():
    enc = MultiCategoricalEncoder(dim=4, num_buckets=1000)
    x = enc.featurize(["Action|Comedy|Action", None, "drama", "x y z w"])
    assert x.dtype == np.int64 and x.shape == (4, 4)  # the widest row: 4 distinct tokens
    expected = np.array([
        [bucket("action", 1000), bucket("comedy", 1000), 0, 0],
        [0, 0, 0, 0],
        [bucket("drama", 1000), 0, 0, 0],
        [bucket(t, 1000) for t in "xyzw"],
    ])
    np.testing.assert_array_equal(x, expected)
    assert (expected[expected > 0] < 1000).all()
    # no value at all: one padding column, so the field still has a slot
    np.testing.assert_array_equal(enc.featurize([None, ""]), np.zeros((2, 1), np.int64))


def test_forward_is_the_mean_of_the_distinct_tokens_embeddings():
    torch.manual_seed(3)
    enc = MultiCategoricalEncoder(dim=5, num_buckets=97).double()
    values = ["Action|Comedy|Action|Action", "comedy", None, "drama action comedy"]
    x = torch.from_numpy(enc.featurize(values))
    got, present = enc(x)
    table = enc.embedding.weight.detach()
    for row, value in enumerate(values):
        tokens = enc.tokens(value)
        if tokens:
            manual = sum(table[bucket(t, 97)] for t in tokens) / len(tokens)  # each distinct token once
        else:
            manual = torch.zeros(5, dtype=torch.float64)
        assert torch.allclose(got[row].detach(), manual, atol=1e-12), value
    assert present.tolist() == [True, True, False, True]
    # the repeated "Action" counts once: row 0 is exactly the mean of action and comedy
    half = (table[bucket("action", 97)] + table[bucket("comedy", 97)]) / 2
    assert torch.allclose(got[0].detach(), half, atol=1e-12)


def test_padding_row_is_zero_and_gets_no_gradient():
    enc = MultiCategoricalEncoder(dim=3, num_buckets=11)
    assert torch.equal(enc.embedding.weight[0].detach(), torch.zeros(3))
    x = torch.from_numpy(enc.featurize(["a b", "c", None]))
    v, _ = enc(x)
    v.sum().backward()
    grad = enc.embedding.weight.grad
    assert torch.equal(grad[0], torch.zeros(3))
    # "c" alone: its bucket gets gradient 1 (weight 1/1); "a" and "b" 1/2 each (unless they collide)
    a, b, c = bucket("a", 11), bucket("b", 11), bucket("c", 11)
    if len({a, b, c}) == 3:
        assert torch.allclose(grad[c], torch.ones(3)) and torch.allclose(grad[a], torch.full((3,), 0.5))


def test_registered_and_built_as_the_default_multi_categorical_field_encoder(linkage_plugins):
    from engine.plugins import get_registry

    registry = get_registry()
    entry = registry.get("encoder", "multi_categorical")
    assert entry.cls is MultiCategoricalEncoder and entry.plugin == "linkage"
    for name, field in MultiCategoricalEncoder.Config.model_fields.items():
        assert field.description, name
    enc = MultiCategoricalEncoder.from_config(MultiCategoricalEncoder.Config(num_buckets=50, max_tokens=3), dim=6)
    assert (enc.dim, enc.num_buckets, enc.max_tokens) == (6, 50, 3)
    assert enc.get_config_dict() == {"num_buckets": 50, "separator": None, "max_tokens": 3}

    # a multi_categorical field with no encoder named gets this one; its slot holds the hashed tokens
    fields = {"genres": "multi_categorical"}
    encoders = build_field_encoders(registry, fields, {}, dim=4)
    assert list(encoders) == ["multi_categorical"]
    assert isinstance(encoders["multi_categorical"], MultiCategoricalEncoder)
    feats = featurize_fields(fields, {"genres": ["Drama|War", None]}, encoders, {})
    (slot,) = feats.slots
    assert (slot.name, slot.modality, slot.encoder, slot.kind, slot.offset, slot.width) == \
        ("genres", "multi_categorical", "multi_categorical", "ids", 0, 2)
    nb = encoders["multi_categorical"].num_buckets
    np.testing.assert_array_equal(feats.ids, [[bucket("drama", nb), bucket("war", nb)], [0, 0]])
    assert feats.values.shape == (2, 0)


def test_config_round_trip_rebuilds_the_same_featuriser():
    """Serving rebuilds a featuriser from ``get_config_dict()``: it must hash the same tokens the same way."""
    enc = MultiCategoricalEncoder(dim=4, num_buckets=500, separator=r"[/|]", max_tokens=2)
    again = MultiCategoricalEncoder.from_config(MultiCategoricalEncoder.Config(**enc.get_config_dict()), dim=1)
    values = ["Drama/War|Crime", "x", None]
    np.testing.assert_array_equal(again.featurize(values), enc.featurize(values))


def test_record_encoder_with_a_multi_categorical_field_exports_to_onnx(tmp_path):
    from engine.export import export_onnx, parity_check
    from engine.fields import RecordEncoder
    from engine_linkage.export import record_encoder_export
    from engine_linkage.tabular import CategoricalEncoder

    torch.manual_seed(0)
    encoders = {"multi_categorical": MultiCategoricalEncoder(dim=6, num_buckets=101),
                "categorical": CategoricalEncoder(dim=6, num_buckets=101)}
    fields = {"genres": "multi_categorical", "studio": "categorical"}
    columns = {"genres": ["Action|Comedy", None, "drama war crime", "comedy"], "studio": ["A", "B", None, "A"]}
    feats = featurize_fields(fields, columns, encoders, {})
    encoder = RecordEncoder(feats.slots, encoders, 6, fusion="mean")
    module, names = record_encoder_export(encoder, feats.slots)
    assert names == ("ids",)
    ids = torch.from_numpy(feats.ids)
    path = export_onnx(module, (ids[:2],), tmp_path / "enc.onnx", names, ["vectors"], names)
    report = parity_check(module, path, (ids,), names)  # another batch size than the example
    assert report["max_abs_diff"] < 1e-5
