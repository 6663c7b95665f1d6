"""End-to-end runs of ``engine run / evaluate / export`` on tiny generated data, with numbers asserted.

Every run is in-process (click's CliRunner, plugins registered in memory by ``graphcl_plugins``) except
``engine plugins list``, which runs the real console script with entry points on. Data, checkpoints and MLflow
stores live under ``tmp_path``.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from engine.cli import cli

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

ENGINE = pathlib.Path(sys.executable).with_name("engine")

SHAPES = {
    "lightgcn": {"encoder": {"name": "lightgcn", "embedding_dim": 16, "num_layers": 2}, "loss": "bpr"},
    "sgl": {
        "encoder": {"name": "lightgcn", "embedding_dim": 16, "num_layers": 2},
        "augmenter": {"name": "edge_dropout", "p": 0.1},
        "loss": "bpr",
        "contrast": {"objective": {"name": "infonce", "temperature": 0.2, "weight": 0.1}, "views": "augment"},
    },
    "simgcl": {
        "encoder": {"name": "lightgcn", "embedding_dim": 16, "num_layers": 2},
        "augmenter": {"name": "embedding_noise", "eps": 0.1},
        "skip_ego": True,
        "loss": "bpr",
        "contrast": {"objective": {"name": "infonce", "temperature": 0.2, "weight": 0.2}, "views": "augment"},
    },
    "xsimgcl": {
        "encoder": {"name": "lightgcn", "embedding_dim": 16, "num_layers": 2},
        "augmenter": {"name": "embedding_noise", "eps": 0.2},
        "perturb_main": True,
        "skip_ego": True,
        "loss": "bpr",
        "contrast": {"objective": {"name": "infonce", "temperature": 0.15, "weight": 0.2}, "views": "cross_layer",
                     "layer": 1},
    },
    "dccf": {
        "encoder": {"name": "dccf", "embedding_dim": 16, "num_layers": 2, "num_intents": 8},
        "loss": "bpr",
        "contrast": {"objective": {"name": "infonce", "temperature": 0.2, "weight": 0.1}, "views": "encoder"},
    },
}


# -- helpers ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One sqlite MLflow store for the module's tracked runs (creating the schema is the slow part)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


def make_pipeline(tmp_path, *, name="tiny", model="lightgcn", epochs=3, tracking=None, **train) -> pathlib.Path:
    """A pipeline.yaml in ``tmp_path`` on 60 users x 50 items of generated data, checkpoints there too; tracked to
    the MLflow URI ``tracking`` (default: not tracked)."""
    doc = {
        "name": name,
        "task": "graph_cf",
        "seed": 11,
        "data": {"source": "synthetic_cf", "path": str(tmp_path / "data"), "num_users": 60, "num_items": 50,
                 "per_user": 8, "communities": 4, "seed": 3},
        "model": SHAPES[model] if isinstance(model, str) else model,
        "train": {"epochs": epochs, "batch_size": 64, "lr": 0.02, "patience": None, "eval_every": 1,
                  "checkpoint_dir": str(tmp_path / "checkpoints"), **train},
        "evaluate": {"ks": [10, 20]},
        "tracking": {"uri": tracking} if tracking else {"enabled": False},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def invoke(*args: str, ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def run(pipeline, tmp_path, *extra: str, out: str = "metrics.json") -> dict:
    invoke("run", pipeline, "--metrics-out", tmp_path / out, *extra)
    return json.loads((tmp_path / out).read_text())


def read_split(path: pathlib.Path) -> dict[int, set[int]]:
    rows = {}
    for line in path.read_text().split("\n"):
        ids = [int(t) for t in line.split()]
        if ids:
            rows[ids[0]] = set(ids[1:])
    return rows


def random_ranking_ndcg(data_dir: pathlib.Path, k: int, num_items: int) -> float:
    """Expected test NDCG@k of a uniformly random ranking of the candidates (train and valid items masked)."""
    train, valid, test = (read_split(data_dir / f"{s}.txt") for s in ("train", "valid", "test"))
    values = []
    for u, truth in test.items():
        if not truth:
            continue
        candidates = num_items - len(train.get(u, set()) | valid.get(u, set()))
        p = len(truth) / candidates  # each rank holds a relevant item with this probability
        dcg = sum(p / math.log2(r + 1) for r in range(1, min(k, candidates) + 1))
        idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(truth), k) + 1))
        values.append(dcg / idcg)
    return float(np.mean(values))


# -- one tracked run, numbers asserted -------------------------------------------------------------------------------


def test_lightgcn_run_beats_random_and_is_tracked(tmp_path, graphcl_plugins, mlflow_uri):
    from mlflow.tracking import MlflowClient

    from engine.config import load_pipeline
    from engine.run import prepare

    pipeline = make_pipeline(tmp_path, epochs=4, tracking=mlflow_uri, lr=0.05)
    metrics = run(pipeline, tmp_path)

    # metrics JSON: lower-case metric keys and the run id
    assert {"recall@10", "recall@20", "ndcg@10", "ndcg@20", "run_id"} <= set(metrics)
    assert metrics["epochs"] == 4 and 1 <= metrics["best_epoch"] <= 4
    assert all(0.0 <= metrics[k] <= 1.0 for k in metrics if "@" in k)

    # it learned: well above a random ranking and above the same model untrained
    random_ndcg = random_ranking_ndcg(tmp_path / "data", 20, 50)
    cfg = load_pipeline(pipeline)
    task, untrained = prepare(cfg)
    untrained_ndcg = task.evaluate(untrained, "test")["ndcg@20"]
    assert 0.05 < random_ndcg < 0.5
    assert metrics["ndcg@20"] > 1.5 * random_ndcg, (metrics["ndcg@20"], random_ndcg)
    assert metrics["ndcg@20"] > untrained_ndcg + 0.05, (metrics["ndcg@20"], untrained_ndcg)
    assert metrics["recall@20"] > metrics["recall@10"] > 0

    # the MLflow run
    client = MlflowClient(tracking_uri=mlflow_uri)
    mlrun = client.get_run(metrics["run_id"])
    assert mlrun.info.status == "FINISHED"
    params = mlrun.data.params
    assert params["config.model.encoder.name"] == "lightgcn"
    assert params["config.train.epochs"] == "4"
    assert params["data.num_users"] == "60" and params["data.num_items"] == "50"
    assert mlrun.data.tags["engine.task"] == "graph_cf"
    losses = client.get_metric_history(metrics["run_id"], "loss/total")
    assert sorted(m.step for m in losses) == [1, 2, 3, 4]
    assert all(math.isfinite(m.value) and m.value > 0 for m in losses)
    by_step = {m.step: m.value for m in losses}
    assert by_step[4] < by_step[1]  # BPR goes down
    valid = client.get_metric_history(metrics["run_id"], "valid/ndcg_at_20")
    assert sorted(m.step for m in valid) == [1, 2, 3, 4]
    logged = mlrun.data.metrics
    assert "valid/ndcg@20" not in logged
    for key in ("ndcg@20", "recall@20", "ndcg@10"):
        assert logged[f"test/{key.replace('@', '_at_')}"] == pytest.approx(metrics[key], abs=1e-9)
    assert logged["best_epoch"] == metrics["best_epoch"]
    assert math.isfinite(logged["geometry/alignment"])

    names = {a.path for a in client.list_artifacts(metrics["run_id"])}
    names |= {a.path for d in ("plots", "checkpoints") for a in client.list_artifacts(metrics["run_id"], d)}
    assert {"pipeline.yaml", "plots/training_curves.png", "plots/embedding_geometry.png",
            "checkpoints/best.pt"} <= names
    local = pathlib.Path(client.download_artifacts(metrics["run_id"], "pipeline.yaml", str(tmp_path / "dl")))
    assert yaml.safe_load(local.read_text())["model"]["encoder"]["name"] == "lightgcn"


# -- every model shape trains -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", list(SHAPES))
def test_model_shapes_run_one_epoch(tmp_path, graphcl_plugins, shape):
    pipeline = make_pipeline(tmp_path, model=shape, epochs=1)
    result = invoke("run", pipeline, "--metrics-out", tmp_path / "m.json")
    metrics = json.loads((tmp_path / "m.json").read_text())
    values = {k: v for k, v in metrics.items() if "@" in k}
    assert len(values) == 10 and all(math.isfinite(v) and 0 <= v <= 1 for v in values.values())
    assert metrics["epochs"] == 1 and metrics["run_id"] is None
    # the epoch line names every loss term with a finite value; contrastive shapes have a positive contrast term
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("epoch 1/1:"))
    terms = dict(re.findall(r"(\S+)=(-?[0-9.]+(?:e-?\d+)?)", line))
    assert all(math.isfinite(float(v)) for v in terms.values())
    assert "rec/bpr" in terms and "reg" in terms
    if "contrast" in SHAPES[shape]:
        assert float(terms["contrast"]) > 0
    else:
        assert "contrast" not in terms
    if shape == "dccf":
        assert float(terms["intent_reg"]) > 0
    assert (tmp_path / "checkpoints" / "tiny" / "best.pt").is_file()


def test_seed_alone_sets_the_initial_weights(tmp_path, graphcl_plugins):
    from engine.config import load_pipeline
    from engine.run import prepare

    pipeline = make_pipeline(tmp_path)

    def initial(*overrides):
        torch.randn(100)  # whatever the process drew before must not matter
        _, model = prepare(load_pipeline(pipeline, overrides))
        return model.encoder.embedding.weight.detach().clone()

    assert torch.equal(initial(), initial())
    assert not torch.equal(initial(), initial("seed=12"))


# -- resume -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["sgl", "xsimgcl"])  # per-epoch generator (edge dropout) / global RNG (noise)
def test_resume_equals_uninterrupted_run(tmp_path, graphcl_plugins, shape, mlflow_uri):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir(), b_dir.mkdir()
    straight = run(make_pipeline(a_dir, model=shape, epochs=4), a_dir)
    # B: same pipeline (tracked), its data generated into its own dir; 2 epochs, then resumed to 4
    pipeline_b = make_pipeline(b_dir, model=shape, epochs=2, tracking=mlflow_uri)
    first = run(pipeline_b, b_dir, out="first.json")
    assert first["epochs"] == 2
    resumed = run(pipeline_b, b_dir, "--resume", "--set", "train.epochs=4")
    assert resumed["epochs"] == 4
    # the resumed run continues the same MLflow run: one value per epoch, finished
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    assert resumed["run_id"] == first["run_id"]
    assert client.get_run(first["run_id"]).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(first["run_id"], "loss/total")) == [1, 2, 3, 4]
    assert resumed["best_epoch"] == straight["best_epoch"]
    for key in (k for k in straight if "@" in k):
        assert resumed[key] == pytest.approx(straight[key], abs=1e-6), key
    last_a = torch.load(a_dir / "checkpoints" / "tiny" / "last.pt", weights_only=False)
    last_b = torch.load(b_dir / "checkpoints" / "tiny" / "last.pt", weights_only=False)
    for name, tensor in last_a["model"].items():
        assert torch.allclose(tensor, last_b["model"][name], atol=1e-6), name
    assert [h["epoch"] for h in last_b["history"]] == [1, 2, 3, 4]
    for ha, hb in zip(last_a["history"], last_b["history"]):
        assert hb["loss/total"] == pytest.approx(ha["loss/total"], abs=1e-6)


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path, graphcl_plugins):
    pipeline = make_pipeline(tmp_path, epochs=1)
    invoke("run", pipeline)
    last = tmp_path / "checkpoints" / "tiny" / "last.pt"
    before = last.read_bytes()
    result = invoke("run", pipeline, "--resume", "--set", "model.encoder.embedding_dim=8",
                    "--metrics-out", tmp_path / "m.json", ok=False)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "last.pt" in lines[0] and "different pipeline configuration" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "m.json").exists()
    assert last.read_bytes() == before


def test_resume_without_checkpoint_starts_from_scratch(tmp_path, graphcl_plugins):
    pipeline = make_pipeline(tmp_path, epochs=2)
    result = invoke("run", pipeline, "--resume", "--metrics-out", tmp_path / "m.json")
    assert "no checkpoint in" in result.stderr and "starting from scratch" in result.stderr
    assert "epoch 1/2:" in result.stderr and "epoch 2/2:" in result.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["epochs"] == 2
    assert (tmp_path / "checkpoints" / "tiny" / "last.pt").is_file()


# -- export and evaluate ----------------------------------------------------------------------------------------------


def test_export_onnx_matches_torch_and_evaluate_reproduces_test(tmp_path, graphcl_plugins):
    import onnxruntime as ort

    from engine.config import load_pipeline
    from engine.run import prepare
    from engine.train import load_checkpoint

    pipeline = make_pipeline(tmp_path, epochs=2)
    metrics = run(pipeline, tmp_path)

    # evaluate the best checkpoint: the run's test metrics again
    best = tmp_path / "checkpoints" / "tiny" / "best.pt"
    invoke("evaluate", pipeline, "--checkpoint", best, "--metrics-out", tmp_path / "eval.json")
    again = json.loads((tmp_path / "eval.json").read_text())
    assert set(again) == {k for k in metrics if "@" in k}
    for key, value in again.items():
        assert value == pytest.approx(metrics[key], abs=1e-9), key

    # export: model.onnx + export.json with the parity report
    out = tmp_path / "onnx"
    invoke("export", pipeline, "-o", out)
    report = json.loads((out / "export.json").read_text())
    assert (out / "model.onnx").is_file()
    assert report["max_abs_diff"] < 1e-4
    assert report["provider"] == "CPUExecutionProvider"
    assert report["num_users"] == 60 and report["num_items"] == 50

    # onnxruntime's top-10 equals torch's ranking from the same weights
    task, model = prepare(load_pipeline(pipeline))
    model.load_state_dict(load_checkpoint(best)["model"])
    users_emb, items_emb = task.embeddings(model)
    users = np.array([0, 7, 13, 42, 59], dtype=np.int64)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"user": users})
    assert scores.shape == (5, 50)
    expected = users_emb[torch.as_tensor(users)] @ items_emb.T
    np.testing.assert_allclose(scores, expected.numpy(), atol=1e-5)
    onnx_top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    torch_top = torch.topk(expected, 10, dim=1).indices.numpy()
    assert (onnx_top == torch_top).all()


# -- early stopping ---------------------------------------------------------------------------------------------------


def test_early_stopping_when_validation_cannot_improve(tmp_path, graphcl_plugins):
    pipeline = make_pipeline(tmp_path, epochs=6, lr=1e-9, patience=1, eval_every=1)
    result = invoke("run", pipeline, "--metrics-out", tmp_path / "m.json")
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["epochs"] < 6
    assert metrics["epochs"] == 2 and metrics["best_epoch"] == 1
    assert "epoch 3/6" not in result.stderr


# -- plugins through entry points (the real console script) -----------------------------------------------------------


def test_plugins_list_json_subprocess(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_LOAD_PLUGINS"}
    proc = subprocess.run([str(ENGINE), "plugins", "list", "--json"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(proc.stdout)}
    assert rows[("encoder", "lightgcn")]["plugin"] == "graphcl"
    assert rows[("encoder", "dccf")]["plugin"] == "graphcl"
    assert rows[("objective", "infonce")]["plugin"] == "objectives"
    assert rows[("objective", "bpr")]["plugin"] == "objectives"
    assert rows[("task", "graph_cf")]["plugin"] == "graphcl"
    assert rows[("encoder", "lightgcn")]["distribution"] == "engine-graphcl"
    assert not any(r["builtin"] for r in rows.values())


def test_sigterm_marks_the_run_killed(tmp_path):
    """A real `engine run` subprocess stopped with SIGTERM mid-training: exit 130, a resume hint, the run KILLED."""
    import signal
    import subprocess
    import time

    from mlflow.tracking import MlflowClient

    from long_run import write_long_pipeline

    pipeline, uri, ck = write_long_pipeline(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_LOAD_PLUGINS"}
    engine = str(pathlib.Path(sys.executable).parent / "engine")
    proc = subprocess.Popen([engine, "run", str(pipeline)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (ck / "term" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (ck / "term" / "last.pt").exists(), proc.communicate(timeout=30)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("term")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "KILLED"
