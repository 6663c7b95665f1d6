"""Fixtures of the serving tests: a tiny graph model and a tiny sequential model, trained 1-2 epochs and exported
once per session (``engine run`` + ``engine export`` in-process), with the PyTorch model kept for references."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

_serving = str(pathlib.Path(__file__).resolve().parents[2] / "serving")
if _serving not in sys.path:  # a checkout not (re)installed since serving/ was added
    sys.path.insert(0, _serving)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@dataclass
class Trained:
    pipeline: pathlib.Path
    export: pathlib.Path
    task: Any
    model: Any
    mlflow_uri: str | None = None
    run_id: str | None = None


def _invoke(*args):
    from engine.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _load_trained(pipeline: pathlib.Path):
    from engine.config import load_pipeline
    from engine.run import checkpoint_dir, prepare
    from engine.train import load_checkpoint

    cfg = load_pipeline(str(pipeline))
    task, model = prepare(cfg)
    model.load_state_dict(load_checkpoint(checkpoint_dir(cfg) / "best.pt")["model"])
    return task, model.eval()


@pytest.fixture(scope="session")
def graph_model(tmp_path_factory) -> Trained:
    """LightGCN on 400 generated users x 120 items, 2 epochs, tracked to a sqlite MLflow store, exported."""
    import json

    from engine.plugins import plugin
    from engine_graphcl import plugin as gmod
    from engine_objectives import plugin as omod

    root = tmp_path_factory.mktemp("graph")
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    doc = {
        "name": "serving-graph", "task": "graph_cf", "seed": 3,
        "data": {"source": "synthetic_cf", "path": str(root / "data"), "num_users": 400, "num_items": 120,
                 "per_user": 10, "communities": 4, "seed": 1},
        "model": {"encoder": {"name": "lightgcn", "embedding_dim": 16, "num_layers": 2}, "loss": "bpr"},
        "train": {"epochs": 2, "batch_size": 256, "lr": 0.02, "patience": None, "eval_every": 1,
                  "checkpoint_dir": str(root / "checkpoints"), "num_threads": 1},
        "evaluate": {"ks": [10, 20]},
        "tracking": {"uri": uri},
    }
    pipeline = root / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(doc, sort_keys=False))
    with plugin(omod, name="objectives"), plugin(gmod, name="graphcl"):
        _invoke("run", pipeline, "--metrics-out", root / "metrics.json")
        result = _invoke("export", pipeline, "-o", root / "export")
        task, model = _load_trained(pipeline)
    report = json.loads(result.output)
    run_id = json.loads((root / "metrics.json").read_text())["run_id"]
    assert report["mlflow_model"] == f"runs:/{run_id}/onnx"
    return Trained(pipeline, root / "export", task, model, uri, run_id)


def write_sequences(path: pathlib.Path, num_users: int = 150, num_items: int = 60, seed: int = 0) -> list[list[int]]:
    """``user item item ...`` lines (S3Rec format), user ids 101.., a successor pattern plus noise."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(num_users):
        start, length = int(rng.integers(0, num_items)), int(rng.integers(4, 16))
        seqs.append([(start + t) % num_items + 1 if rng.random() > 0.2 else int(rng.integers(1, num_items + 1))
                     for t in range(length)])
    path.write_text("".join(f"{101 + u} {' '.join(map(str, s))}\n" for u, s in enumerate(seqs)))
    return seqs


@pytest.fixture(scope="session")
def seq_model(tmp_path_factory) -> Trained:
    """SASRec (max_len 8) on 150 generated sequences over 60 items, 1 epoch, untracked, exported."""
    from engine.plugins import plugin
    from engine_objectives import plugin as omod
    from engine_seqrec import plugin as smod

    root = tmp_path_factory.mktemp("seq")
    write_sequences(root / "seqs.txt")
    doc = {
        "name": "serving-seq", "task": "seqrec", "seed": 5,
        "data": {"source": "s3rec_txt", "path": str(root / "seqs.txt")},
        "model": {"encoder": {"name": "sasrec", "hidden_dim": 16, "num_layers": 1, "num_heads": 2, "inner_dim": 32,
                              "dropout": 0.0, "attn_dropout": 0.0}, "max_len": 8},
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.01, "patience": None, "monitor": "ndcg@10",
                  "checkpoint_dir": str(root / "checkpoints"), "num_threads": 1},
        "evaluate": {"ks": [10], "metrics": ["hr", "ndcg"]},
        "tracking": {"enabled": False},
    }
    pipeline = root / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(doc, sort_keys=False))
    with plugin(omod, name="objectives"), plugin(smod, name="seqrec"):
        _invoke("run", pipeline, "--no-track")
        _invoke("export", pipeline, "-o", root / "export")
        task, model = _load_trained(pipeline)
    return Trained(pipeline, root / "export", task, model)


# -- linkage --------------------------------------------------------------------------------------------------------
FIRST = ["john", "mary", "peter", "susan", "robert", "linda", "james", "karen", "david", "nancy", "paul", "emma",
         "steven", "laura", "kevin", "alice", "brian", "chloe", "frank", "grace"]
LAST = ["smith", "brown", "taylor", "wilson", "clarke", "walker", "wright", "hughes", "turner", "morgan", "cooper"]
CITY = ["paris", "lyon", "nice", "lille", "nantes", "rennes"]


def write_linkage_tables(d: pathlib.Path, n: int = 60, seed: int = 0) -> pathlib.Path:
    """A DeepMatcher folder: tableA / tableB (B a typo'd copy of A, ids a<i> / b<i>, some years missing on A),
    train / valid / test pairs (each match and two near misses)."""
    import random

    import polars as pl

    rng = random.Random(seed)
    d.mkdir(parents=True, exist_ok=True)
    names = rng.sample([(f, l) for f in FIRST for l in LAST], n)
    ents = [(f, l, rng.choice(CITY), str(rng.randint(1940, 2000))) for f, l in names]

    def typo(word):
        i = rng.randrange(len(word))
        return word[:i] + "x" + word[i + 1:]

    pl.DataFrame({"id": [f"a{i}" for i in range(n)], "name": [f"{e[0]} {e[1]}" for e in ents],
                  "city": [e[2] for e in ents], "year": [e[3] if i % 7 else None for i, e in enumerate(ents)]}
                 ).write_csv(d / "tableA.csv")
    pl.DataFrame({"id": [f"b{i}" for i in range(n)], "name": [f"{typo(e[0])} {e[1]}" for e in ents],
                  "city": [e[2] for e in ents], "year": [e[3] for e in ents]}).write_csv(d / "tableB.csv")
    order = list(range(n))
    rng.shuffle(order)
    cuts = {"train": order[: n // 2], "valid": order[n // 2: 3 * n // 4], "test": order[3 * n // 4:]}
    for split, ids in cuts.items():
        rows = [(1, i, i) for i in ids]
        rows += [(0, i, j) for i in ids for j in rng.sample([j for j in range(n) if j != i], 2)]
        pl.DataFrame({"label": [r[0] for r in rows], "left_id": [f"a{r[1]}" for r in rows],
                      "right_id": [f"b{r[2]}" for r in rows]}).write_csv(d / f"{split}.csv")
    return d


@contextlib.contextmanager
def _linkage_plugins():
    """The objectives and linkage plugins registered in memory, unless they already are."""
    from engine.plugins import plugin, pm
    from engine_linkage import plugin as lmod
    from engine_objectives import plugin as omod

    with contextlib.ExitStack() as stack:
        for mod, name in ((omod, "objectives"), (lmod, "linkage")):
            if pm.get_plugin(name) is None:
                stack.enter_context(plugin(mod, name=name))
        yield


def _linkage(tmp_path_factory, name: str, model_cfg: dict, train: dict | None = None) -> Trained:
    root = tmp_path_factory.mktemp(name)
    d = write_linkage_tables(root / "dm")
    doc = {
        "name": name, "task": "linkage", "seed": 3,
        "data": {"source": "deepmatcher_csv", "path": str(d),
                 "fields": {"name": "text", "city": "categorical", "year": "numeric"}},
        "model": {"dim": 16, "encoders": {"text": {"name": "char_ngram", "num_buckets": 4096, "max_ngrams": 32}},
                  "blocking_k": 4, "matches_out": str(root / "matches.parquet"), **model_cfg},
        "train": {"epochs": 5, "batch_size": 16, "lr": 0.01, "monitor": "f1", "patience": None,
                  "checkpoint_dir": str(root / "checkpoints"), "num_threads": 1, **(train or {})},
        "evaluate": {"geometry": False},
        "tracking": {"enabled": False},
    }
    pipeline = root / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(doc, sort_keys=False))
    with _linkage_plugins():
        _invoke("run", pipeline, "--no-track")
        _invoke("export", pipeline, "-o", root / "export")
        task, model = _load_trained(pipeline)
        task.evaluate(model, "valid")  # chooses the threshold on valid, as the export did
    assert "serving" in json.loads((root / "export" / "export.json").read_text())  # written by LinkageTask
    return Trained(pipeline, root / "export", task, model)


@pytest.fixture(scope="session")
def linkage_model(tmp_path_factory) -> Trained:
    """A linkage bi-encoder with a pair classifier (text, categorical and numeric fields: both ONNX inputs) on 60
    generated entities, 5 epochs, exported with its serving files."""
    return _linkage(tmp_path_factory, "linkage-rerank", {})


@pytest.fixture(scope="session")
def linkage_features_model(tmp_path_factory) -> Trained:
    """The same data, the pair classifier over weight-free features only: TF-IDF cosines (word, char) and typed
    spans, computed from the raw values at serving time."""
    return _linkage(tmp_path_factory, "linkage-features", {"rerank": {
        "tfidf": ["word", "char"], "spans": True, "learned_features": False}})


@pytest.fixture(scope="session")
def linkage_fallback_model(tmp_path_factory) -> Trained:
    """The same data, a classifier that has not learned (one epoch at lr 1e-6) with ``rerank.tfidf_fallback``: the
    untrained char TF-IDF cosine of the whole record wins on valid and scores the pairs, in the task and the export."""
    trained = _linkage(tmp_path_factory, "linkage-fallback", {"rerank": {"tfidf": ["char"], "tfidf_fallback": True}},
                       {"epochs": 1, "lr": 1e-6})
    assert trained.task.scorer == "tfidf" and trained.task.fallback_feature == "tfidf_char_record"
    return trained


@pytest.fixture(scope="session")
def linkage_cosine_model(tmp_path_factory) -> Trained:
    """The same data, cosine scores (no classifier), mean fusion and a whole-record field."""
    return _linkage(tmp_path_factory, "linkage-cosine", {"rerank": None, "fusion": "mean", "whole_record": True})


@pytest.fixture(scope="session")
def linkage_cross_model(tmp_path_factory) -> Trained:
    """The same data, pairs scored by a cross-encoder (a tiny BERT written here) fine-tuned for 2 epochs."""
    pytest.importorskip("transformers")
    from tests.tiny_bert import write_tiny_bert

    bert = write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), FIRST + LAST + CITY + ["name", "city", "year"])
    return _linkage(tmp_path_factory, "linkage-cross", {"rerank": None, "cross_encoder": {
        "model_path": str(bert), "max_length": 32, "lr": 1e-3, "batch_size": 8, "epochs": 2}})


@pytest.fixture
def linkage_registry():
    """The linkage plugin registered in memory, so featurisers can be rebuilt from the registry."""
    with _linkage_plugins():
        yield
