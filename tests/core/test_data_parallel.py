"""``engine run --nproc 2`` against one process, with the same seed and global batch: graph (the quickstart data),
sequential and linkage families, resume, bad input. Every process group is 2 gloo ranks on 127.0.0.1, started and
stopped by the test (``engine.train.launch``), under a pytest timeout.

The exactness checks run in float64 (``distributed_workers.run_float64``): the ranks then differ from one process
by summation order only (1e-15), so parameters after every step of the first epochs and the final metrics agree to
1e-9. In float32 the same runs agree to about 1e-6 after one step, and the difference grows over hundreds of Adam
steps (see the slow test).
"""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
import yaml
from click.testing import CliRunner

from engine.cli import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]


def quickstart(tmp_path, name: str, **train) -> "PipelineConfig":  # noqa: F821
    from engine.config import load_pipeline

    overrides = [f"data.path={tmp_path / 'data'}", f"train.checkpoint_dir={tmp_path / name}", "tracking.enabled=false"]
    overrides += [f"train.{k}={v}" for k, v in train.items()]
    return load_pipeline(str(ROOT / "pipelines" / "quickstart.yaml"), overrides)


def both(cfg_one, cfg_two):
    """(1-process outcome, weights), (2-rank outcome, weights), both in float64."""
    from engine.train.launch import launch

    from distributed_workers import run_float64

    one = run_float64(cfg_one)
    two = launch(2, "cpu", run_float64, (cfg_two,))
    return one, two


def assert_same_run(one, two, atol=1e-9):
    (o1, w1), (o2, w2) = one, two
    assert o1.best_epoch == o2.best_epoch and o1.epochs_run == o2.epochs_run
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=0, atol=atol), (k, (w1[k] - w2[k]).abs().max())
    assert o1.test_metrics.keys() == o2.test_metrics.keys()
    for k, v in o1.test_metrics.items():
        assert o2.test_metrics[k] == pytest.approx(v, abs=1e-9), k


@pytest.mark.timeout(300)
def test_two_ranks_equal_one_process_on_the_quickstart(tmp_path, graphcl_plugins):
    """XSimGCL on the quickstart data (1,000 users, 30k interactions, global batch 256: 118 steps an epoch, the last
    one ragged), 1 epoch: the 2-rank weights equal the 1-process weights and the test metrics are the same."""
    one, two = both(quickstart(tmp_path, "one", epochs=1, eval_every=1),
                    quickstart(tmp_path, "two", epochs=1, eval_every=1))
    assert_same_run(one, two)
    assert one[0].test_metrics["ndcg@20"] > 0.05  # it learned something


@pytest.mark.timeout(300)
def test_two_ranks_equal_one_process_after_the_first_step(tmp_path, graphcl_plugins):
    """In float32 (the shipped dtype): 1 epoch of a single step (global batch = the whole training set). Adam's
    first step is about lr * sign(g) per coordinate, so a coordinate whose gradient is at float32 noise level may
    move differently: the weights agree to 6e-6 here (lr 0.01), most coordinates to 1e-7."""
    from engine.train.launch import launch

    from distributed_workers import first_step_float32

    cfgs = [quickstart(tmp_path, n, epochs=1, batch_size=40000) for n in ("one", "two")]
    w1 = first_step_float32(cfgs[0])
    w2 = launch(2, "cpu", first_step_float32, (cfgs[1],))
    for k in w1:
        diff = (w1[k] - w2[k]).abs()
        assert diff.max() < 2e-5, (k, diff.max())
        assert (diff < 1e-7).float().mean() > 0.99, (k, (diff < 1e-7).float().mean())


def family_tests(family: str):
    """The module ``tests/<family>/test_task.py`` (its data fixtures), loaded by path under its own name."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_dp_{family}_test_task", ROOT / "tests" / family / "test_task.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seqrec_doc(tmp_path, name):
    t = family_tests("seqrec")
    make_sequences, pipeline_doc = t.make_sequences, t.pipeline_doc

    seqs = make_sequences(num_users=40, seed=1)
    doc = pipeline_doc(tmp_path, seqs, {"loss": "ce", "contrast": {
        "objective": {"name": "infonce", "temperature": 0.5, "intra_view_negatives": True, "weight": 0.1},
        "views": "augment", "augmenters": [{"name": "crop"}, {"name": "mask"}, {"name": "reorder"}]}},
        epochs=3, lr=0.01, batch_size=19, eval_every=1, patience=None, monitor="ndcg@5",
        checkpoint_dir=str(tmp_path / name))
    return doc


@pytest.mark.timeout(300)
def test_two_ranks_equal_one_process_seqrec(tmp_path, seqrec_plugins):
    """CL4SRec (SASRec, dropout 0, NT-Xent over both augmented views) on 39 training sequences, global batch 19
    (10 + 9 rows; the last batch of 1 row is computed whole on both ranks): same weights and metrics."""
    from engine.config import load_pipeline

    one, two = both(load_pipeline(seqrec_doc(tmp_path, "one")), load_pipeline(seqrec_doc(tmp_path, "two")))
    assert_same_run(one, two)


def linkage_doc(tmp_path, name):
    write_deepmatcher = family_tests("linkage").write_deepmatcher

    d = write_deepmatcher(tmp_path / "dm", n=60)
    return {
        "name": "dp-linkage", "task": "linkage", "seed": 3,
        "data": {"source": "deepmatcher_csv", "path": str(d), "fields": {"name": "text", "city": "text",
                                                                          "year": "text"}},
        "model": {"dim": 16, "encoders": {"text": {"name": "char_ngram", "num_buckets": 4096, "max_ngrams": 32}},
                  "blocking_k": 3, "rerank": {"hard_negatives": 1}},
        "train": {"epochs": 3, "batch_size": 16, "lr": 0.01, "monitor": "f1", "patience": None,
                  "checkpoint_dir": str(tmp_path / name)},
        "evaluate": {"geometry": False},
        "tracking": {"enabled": False},
    }


@pytest.mark.timeout(300)
def test_two_ranks_equal_one_process_linkage(tmp_path, linkage_plugins):
    """DeepMatcher-style tables: symmetric InfoNCE over matched pairs (15 per batch: 8 + 7) plus the pair classifier
    on labelled and mined pairs: same weights and metrics."""
    from engine.config import load_pipeline

    one, two = both(load_pipeline(linkage_doc(tmp_path, "one")), load_pipeline(linkage_doc(tmp_path, "two")))
    assert_same_run(one, two)


def tiny_graph(tmp_path, epochs, **extra) -> pathlib.Path:
    doc = {
        "name": "dp-tiny", "task": "graph_cf", "seed": 11,
        "data": {"source": "synthetic_cf", "path": str(tmp_path / "data"), "num_users": 60, "num_items": 50,
                 "per_user": 8, "communities": 4, "seed": 3},
        "model": {"encoder": {"name": "lightgcn", "embedding_dim": 16, "num_layers": 2},
                  "augmenter": {"name": "edge_dropout", "p": 0.1}, "loss": "bpr",
                  "contrast": {"objective": {"name": "infonce", "temperature": 0.2, "weight": 0.1},
                               "views": "augment"}},
        "train": {"epochs": epochs, "batch_size": 64, "lr": 0.02, "patience": None, "eval_every": 1,
                  "checkpoint_dir": str(tmp_path / "checkpoints")},
        "evaluate": {"ks": [10, 20]},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        **extra,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def invoke(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.mark.timeout(300)
def test_resume_under_nproc_equals_an_uninterrupted_run(tmp_path, graphcl_plugins):
    """SGL on 2 ranks: 2 epochs, then --resume to 4, equals 4 epochs uninterrupted on 2 ranks (same MLflow run
    continued; rank 0 alone logged and checkpointed)."""
    from mlflow.tracking import MlflowClient

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    invoke("run", tiny_graph(a, 4), "--nproc", "2", "--metrics-out", a / "m.json")
    p = tiny_graph(b, 2)
    invoke("run", p, "--nproc", "2", "--metrics-out", b / "m2.json")
    first = json.loads((b / "m2.json").read_text())
    invoke("run", p, "--nproc", "2", "--resume", "--set", "train.epochs=4", "--metrics-out", b / "m.json")
    want, got = json.loads((a / "m.json").read_text()), json.loads((b / "m.json").read_text())
    assert got["epochs"] == 4 and got["run_id"] == first["run_id"]
    for k, v in want.items():
        if k not in ("run_id", "train_seconds"):
            assert got[k] == pytest.approx(v, abs=1e-7), k
    run = MlflowClient(tracking_uri=f"sqlite:///{b}/mlflow.db").get_run(got["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["engine.world_size"] == "2"
    history = MlflowClient(tracking_uri=f"sqlite:///{b}/mlflow.db").get_metric_history(got["run_id"], "loss/total")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]  # one value an epoch: rank 0 only


@pytest.mark.parametrize("nproc, message", [
    ("0", "Error: --nproc: must be >= 1 (got 0)"),
    ("-3", "Error: --nproc: must be >= 1 (got -3)"),
    ("65", "Error: --nproc: 65 ranks but train.batch_size is 64: every rank needs rows of each batch; use "
           "--nproc <= 64 or raise train.batch_size"),
])
def test_bad_nproc_is_one_line_exit_2_and_writes_nothing(tmp_path, graphcl_plugins, nproc, message):
    p = tiny_graph(tmp_path, 1)
    result = invoke("run", p, "--nproc", nproc, "--metrics-out", tmp_path / "m.json", ok=False)
    assert result.exit_code == 2
    assert result.output.strip() == message
    assert sorted(x.name for x in tmp_path.iterdir()) == ["pipeline.yaml"]  # no data, checkpoint, run, metrics


def test_an_objective_that_does_not_split_over_ranks_is_refused_before_workers_start(tmp_path, graphcl_plugins):
    p = tiny_graph(tmp_path, 1)
    result = invoke("run", p, "--nproc", "2", "--set", "model.contrast.objective={name: siglip, weight: 0.1}",
                    "--metrics-out", tmp_path / "m.json", ok=False)
    assert result.exit_code == 2
    assert result.output.startswith("Error: --nproc: objective 'siglip' (model.contrast) does not split over ranks")
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "m.json").exists()
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_full_quickstart_float32_reaches_the_same_metrics(tmp_path):
    """The quickstart as shipped (float32, 12 epochs, early stopping), via the console script with entry points:
    1 process and 2 ranks end within 0.01 of each other on every test metric."""
    import os
    import subprocess
    import sys

    engine = pathlib.Path(sys.executable).with_name("engine")
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_LOAD_PLUGINS"}  # the installed entry points
    out = {}
    for n in (1, 2):
        subprocess.run([str(engine), "run", str(ROOT / "pipelines" / "quickstart.yaml"), "--nproc", str(n),
                        "--set", f"data.path={tmp_path / 'data'}", "--set", f"train.checkpoint_dir={tmp_path / str(n)}",
                        "--no-track", "--metrics-out", str(tmp_path / f"{n}.json")], check=True, timeout=500,
                       env=env)
        out[n] = json.loads((tmp_path / f"{n}.json").read_text())
    for k in ("recall@20", "ndcg@20", "recall@10", "ndcg@10"):
        assert out[2][k] == pytest.approx(out[1][k], abs=0.01), k


@pytest.mark.timeout(240)
def test_sigterm_stops_every_rank_and_the_run_is_killed_and_resumable(tmp_path):
    """A real `engine run --nproc 2` (console script, plugins from entry points) stopped with SIGTERM mid-training:
    exit 130 with the resume hint, no worker left running, the MLflow run KILLED, and --resume continues it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil
    from mlflow.tracking import MlflowClient

    from long_run import write_long_pipeline

    pipeline, uri, ck = write_long_pipeline(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_LOAD_PLUGINS"}
    engine = str(pathlib.Path(sys.executable).parent / "engine")
    proc = subprocess.Popen([engine, "run", str(pipeline), "--nproc", "2"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 150
    while not (ck / "term" / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert (ck / "term" / "last.pt").exists(), proc.communicate(timeout=30)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len([w for w in workers if "spawn_main" in " ".join(w.cmdline())]) == 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("term").experiment_id])
    assert run.info.status == "KILLED"
    from engine.train import load_checkpoint

    last = load_checkpoint(ck / "term" / "last.pt")["epoch"]
    done = subprocess.run([engine, "run", str(pipeline), "--nproc", "2", "--resume", "--set",
                           f"train.epochs={last + 2}", "--metrics-out", str(tmp_path / "m.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr
    out = json.loads((tmp_path / "m.json").read_text())
    assert out["epochs"] == last + 2 and out["run_id"] == run.info.run_id
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


@pytest.mark.timeout(240)
def test_under_torchrun_engine_run_joins_its_process_group(tmp_path):
    """`torchrun --nproc-per-node 2 -m engine.cli run PIPELINE` (no --nproc): the ranks join torchrun's group (env://),
    rank 0 alone writes the metrics, and they equal `engine run --nproc 2`'s."""
    import os
    import subprocess
    import sys

    from engine.train.launch import free_port

    env = {k: v for k, v in os.environ.items() if k != "ENGINE_LOAD_PLUGINS"}
    bin_dir = pathlib.Path(sys.executable).parent
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    pa, pb = tiny_graph(a, 2), tiny_graph(b, 2)
    ran = subprocess.run([str(bin_dir / "torchrun"), "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                          "--master-port", str(free_port()),
                          "-m", "engine.cli", "run", str(pa), "--metrics-out", str(a / "m.json")],
                         env=env, capture_output=True, text=True, timeout=200)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.count("test: ") == 1  # rank 0 reports
    spawned = subprocess.run([str(bin_dir / "engine"), "run", str(pb), "--nproc", "2", "--metrics-out",
                              str(b / "m.json")], env=env, capture_output=True, text=True, timeout=200)
    assert spawned.returncode == 0, spawned.stderr
    want, got = json.loads((b / "m.json").read_text()), json.loads((a / "m.json").read_text())
    for k, v in want.items():
        if k not in ("run_id", "train_seconds"):
            assert got[k] == pytest.approx(v, abs=1e-7), k
