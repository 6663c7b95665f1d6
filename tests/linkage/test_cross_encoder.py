"""The cross-encoder re-ranker on a tiny local BERT written by the test (nothing downloaded): serialisation by hand,
the sentence-pair input against hand-built ids, its own optimiser and freezing after ``epochs``, the task's scores,
a config error for unknown fields, and the ONNX export scored by ``engine score`` as the task scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import ConfigError

pytest.importorskip("transformers")

from tests.linkage.test_task import (  # noqa: E402
    CITY, FIRST, LAST, invoke, pipeline, write_deepmatcher, write_febrl_dedup)

WORDS = FIRST + LAST + CITY + ["name", "city", "year", ":", "|", "x"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from tests.tiny_bert import write_tiny_bert

    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), WORDS)


def test_serialize_records_by_hand():
    from engine_linkage.cross_encoder import serialize_records

    cols = {"name": ["sony tv", None, "lg"], "price": ["10.5", "3", None]}
    assert serialize_records(cols) == ["name: sony tv | price: 10.5", "price: 3", "name: lg"]


def test_pair_input_is_cls_left_sep_right_sep(tiny_bert):
    from engine_linkage.cross_encoder import CrossEncoder

    ce = CrossEncoder(str(tiny_bert), max_length=64).eval()
    vocab = ce.tokenizer.get_vocab()
    batch = ce.tokenize(["john smith"], ["mary"])
    ids = [vocab[t] for t in ["[CLS]", "john", "smith", "[SEP]", "mary", "[SEP]"]]
    assert batch["input_ids"][0].tolist() == ids
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1]
    with torch.no_grad():  # the logit is the sequence classifier's on those ids
        want = ce.model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([[0, 0, 0, 0, 1, 1]])).logits[0, 0]
        got = ce.score(["john smith"], ["mary"])
    assert got.shape == (1,) and torch.allclose(got[0], want)
    # padding does not change a pair's logit
    with torch.no_grad():
        both = ce.score(["john smith", "paris lyon nice dijon"], ["mary", "paris"])
    assert torch.allclose(both[0], got[0], atol=1e-6)
    long = ce.tokenize(["john " * 100], ["mary " * 100])["input_ids"]
    assert long.shape[1] == 64  # truncated to max_length


def _cross_pipeline(tmp_path, tiny_bert, **ce):
    d = write_deepmatcher(tmp_path / "dm", n=40)
    cfg = {"model_path": str(tiny_bert), "max_length": 32, "lr": 1e-3, "batch_size": 8, "epochs": 2, **ce}
    return pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d)},
                    {"rerank": None, "cross_encoder": cfg}, epochs=3, patience=3)


def test_own_optimiser_frozen_after_its_epochs_and_scores_are_its_probabilities(tmp_path, tiny_bert,
                                                                                linkage_plugins):
    from engine.config import load_pipeline
    from engine.run import prepare
    from engine.tracking import Tracker
    from engine.train import Trainer

    cfg = load_pipeline(_cross_pipeline(tmp_path, tiny_bert))
    task, model = prepare(cfg)
    groups = task.parameter_groups(model)
    assert set(groups) == {"model", "cross"} and groups["cross"]["lr"] == 1e-3
    assert {id(p) for p in groups["cross"]["params"]} == {id(p) for p in model.cross.parameters()}
    snapshots = []
    original = task.on_epoch_start

    def record(model, epoch, generator):  # the cross-encoder's weights as each epoch starts
        snapshots.append({k: v.clone() for k, v in model.cross.state_dict().items()})
        original(model, epoch, generator)

    task.on_epoch_start = record
    Trainer(task, cfg, Tracker(), tmp_path / "ck", torch.device("cpu"), progress=False).fit(model)
    after = {k: v.clone() for k, v in model.cross.state_dict().items()}
    assert len(snapshots) == 3
    changed = lambda a, b: any(not torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert changed(snapshots[0], snapshots[1]) and changed(snapshots[1], snapshots[2])  # epochs 1 and 2 train it
    assert not changed(snapshots[2], after)  # epoch 3 does not
    p = task.data.pairs["test"]
    model.eval()
    scores = task.score_pairs(model, p.left[:5], p.right[:5])
    with torch.no_grad():
        want = torch.sigmoid(model.cross.score([task.texts["left"][i] for i in p.left[:5]],
                                               [task.texts["right"][i] for i in p.right[:5]])).numpy()
    assert np.allclose(scores, want, atol=1e-6)
    assert task.texts["left"][0].startswith("name: ")


def test_unknown_field_is_a_config_error(tmp_path, tiny_bert, linkage_plugins):
    from engine.config import load_pipeline
    from engine.run import prepare

    with pytest.raises(ConfigError, match="model.cross_encoder.fields.*name, city, year"):
        prepare(load_pipeline(_cross_pipeline(tmp_path, tiny_bert, fields=["name", "colour"])))


def test_run_reports_f1_and_blocking(tmp_path, tiny_bert, linkage_plugins):
    import json

    p = _cross_pipeline(tmp_path, tiny_bert)
    invoke("run", p, "--metrics-out", tmp_path / "m.json")
    m = json.loads((tmp_path / "m.json").read_text())
    assert {"f1", "precision", "recall", "pair_completeness", "reduction_ratio"} <= set(m)
    assert 0.0 <= m["f1"] <= 1.0


def test_true_links_only_need_mined_negatives(tmp_path, tiny_bert, linkage_plugins):
    """FEBRL gives true links only: without mined negatives the cross-encoder is refused; with them it trains on
    the links and on blocking neighbours that are not links."""
    from engine.config import load_pipeline
    from engine.run import prepare

    d = write_febrl_dedup(tmp_path / "febrl")
    cfg = {"model_path": str(tiny_bert), "max_length": 32, "batch_size": 8, "epochs": 1}
    data = {"source": "febrl", "path": str(d), "dataset": "3", "split": [0.5, 0.25, 0.25]}
    with pytest.raises(ConfigError, match="hard_negatives"):
        prepare(load_pipeline(pipeline(tmp_path, data, {"rerank": None, "cross_encoder": cfg})))
    task, model = prepare(load_pipeline(pipeline(tmp_path, data, {"rerank": None,
                                                                   "cross_encoder": {**cfg, "hard_negatives": 2}})))
    task.on_epoch_start(model, 1, torch.Generator().manual_seed(0))
    li, ri, y = task._classifier_pairs()
    assert task.mined is not None and (y == 0).sum() == task.mined[0].shape[0] > 0
    steps = list(task.training_steps(model, next(iter(task.train_batches(1, torch.Generator().manual_seed(0))))))
    assert steps[0][0] == "model" and [g for g, _ in steps[1:]] and {g for g, _ in steps[1:]} == {"cross"}
