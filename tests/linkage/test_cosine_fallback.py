"""``rerank.cosine_fallback``: pairs are scored by the record cosine when it reaches a higher max-F1 on valid than
the pair classifier; the threshold, the test figures, the matches and the export follow the scorer chosen."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import load_pipeline
from engine.run import prepare
from engine_linkage.metrics import best_threshold, classify
from tests.linkage.test_task import pipeline, write_deepmatcher


def prepared(tmp_path, fallback: bool = True):
    d = write_deepmatcher(tmp_path / "dm", n=40)
    p = pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d)},
                 {"rerank": {"jaccard": False, "cosine_fallback": fallback}})
    return prepare(load_pipeline(p))


def classifier_of_record_cosine(model, sign: float) -> None:
    """Make the classifier's logit ``sign * 4 * (1 + record cosine)``: a monotone function of the cosine (same
    order, so the same max-F1) for ``sign = +1``, its reverse for ``-1``. The record cosine is its last feature."""
    first, second, last = (layer for layer in model.classifier.mlp if isinstance(layer, torch.nn.Linear))
    with torch.no_grad():
        for layer in (first, second, last):
            layer.weight.zero_()
            layer.bias.zero_()
        first.weight[0, -1], first.bias[0] = 1.0, 1.0  # relu(1 + cos) = 1 + cos
        second.weight[0, 0] = 1.0
        last.weight[0, 0] = 4.0 * sign


def cosine(task, model, pairs) -> np.ndarray:
    return task.score_pairs(model, pairs.left, pairs.right, scorer="cosine")


def test_a_classifier_worse_than_the_cosine_on_valid_gives_way_to_it(tmp_path, linkage_plugins):
    task, model = prepared(tmp_path)
    classifier_of_record_cosine(model, -1.0)  # the cosine's order reversed
    v, te = task.data.pairs["valid"], task.data.pairs["test"]
    by_classifier = best_threshold(task.score_pairs(model, v.left, v.right, scorer="classifier"), v.label)[1]
    t, by_cosine = best_threshold(cosine(task, model, v), v.label)
    assert by_cosine["f1"] > by_classifier["f1"]  # the premise: an untrained encoder's cosine beats its reverse

    m = task.evaluate(model, "test")
    assert task.scorer == "cosine" and m["scored_by_cosine"] == 1.0
    assert m["valid_f1_cosine"] == pytest.approx(by_cosine["f1"])
    assert m["valid_f1_classifier"] == pytest.approx(by_classifier["f1"])
    assert task.threshold == pytest.approx(t) and m["threshold"] == pytest.approx(t)
    expected = classify(cosine(task, model, te), te.label, t)
    assert m["f1"] == pytest.approx(expected["f1"]) and m["recall"] == pytest.approx(expected["recall"])
    # score_pairs with no scorer named is the chosen one, and so are the test matches
    np.testing.assert_allclose(task.score_pairs(model, te.left, te.right), cosine(task, model, te))
    assert (task._test_output["score"] >= t).all()

    valid = task.evaluate(model, "valid")
    assert valid["f1"] == pytest.approx(by_cosine["f1"]) and valid["scored_by_cosine"] == 1.0

    report = task.export_onnx(model, str(tmp_path / "onnx"))
    assert report["serving"]["score"] == "cosine" and report["serving"]["pair_scorer"] is None
    assert not (tmp_path / "onnx" / "pair_scorer.onnx").exists()
    assert report["threshold"] == pytest.approx(t)


def test_a_tie_keeps_the_classifier(tmp_path, linkage_plugins):
    task, model = prepared(tmp_path)
    classifier_of_record_cosine(model, 1.0)  # the cosine's own order: the same max-F1
    m = task.evaluate(model, "test")
    assert task.scorer == "classifier" and m["scored_by_cosine"] == 0.0
    assert m["valid_f1_classifier"] == pytest.approx(m["valid_f1_cosine"])
    v = task.data.pairs["valid"]
    t, _ = best_threshold(task.score_pairs(model, v.left, v.right, scorer="classifier"), v.label)
    assert task.threshold == pytest.approx(t)
    report = task.export_onnx(model, str(tmp_path / "onnx"))
    assert report["serving"]["score"] == "probability" and report["serving"]["pair_scorer"] == "pair_scorer.onnx"


def test_without_the_option_the_classifier_scores_even_when_worse(tmp_path, linkage_plugins):
    task, model = prepared(tmp_path, fallback=False)
    classifier_of_record_cosine(model, -1.0)
    m = task.evaluate(model, "test")
    assert task.scorer == "classifier"
    assert not {"scored_by_cosine", "valid_f1_cosine", "valid_f1_classifier"} & set(m)
