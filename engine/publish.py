"""The export a tracked run leaves behind, so the run id it prints is all ``engine score`` / ``engine serve`` need.

At the end of a tracked ``engine run`` (``tracking.log_export``, on by default), the best weights are exported to
ONNX into ``<checkpoint_dir>/<name>/onnx`` (replaced whole: a failed export leaves the previous one) and that
directory is logged to the run as artifact path ``onnx``, and beside it as an MLflow pyfunc model, artifact path
``model`` (:mod:`engine_serving.pyfunc`). ``engine export`` logs its directory the same way
(:func:`log_export_dir`). A failed export or upload warns: the trained run stands.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Published", "publish_run_export", "log_export_dir", "ARTIFACT_PATH"]

#: where an export lands in its MLflow run (``runs:/<run_id>/onnx``)
ARTIFACT_PATH = "onnx"


@dataclass(frozen=True)
class Published:
    """Where a run's export is: on disk, and in its MLflow run (``None`` when it could not be logged)."""

    directory: Path
    uri: str | None
    family: str | None


def _warn(what: str, exc: BaseException) -> None:
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    print(f"engine: warning: {what} ({type(exc).__name__}: {first})", file=sys.stderr)


def log_export_dir(tracking_uri: str, run_id: str, directory: str | Path) -> str | None:
    """Log the export ``directory`` to MLflow run ``run_id`` as artifact path ``onnx``, and its pyfunc model as
    ``model`` (a failure there warns). Returns ``runs:/<run_id>/onnx``, or None (with a warning) when the upload
    failed."""
    try:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=tracking_uri).log_artifacts(run_id, str(directory), ARTIFACT_PATH)
    except Exception as exc:  # noqa: BLE001 - the export stands on disk
        _warn(f"could not log the export to MLflow run {run_id}", exc)
        return None
    try:  # and beside it, artifact path `model`: the same export as an MLflow pyfunc model
        from engine_serving.pyfunc import log_pyfunc

        log_pyfunc(directory, run_id, tracking_uri)
    except Exception as exc:  # noqa: BLE001 - the onnx artifact stands
        _warn(f"could not log the MLflow pyfunc model (artifact `model`) to run {run_id}", exc)
    return f"runs:/{run_id}/{ARTIFACT_PATH}"


def write_export(task, model, directory: str | Path) -> dict[str, Any]:
    """Export ``model`` with ``task.export_onnx`` into ``directory`` (with its ``export.json``), atomically: the
    files are written into a temporary sibling that replaces ``directory`` only once the export succeeded."""
    from .run import write_json_atomic

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
        report = task.export_onnx(model, str(tmp))
        write_json_atomic(tmp / "export.json", report)
        old = directory.with_name(f".{directory.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def publish_run_export(task, model, directory: str | Path, tracker) -> Published | None:
    """Export the trained ``model`` into ``directory`` and log it to ``tracker``'s run. None (with a warning)
    when the export failed; a failed upload keeps the export on disk (``uri`` None)."""
    import torch

    try:
        with torch.no_grad():
            report = write_export(task, model.cpu().eval(), directory)
    except Exception as exc:  # noqa: BLE001 - an export the family cannot do must not fail a trained run
        _warn(f"the ONNX export failed, so `engine score --model {tracker.run_id}` will not find one; "
              "try `engine export PIPELINE -o DIR`", exc)
        return None
    uri = log_export_dir(tracker.uri, tracker.run_id, directory)
    return Published(Path(directory), uri, (report.get("serving") or {}).get("family"))


def what_next(name: str, run_id: str | None, published: Published | None, tracking_uri: str | None) -> list[str]:
    """The lines ``engine run`` ends with: where the export is and the commands that score and serve it."""
    if run_id is None:
        return ["next: this run was not tracked; `engine export PIPELINE -o DIR` writes a model that "
                "`engine score/serve --model DIR` take"]
    if published is None:
        return [f"next: run {run_id} has no export (see the warning above); `engine export PIPELINE -o DIR`, "
                "then `engine score/serve --model DIR`"]
    model = run_id if published.uri else str(published.directory)
    store = f" --tracking-uri {tracking_uri}" if tracking_uri and published.uri else ""
    where = f"{published.uri} (a copy in {published.directory})" if published.uri else str(published.directory)
    if published.family == "linkage":
        score = (f"engine score --model {model}{store} --input RECORDS.csv --id-column id "
                 f"--output out/{name}-matches")
        what = "RECORDS: an id column and the model's fields"
    else:
        score = (f"engine score --model {model}{store} --input {published.directory / 'users.parquet'} "
                 f"--output out/{name}-scores")
        what = "top-k items of every user; any .parquet/.csv with a `user` column will do"
    return [f"export: {where}",
            f"next: {score}   # {what}",
            f"      engine serve --model {model}{store}   # HTTP on 127.0.0.1:8000"]
