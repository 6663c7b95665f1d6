"""``model.intra_modal``: the objective on each field's own vectors across matched pairs, beside the record vectors'.
Checked against a naive symmetric InfoNCE, by hand on which pairs take part, and through the task and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.components import ObjectiveOutput
from engine.config import load_pipeline
from engine.run import prepare
from engine_linkage.intra_modal import intra_modal_loss
from tests.linkage.test_task import invoke, pipeline, write_deepmatcher


def naive_symmetric_infonce(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    """Mean over rows and both directions of -log softmax(a_i . b_j / tau)_i, one row at a time, in float64."""
    n, total = a.shape[0], 0.0
    for i in range(n):
        for x, y in ((a, b), (b, a)):
            logits = [float(x[i] @ y[j]) / tau for j in range(n)]
            m = max(logits)
            total += -(logits[i] - m - math.log(sum(math.exp(v - m) for v in logits)))
    return total / (2 * n)


class Recorder:
    """A pair objective that records its inputs; its loss is the number of rows it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, a, b):
        self.calls.append((a.detach().clone(), b.detach().clone()))
        return ObjectiveOutput(torch.tensor(float(a.shape[0])), {})


def vectors(seed=0, b=5, f=3, d=4):
    g = torch.Generator().manual_seed(seed)
    fl = F.normalize(torch.randn(b, f, d, generator=g), dim=-1)
    fr = F.normalize(torch.randn(b, f, d, generator=g), dim=-1)
    return fl, fr


def test_only_pairs_with_the_field_on_both_sides_take_part_and_slots_are_averaged():
    fl, fr = vectors()
    ml = torch.ones(5, 3, dtype=torch.bool)
    mr = torch.ones(5, 3, dtype=torch.bool)
    ml[1, 0] = False  # slot 0: pairs 0, 2, 3, 4 (pair 1 lacks it on the left)
    mr[4, 0] = False  # ... and pair 4 lacks it on the right: 0, 2, 3
    ml[:, 1] = False
    ml[2, 1] = True  # slot 1: only pair 2 has it on both sides: skipped
    rec = Recorder()
    loss = intra_modal_loss(rec, fl, ml, fr, mr, [0, 1, 2])
    assert len(rec.calls) == 2  # slots 0 and 2
    torch.testing.assert_close(rec.calls[0][0], fl[[0, 2, 3], 0])
    torch.testing.assert_close(rec.calls[0][1], fr[[0, 2, 3], 0])
    torch.testing.assert_close(rec.calls[1][0], fl[:, 2])
    assert float(loss) == pytest.approx((3 + 5) / 2)
    assert intra_modal_loss(rec, fl, ml, fr, mr, [1]) is None  # no slot with two pairs: nothing
    assert intra_modal_loss(rec, fl, ml, fr, mr, []) is None


def test_with_infonce_it_is_the_naive_loss_of_each_field():
    from engine_objectives.infonce import InfoNCE

    contrast = InfoNCE(temperature=0.1, symmetric=True)
    fl, fr = vectors(seed=1, b=6, f=2, d=8)
    ml = torch.ones(6, 2, dtype=torch.bool)
    mr = ml.clone()
    mr[0, 1] = False
    got = float(intra_modal_loss(contrast, fl, ml, fr, mr, [0, 1]))
    a, b = fl.double().numpy(), fr.double().numpy()
    want = (naive_symmetric_infonce(a[:, 0], b[:, 0], 0.1) + naive_symmetric_infonce(a[1:, 1], b[1:, 1], 0.1)) / 2
    assert got == pytest.approx(want, rel=1e-5)


def test_the_task_adds_the_term_to_the_loss(tmp_path, linkage_plugins):
    d = write_deepmatcher(tmp_path / "dm", n=20)
    p = pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d)},
                 {"intra_modal": {"weight": 0.5, "fields": ["name"]}, "rerank": None})
    task, model = prepare(load_pipeline(p))
    assert task.intra_slots == [0]  # name, city, year: name only
    batch = next(iter(task.train_batches(1, torch.Generator().manual_seed(0))))
    out = task.training_step(model, batch)
    enc = model.encoder
    fl, ml = enc.field_vectors(*task._inputs("left", batch[0], "cpu"))
    fr, mr = enc.field_vectors(*task._inputs("right", batch[1], "cpu"))
    record = model.contrast(model.encoder(*task._inputs("left", batch[0], "cpu")),
                            model.encoder(*task._inputs("right", batch[1], "cpu"))).loss
    intra = model.contrast(fl[:, 0], fr[:, 0]).loss  # every record has a name
    assert float(out.parts["contrast"].detach()) == pytest.approx(float(record.detach()), rel=1e-6)
    assert float(out.parts["intra_modal"].detach()) == pytest.approx(float(intra.detach()), rel=1e-6)
    assert float(out.loss.detach()) == pytest.approx(float(record.detach()) + 0.5 * float(intra.detach()), rel=1e-6)
    out.loss.backward()  # the term reaches the field encoder
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.encoders.parameters())


def test_an_unknown_field_is_a_config_error_naming_the_fields(tmp_path, linkage_plugins):
    d = write_deepmatcher(tmp_path / "dm", n=20)
    p = pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d)}, {"intra_modal": {"fields": ["title"]}})
    result = invoke("run", p, ok=False)
    assert result.exit_code == 2
    assert "model.intra_modal.fields: unknown field 'title'; the fields are name, city, year" in result.output
    assert not (tmp_path / "ck").exists()


def test_a_run_with_intra_modal_terms_links(tmp_path, linkage_plugins):
    d = write_deepmatcher(tmp_path / "dm")
    p = pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d),
                            "fields": {"name": "text", "city": "categorical", "year": "numeric"}},
                 {"intra_modal": {"weight": 1.0}})
    invoke("run", p, "--metrics-out", tmp_path / "m.json")
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["f1"] >= 0.85, m  # as without the terms (test_task's run of the same data)
