"""Categorical / numeric encoders, fusion and the pair classifier's Jaccard feature, against naive references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_linkage.model import FieldSlot, PairClassifier, RecordEncoder, jaccard
from engine_linkage.tabular import CategoricalEncoder, NumericEncoder, parse_number


@pytest.mark.parametrize("text, value", [("104.", 104.0), ("$1,299.00", 1299.0), ("8.10 %", 8.1), ("abc", None),
                                         (None, None), ("-3e2 units", -300.0), ("19151111", 19151111.0)])
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_categorical_missing_and_equal_values():
    enc = CategoricalEncoder(dim=4, num_buckets=100)
    x = enc.featurize(["NSW", "nsw ", None])
    assert x[0, 0] == x[1, 0] > 0 and x[2, 0] == 0
    v, present = enc(torch.from_numpy(x))
    assert present.tolist() == [True, True, False] and torch.equal(v[0], v[1])


def test_numeric_standardises_on_fit_and_marks_missing():
    enc = NumericEncoder(dim=8)
    enc.fit(["1", "10", "100", None])
    logs = np.log1p([1, 10, 100])
    assert float(enc.mean) == pytest.approx(logs.mean(), rel=1e-5)
    assert float(enc.std) == pytest.approx(logs.std(), rel=1e-5)
    x = torch.from_numpy(enc.featurize(["10", "n/a"]))
    v, present = enc(x)
    assert v.shape == (2, 8) and present.tolist() == [True, False]


class Fixed(torch.nn.Module):
    """A field encoder returning fixed rows of a table (ids [B, 1])."""

    input_kind = "ids"

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, ids):
        return self.table[ids[:, 0]], ids[:, 0] > 0


def test_mean_fusion_skips_missing_fields():
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    slots = [FieldSlot("a", "text", "t", "ids", 0, 1), FieldSlot("b", "text", "t", "ids", 1, 1)]
    enc = RecordEncoder(slots, {"t": Fixed(table)}, dim=2, fusion="mean").double()
    ids = torch.tensor([[1, 2], [1, 0], [0, 0]])
    out = enc(ids, torch.zeros(3, 0, dtype=torch.float64))
    # field vectors are normalised first: (1, 0) and (0, 2) -> (0, 1); their mean (0.5, 0.5), then normalised
    expected = torch.nn.functional.normalize(torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 0.0]],
                                                          dtype=torch.float64), dim=-1)
    assert torch.allclose(out, expected)


@pytest.mark.parametrize("fusion", ["attention", "concat"])
def test_fusion_outputs_unit_vectors_and_ignores_absent_values(fusion):
    torch.manual_seed(0)
    table = torch.randn(5, 4)
    slots = [FieldSlot("a", "text", "t", "ids", 0, 1), FieldSlot("b", "text", "t", "ids", 1, 1)]
    enc = RecordEncoder(slots, {"t": Fixed(table)}, dim=4, fusion=fusion)
    out = enc(torch.tensor([[1, 2], [3, 0]]), torch.zeros(2, 0))
    assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
    table2 = table.clone()
    table2[0] = 100.0  # the padding row's vector must not matter
    enc.encoders["t"].table = table2
    assert torch.allclose(enc(torch.tensor([[3, 0]]), torch.zeros(1, 0)), out[1:], atol=1e-5)


def test_jaccard_by_hand():
    a = torch.tensor([[1, 2, 3, 0], [5, 0, 0, 0], [0, 0, 0, 0]])
    b = torch.tensor([[2, 3, 4], [6, 0, 0], [0, 0, 0]])
    assert torch.allclose(jaccard(a, b), torch.tensor([2 / 4, 0.0, 0.0]))


def test_pair_classifier_shapes():
    clf = PairClassifier(num_fields=3, dim=4, num_jaccard=2, vector_features=True)
    f = torch.randn(5, 3, 4)
    m = torch.ones(5, 3, dtype=torch.bool)
    out = clf(f, m, f, m, torch.randn(5, 4), torch.randn(5, 4), torch.rand(5, 2))
    assert out.shape == (5,)
