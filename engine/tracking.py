"""Tracking behind a small interface: MLflow for runs, a null tracker for tests and ``--no-track``.

The default store is embedded and local, with no server: a sqlite database ``mlruns/mlflow.db`` and artifacts under
``mlruns/artifacts/`` in the working directory (MLflow 3 refuses the plain file store). Any tracking URI can be set
with ``tracking.uri`` or ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from .files import exclusive_lock

_BAD = re.compile(r"[^A-Za-z0-9_\-. /:]")


def metric_key(name: str) -> str:
    """MLflow accepts ``[A-Za-z0-9_-. /:]`` only: ``recall@20`` is logged as ``recall_at_20``."""
    return _BAD.sub("_", name.replace("@", "_at_"))


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, {"d": 2}]}`` -> ``{"a.b": 1, "c.0": 1, "c.1.d": 2}``."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in value):
            out.update(flatten({str(i): v for i, v in enumerate(value)}, f"{name}."))
        else:
            out[name] = value
    return out


class Tracker:
    """What the trainer and tasks log through. This base class is the null tracker: it records nothing."""

    run_id: str | None = None
    artifact_uri: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_text(self, text: str, name: str) -> None: ...

    def log_figure(self, figure: Any, name: str) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def end(self, status: str = "FINISHED") -> None: ...


NullTracker = Tracker


def default_tracking_uri(root: str | Path = ".") -> str:
    path = (Path(root) / "mlruns" / "mlflow.db").resolve()
    return f"sqlite:///{path}"


def tracking_uri(uri: str | None = None) -> str:
    """The MLflow store to use: ``uri`` when given, else ``MLFLOW_TRACKING_URI``, else :func:`default_tracking_uri`."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a local sqlite store (``mlflow.db.lock``), held while a process opens the store and
    its run: MLflow creates the schema on first use, and two processes doing it at once fail half-way."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with exclusive_lock(uri[len("sqlite:///") :] + ".lock"):
        yield


class MlflowTracker(Tracker):
    """Logs to MLflow; ``start()`` opens a run (or reopens ``resume_run_id``)."""

    def __init__(self, uri: str | None, experiment: str, run_name: str, resume_run_id: str | None = None) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        try:
            import mlflow
        except ModuleNotFoundError as err:  # pragma: no cover - mlflow-skinny is a dependency
            raise ModuleNotFoundError("tracking needs mlflow: pip install mlflow-skinny (or tracking.enabled: false)") from err
        from mlflow.tracking import MlflowClient

        self._mlflow = mlflow
        uri = tracking_uri(uri)
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        self.uri = uri
        with _store_lock(uri):  # two runs started at once would both create the schema, or the experiment
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                artifacts = None
                if uri.startswith("sqlite:///"):
                    artifacts = (Path(uri[len("sqlite:///") :]).parent / "artifacts").resolve().as_uri()
                exp_id = self.client.create_experiment(experiment, artifact_location=artifacts)
            else:
                exp_id = exp.experiment_id
            if resume_run_id:
                run = self.client.get_run(resume_run_id)
                self.client.update_run(resume_run_id, status="RUNNING")
            else:
                run = self.client.create_run(exp_id, run_name=run_name)
        self.run_id = run.info.run_id
        self.artifact_uri = run.info.artifact_uri
        self.experiment_id = exp_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        batch = []
        for key, value in flatten(params).items():
            text = str(value)[:6000]
            key = metric_key(key)[:250]
            if key in existing:  # a resumed run keeps its params
                continue
            batch.append(Param(key, text))
        for i in range(0, len(batch), 100):
            self.client.log_batch(self.run_id, params=batch[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(k), float(v), now, step or 0) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_figure(self, figure: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(name).name
            figure.savefig(path, dpi=110, bbox_inches="tight")
            self.log_artifact(path, str(Path(name).parent) if Path(name).parent != Path(".") else None)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def make_tracker(cfg, resume_run_id: str | None = None, enabled: bool = True) -> Tracker:
    """The tracker a pipeline asks for (``tracking.enabled``), opened on a run named after the pipeline."""
    if not (enabled and cfg.tracking.enabled):
        return Tracker()
    return MlflowTracker(cfg.tracking.uri, cfg.tracking.experiment or cfg.name, cfg.name, resume_run_id)
