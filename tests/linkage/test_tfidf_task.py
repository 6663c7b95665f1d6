"""TF-IDF in the ``linkage`` task: ``model.rerank.tfidf`` features reach the pair classifier with the values of
:class:`TfidfPairFeatures` fitted on both tables, ``model.blocking: tfidf | both`` gives the exact sparse top-k (and
the union with the vector index), a whole run learns with them and exports them (their fitted state beside the
pair scorer)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.config import load_pipeline
from engine.run import prepare
from engine_linkage.blocking import knn_candidates, sparse_knn_candidates
from engine_linkage.tfidf import TfidfPairFeatures, TfidfSimilarity, record_texts
from tests.linkage.test_task import invoke, pipeline, write_deepmatcher

pytest.importorskip("sklearn")
FIELDS = {"name": "text", "city": "text", "year": "numeric"}


def prepared(tmp_path, model: dict):
    d = write_deepmatcher(tmp_path / "dm", n=40)
    return prepare(load_pipeline(pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d), "fields": FIELDS},
                                          model)))


def test_classifier_features_are_the_tfidf_cosines(tmp_path, linkage_plugins):
    task, model = prepared(tmp_path, {"rerank": {"jaccard": False, "tfidf": ["word", "char"]}})
    names = task.tfidf_features.names
    assert names == [f"tfidf_{a}_{s}" for s in ("record", "name", "city") for a in ("word", "char")]
    assert model.classifier.mlp[0].in_features == 3 * len(task.slots) + len(names) + 1
    d = task.data
    p = d.pairs["valid"]
    got = task._pair_features(p.left, p.right, "cpu").numpy()
    left = {f: d.left.values(f) for f in FIELDS}
    right = {f: d.right.values(f) for f in FIELDS}
    want = TfidfPairFeatures(left, right, list(FIELDS), ["word", "char"], per_field=["name", "city"])(p.left, p.right)
    assert np.array_equal(got, want)
    lt, rt = record_texts(left), record_texts(right)  # the record scope by hand: idf on both tables
    sim = TfidfSimilarity("word").fit(lt + rt)
    direct = np.asarray(sim.transform([lt[i] for i in p.left]).multiply(sim.transform([rt[j] for j in p.right]))
                        .sum(1)).ravel()
    assert np.allclose(got[:, 0], direct, atol=1e-6)
    scores = task.score_pairs(model, p.left, p.right)  # the classifier runs with them
    assert scores.shape == (len(p),) and np.isfinite(scores).all()


@pytest.mark.parametrize("how", ["tfidf", "both"])
def test_tfidf_blocking(tmp_path, linkage_plugins, how):
    task, model = prepared(tmp_path, {"blocking": how, "blocking_tfidf": "word", "rerank": None})
    cl, cr, lrows, rrows = task._candidates(model, None)
    lm, rm = task.tfidf_blocking.matrices[0]
    want = set(zip(*sparse_knn_candidates(lm, rm, 3)))
    if how == "both":
        ul, ur = (task._record_vectors(model, s, r) for s, r in (("left", lrows), ("right", rrows)))
        want |= set(zip(*knn_candidates(ul, ur, 3)))
    assert set(zip(cl.tolist(), cr.tolist())) == {(int(a), int(b)) for a, b in want}
    if how == "tfidf":  # names and cities with typos on the right: word TF-IDF finds the twin almost always
        assert np.mean([(i, i) in set(zip(cl.tolist(), cr.tolist())) for i in range(40)]) >= 0.9


def test_run_with_tfidf_features_and_their_export(tmp_path, linkage_plugins):
    d = write_deepmatcher(tmp_path / "dm")
    p = pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d), "fields": FIELDS},
                 {"rerank": {"tfidf": ["char"]}, "blocking": "both"})
    invoke("run", p, "--metrics-out", tmp_path / "m.json")
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["f1"] >= 0.85 and m["pair_completeness"] >= 0.9, m
    invoke("export", p, "-o", tmp_path / "onnx")
    serving = json.loads((tmp_path / "onnx" / "export.json").read_text())["serving"]
    assert serving["pair_features"] == "pair_features.json" and serving["pair_scorer_max_abs_diff"] < 1e-5
    state = json.loads((tmp_path / "onnx" / "pair_features.json").read_text())
    assert state["names"] == serving["pair_feature_names"] == [f"tfidf_char_{s}" for s in ("record", "name", "city")]
    assert (tmp_path / "onnx" / "right_records.parquet").is_file()


def test_classifier_with_its_own_optimiser(tmp_path, linkage_plugins):
    """``rerank.lr``: the classifier is its own parameter group at that rate; a batch gives the bi-encoder's update
    (without the classifier's loss) then one classifier update per ``rerank.batch_size`` labelled pairs, which
    move the classifier and leave the encoder as it was; a whole run learns."""
    import torch

    task, model = prepared(tmp_path, {"rerank": {"tfidf": ["word"], "spans": True, "learned_features": False,
                                                 "lr": 0.01, "batch_size": 8}})
    groups = task.parameter_groups(model)
    clf = {id(p) for p in model.classifier.parameters()}
    assert set(groups) == {"model", "rerank"} and groups["rerank"]["lr"] == 0.01
    assert {id(p) for p in groups["rerank"]["params"]} == clf
    assert not clf & {id(p) for p in groups["model"]["params"]}
    batch = next(iter(task.train_batches(1, torch.Generator().manual_seed(0))))
    steps = list(task.training_steps(model, batch))
    n_pairs = batch[2][0].shape[0]
    assert [g for g, _ in steps] == ["model"] + ["rerank"] * -(-n_pairs // 8)
    assert "rerank" not in steps[0][1].parts and set(steps[1][1].parts) == {"bce"}
    encoder = [p.detach().clone() for p in model.encoder.parameters()]
    head = [p.detach().clone() for p in model.classifier.parameters()]
    opt = torch.optim.Adam(groups["rerank"]["params"], lr=0.01)
    model.zero_grad()
    steps[1][1].loss.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(encoder, model.encoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(head, model.classifier.parameters()))
    d = write_deepmatcher(tmp_path / "dm2")
    p = pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d), "fields": FIELDS},
                 {"rerank": {"tfidf": ["char"], "learned_features": False, "lr": 0.01, "batch_size": 16}})
    invoke("run", p, "--metrics-out", tmp_path / "m.json")
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["f1"] >= 0.85, m
