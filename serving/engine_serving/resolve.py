"""``--model``: a directory written by ``engine export``, an MLflow run id, or a ``runs:/<run_id>/<path>`` URI.

A tracked ``engine run`` logs its export to the run under the artifact path ``onnx`` (see :mod:`engine.publish`;
``engine export`` of a tracked pipeline does the same), so a bare run id means ``runs:/<run_id>/onnx``. Local artifact
stores are read in place; remote ones are downloaded once into a cache under ``~/.cache/engine/models``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from engine.publish import ARTIFACT_PATH

from .errors import ModelError

__all__ = ["resolve_model", "ARTIFACT_PATH"]
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def resolve_model(model: str, tracking_uri: str | None = None) -> Path:
    """The local directory of ``model`` (see the module docstring). Raises ModelError with a remedy."""
    path = Path(model)
    if path.exists() or not (model.startswith("runs:/") or _RUN_ID.fullmatch(model)):
        if not path.exists():
            raise ModelError(f"{model}: no such directory, and not an MLflow run id or runs:/ URI")
        return path
    if model.startswith("runs:/"):
        run_id, _, sub = model[len("runs:/"):].partition("/")
        sub = sub.strip("/") or ARTIFACT_PATH
    else:
        run_id, sub = model, ARTIFACT_PATH
    return _run_artifacts(run_id, sub, tracking_uri)


def _run_artifacts(run_id: str, sub: str, tracking_uri: str | None) -> Path:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from urllib.parse import unquote, urlparse

    from mlflow.tracking import MlflowClient

    from engine.tracking import tracking_uri as resolve_uri

    uri = resolve_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ModelError(f"run {run_id}: no MLflow store at {uri} (set --tracking-uri or MLFLOW_TRACKING_URI)")
    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - MlflowException and store errors
        raise ModelError(f"run {run_id}: not found in {uri} ({str(exc).splitlines()[0]})") from None
    root = run.info.artifact_uri
    parsed = urlparse(root)
    if parsed.scheme in ("", "file"):
        local = Path(unquote(parsed.path)) / sub
    else:
        local = Path.home() / ".cache" / "engine" / "models" / run_id / sub
        if not (local / "export.json").is_file():
            try:
                client.download_artifacts(run_id, sub, str(local.parent.parent / run_id))
            except Exception as exc:  # noqa: BLE001
                raise ModelError(f"run {run_id}: cannot download artifact {sub!r} ({str(exc).splitlines()[0]})") \
                    from None
    if not (local / "export.json").is_file():
        raise ModelError(f"run {run_id}: no exported model at artifact path {sub!r} (a tracked `engine run` logs "
                         "one unless tracking.log_export is false); export the pipeline with "
                         "`engine export PIPELINE -o DIR` (a tracked pipeline logs it to its run)")
    return local
