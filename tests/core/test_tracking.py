"""Tracking: metric names and flattened params, the null tracker, and a real MLflow run on a local sqlite store."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from engine.tracking import MlflowTracker, NullTracker, Tracker, default_tracking_uri, flatten, make_tracker, metric_key

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")


# -- pure helpers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,key",
    [
        ("recall@20", "recall_at_20"),
        ("ndcg@10", "ndcg_at_10"),
        ("loss/infonce/contrastive", "loss/infonce/contrastive"),
        ("valid/hr@5", "valid/hr_at_5"),
        ("a-b_c.d e:f", "a-b_c.d e:f"),
        ("weird#name(1)", "weird_name_1_"),
        ("température", "temp_rature"),
    ],
)
def test_metric_key(name, key):
    assert metric_key(name) == key


def test_flatten_nested_dicts_and_lists():
    assert flatten({"a": {"b": 1}, "c": [1, {"d": 2}]}) == {"a.b": 1, "c.0": 1, "c.1.d": 2}


def test_flatten_keeps_scalar_lists_and_empty_values():
    params = {
        "evaluate": {"ks": [10, 20], "metrics": ("recall", "ndcg")},
        "model": {"objectives": [{"name": "infonce", "weight": 1.0}, {"name": "bpr"}], "encoder": {}},
        "seed": 7,
        "tags": [],
        "nested": [[1, 2], [3]],
        "none": None,
    }
    assert flatten(params) == {
        "evaluate.ks": [10, 20],
        "evaluate.metrics": ("recall", "ndcg"),
        "model.objectives.0.name": "infonce",
        "model.objectives.0.weight": 1.0,
        "model.objectives.1.name": "bpr",
        "seed": 7,
        "tags": [],
        "nested.0": [1, 2],
        "nested.1": [3],
        "none": None,
    }


def test_flatten_prefix():
    assert flatten({"x": {"y": 1}}, prefix="data.") == {"data.x.y": 1}


def test_null_tracker_records_nothing():
    tracker = NullTracker()
    assert NullTracker is Tracker
    tracker.log_params({"a": 1})
    tracker.log_metrics({"recall@20": 0.5}, step=1)
    tracker.log_artifact("missing.txt")
    tracker.log_text("x", "x.txt")
    tracker.log_figure(object(), "fig.png")
    tracker.set_tags({"k": "v"})
    tracker.end("FAILED")
    assert tracker.run_id is None and tracker.artifact_uri is None
    with pytest.raises(AttributeError):
        tracker.log_anything  # no catch-all __getattr__


def test_make_tracker_disabled_gives_null_tracker():
    cfg = SimpleNamespace(name="p", tracking=SimpleNamespace(enabled=False, uri=None, experiment=None))
    assert type(make_tracker(cfg)) is Tracker
    cfg.tracking.enabled = True
    assert type(make_tracker(cfg, enabled=False)) is Tracker


def test_default_tracking_uri(tmp_path):
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"


# -- MLflow on a local sqlite store --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path_factory.mktemp("mlflow")
    yield SimpleNamespace(root=root, uri=f"sqlite:///{root}/db/mlflow.db")
    mp.undo()


class FakeFigure:
    def savefig(self, path, dpi=None, bbox_inches=None):
        Path(path).write_bytes(b"\x89PNG fake")


def test_mlflow_tracker_logs_a_run(store, tmp_path):
    from mlflow.tracking import MlflowClient

    tracker = MlflowTracker(store.uri, experiment="core-tests", run_name="tiny")
    assert (store.root / "db" / "mlflow.db").is_file()  # the parent folder is created
    tracker.log_params(
        {
            "train": {"lr": 0.01, "epochs": 3},
            "evaluate": {"ks": [10, 20]},
            "model": {"objectives": [{"name": "infonce", "weight": 0.5}]},
            "data": {"path": "x" * 7000},
            "odd@key": 1,
        }
    )
    tracker.log_metrics({"recall@20": 0.25, "loss/total": 1.5}, step=1)
    tracker.log_metrics({"recall@20": 0.5, "loss/total": 1.0}, step=2)
    tracker.log_metrics({})  # nothing to log is fine
    tracker.log_text("epochs: 3\n", "config/pipeline.yaml")
    extra = tmp_path / "notes.txt"
    extra.write_text("hello")
    tracker.log_artifact(extra)
    tracker.log_artifact(extra, "more")
    tracker.log_figure(FakeFigure(), "plots/geometry.png")
    tracker.log_figure(FakeFigure(), "top.png")
    tracker.set_tags({"engine.task": "tiny", "attempt": 2})
    tracker.end()

    client = MlflowClient(tracking_uri=store.uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny"
    assert run.info.experiment_id == tracker.experiment_id
    assert client.get_experiment(tracker.experiment_id).name == "core-tests"

    params = run.data.params
    assert params["train.lr"] == "0.01" and params["train.epochs"] == "3"
    assert params["evaluate.ks"] == "[10, 20]"
    assert params["model.objectives.0.name"] == "infonce" and params["model.objectives.0.weight"] == "0.5"
    assert params["data.path"] == "x" * 6000  # long values are truncated, not rejected
    assert params["odd_at_key"] == "1"

    history = client.get_metric_history(tracker.run_id, "recall_at_20")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 0.25), (2, 0.5)]
    assert run.data.metrics["loss/total"] == 1.0

    assert run.data.tags["engine.task"] == "tiny" and run.data.tags["attempt"] == "2"

    listed = {a.path for a in client.list_artifacts(tracker.run_id)}
    assert {"config", "notes.txt", "more", "plots", "top.png"} <= listed
    text = Path(client.download_artifacts(tracker.run_id, "config/pipeline.yaml", str(tmp_path)))
    assert text.read_text() == "epochs: 3\n"
    assert {a.path for a in client.list_artifacts(tracker.run_id, "plots")} == {"plots/geometry.png"}
    # artifacts live next to the database, not in the working directory
    assert tracker.artifact_uri.startswith((store.root / "db" / "artifacts").as_uri())


def test_mlflow_tracker_resume_reopens_the_run_and_keeps_params(store):
    from mlflow.tracking import MlflowClient

    first = MlflowTracker(store.uri, experiment="core-resume", run_name="r")
    first.log_params({"train": {"lr": 0.01}})
    first.log_metrics({"recall@20": 0.1}, step=1)
    first.end("KILLED")

    again = MlflowTracker(store.uri, experiment="core-resume", run_name="r", resume_run_id=first.run_id)
    assert again.run_id == first.run_id and again.experiment_id == first.experiment_id
    client = MlflowClient(tracking_uri=store.uri)
    assert client.get_run(first.run_id).info.status == "RUNNING"
    again.log_params({"train": {"lr": 0.5, "epochs": 9}})  # same key again: kept, not an MLflow error
    again.log_metrics({"recall@20": 0.2}, step=2)
    again.end("FAILED")

    run = client.get_run(first.run_id)
    assert run.info.status == "FAILED"
    assert run.data.params == {"train.lr": "0.01", "train.epochs": "9"}
    assert sorted(m.step for m in client.get_metric_history(first.run_id, "recall_at_20")) == [1, 2]
    # the experiment is reused, not duplicated
    assert len([e for e in client.search_experiments() if e.name == "core-resume"]) == 1


def test_make_tracker_opens_a_run_named_after_the_pipeline(store):
    from mlflow.tracking import MlflowClient

    cfg = SimpleNamespace(name="pipe", tracking=SimpleNamespace(enabled=True, uri=store.uri, experiment=None))
    tracker = make_tracker(cfg)
    assert isinstance(tracker, MlflowTracker)
    tracker.end()
    run = MlflowClient(tracking_uri=store.uri).get_run(tracker.run_id)
    assert run.info.run_name == "pipe"
    assert MlflowClient(tracking_uri=store.uri).get_experiment(run.info.experiment_id).name == "pipe"


def _open_run(uri: str, name: str) -> str:
    return MlflowTracker(uri, "race", name).run_id


def test_runs_started_at_once_on_a_fresh_store_all_open(tmp_path, monkeypatch):
    """Three processes open the same fresh sqlite store at once: one creates the schema and the experiment under the
    lock, and every one gets its run (without the lock, MLflow's schema migration fails in the others)."""
    import multiprocessing

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    # the workers unpickle `_open_run` by importing this module (tests.core.test_tracking under importlib mode): the
    # repository root must be on the path they inherit, also when pytest runs as a script rather than `python -m`
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    with multiprocessing.get_context("spawn").Pool(3) as pool:  # a worker that dies would hang starmap: bounded
        run_ids = pool.starmap_async(_open_run, [(uri, f"r{i}") for i in range(3)]).get(timeout=300)
    assert len(set(run_ids)) == 3
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("race")
    assert len(client.search_runs([experiment.experiment_id])) == 3
