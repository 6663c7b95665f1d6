"""An MLflow pyfunc flavour of every engine export, so MLflow users need no engine-specific code to use a model::

    model = mlflow.pyfunc.load_model("runs:/<run_id>/model")
    model.predict(pd.DataFrame({"user": [7, 9]}), params={"k": 5})          # graph and sequential models
    model.predict(pd.DataFrame({"id": ["r1"], "name": ["john smith"]}))    # linkage models

    mlflow models serve -m runs:/<run_id>/model --env-manager local --host 127.0.0.1 --port 5001
    curl -X POST 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
         -d '{"dataframe_split": {"columns": ["user"], "data": [[7]]}, "params": {"k": 5}}'

:class:`EngineModel` wraps the loaded export (:func:`engine_serving.load_model`), and ``predict`` is the batch
scoring job's :func:`engine_serving.score_chunk`, so its answers equal ``engine score``'s:

* recommendation (graph, sequence): input a ``user`` column; output rows ``(user, item, score, rank)``, each user's
  top-``k`` items best first; params ``k`` (default 20) and ``exclude_seen`` (default true);
* linkage: input an ``id`` column and the model's fields (strings; a missing field or null is a missing value);
  output rows ``(left_id, right_id, score)``, each record's top-``k`` candidates; params ``k`` (default: the export's
  ``blocking_k``) and ``matches_only`` (default false).

The model directory holds the whole export (artifact ``export``), a signature with these params and an input
example. An unknown user or a missing column is an ``MlflowException`` (HTTP 400 under ``mlflow models serve``).
Loading needs ``engine`` installed (a linkage model also the plugin that registered its field encoders), so serve
with ``--env-manager local`` from engine's environment; ``model_config={"threads": n}`` at load time sets the
onnxruntime threads. :func:`log_pyfunc` writes the model and logs it to a run as artifact path ``model``, beside
the export's ``onnx``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

__all__ = ["EngineModel", "save_pyfunc", "log_pyfunc", "signature_of", "ARTIFACT_PATH"]

#: where the pyfunc model lands in a run (``runs:/<run_id>/model``)
ARTIFACT_PATH = "model"

#: what a model needs at scoring time, pinned to this environment's versions (engine itself is not on an index:
#: ``--env-manager local`` uses the environment engine is installed in)
REQUIREMENTS = ("mlflow-skinny", "onnxruntime", "numpy", "pandas", "polars")


class EngineModel(mlflow.pyfunc.PythonModel):
    """An engine export as an MLflow pyfunc model (see the module docstring)."""

    def load_context(self, context) -> None:
        from .model import load_model

        threads = (context.model_config or {}).get("threads")
        self.model = load_model(context.artifacts["export"], threads=int(threads) if threads else None)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import polars as pl
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from engine.errors import DataError

        from .job import score_chunk

        params = params or {}
        model = self.model
        k = int(params.get("k") or model.default_k)
        if k < 1:
            raise MlflowException(f"params.k must be >= 1 (got {k})", error_code=INVALID_PARAMETER_VALUE)
        frame = model_input if isinstance(model_input, pl.DataFrame) else _to_polars(model_input)
        try:
            if model.family == "linkage":
                out = score_chunk(model, 0, frame, k, matches_only=bool(params.get("matches_only", False)))
            else:
                out = score_chunk(model, 0, frame, k, exclude_seen=bool(params.get("exclude_seen", True)))
        except DataError as err:
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
        return pd.DataFrame({c: out[c].to_numpy() for c in out.columns})


def _to_polars(frame: pd.DataFrame):
    """``frame`` as polars without pyarrow: numeric columns as they are; in the others (object, pandas' string
    dtype) NaN / None as null and, when the values mix types (strings and numbers, as records do), every value as a
    string."""
    import polars as pl

    columns = {}
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
            columns[str(name)] = col.to_numpy()
            continue
        values = [None if v is None or (isinstance(v, float) and v != v) else v for v in col.tolist()]
        if len({type(v) for v in values if v is not None}) > 1:
            values = [None if v is None else str(v) for v in values]
        columns[str(name)] = values
    return pl.DataFrame(columns)


def _col_type(dtype) -> str:
    return "long" if dtype.is_integer() else "double" if dtype.is_float() else "string"


def signature_of(export_dir: str | Path):
    """``(signature, input example)`` of the pyfunc model of ``export_dir``, from its ``export.json`` and id
    tables (see the module docstring)."""
    import polars as pl
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    from .model import read_export

    export_dir = Path(export_dir)
    serving = read_export(export_dir)["serving"]
    if serving["family"] == "linkage":
        fields = list(serving["fields"])
        right = pl.read_parquet(export_dir / serving["right_ids"])["right_id"]
        inputs = Schema([ColSpec("string", "id"), *(ColSpec("string", f, required=False) for f in fields)])
        outputs = Schema([ColSpec("string", "left_id"), ColSpec(_col_type(right.dtype), "right_id"),
                          ColSpec("float", "score")])
        params = ParamSchema([ParamSpec("k", "long", int(serving.get("blocking_k", 10))),
                              ParamSpec("matches_only", "boolean", False)])
        example = pd.DataFrame({"id": ["example"], **{f: [None] for f in fields}}, dtype=object)
    else:
        users = pl.read_parquet(export_dir / serving["users"])["user"]
        items = pl.read_parquet(export_dir / serving["items"])["item"]
        inputs = Schema([ColSpec(_col_type(users.dtype), "user")])
        outputs = Schema([ColSpec(_col_type(users.dtype), "user"), ColSpec(_col_type(items.dtype), "item"),
                          ColSpec("float", "score"), ColSpec("integer", "rank")])
        from .model import ExportedModel

        params = ParamSchema([ParamSpec("k", "long", ExportedModel.default_k),
                              ParamSpec("exclude_seen", "boolean", True)])
        example = pd.DataFrame({"user": users.head(2).to_numpy()})
    return ModelSignature(inputs=inputs, outputs=outputs, params=params), example


def _requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            if name == "mlflow-skinny":  # the full mlflow instead
                out.append(f"mlflow=={metadata.version('mlflow')}")
    return out


@contextlib.contextmanager
def _quiet():
    """MLflow's INFO lines, progress bars and deprecation warnings off while saving (``engine export`` prints
    JSON; a warning of ours still shows)."""
    logger = logging.getLogger("mlflow")
    level, bar = logger.level, os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    logger.setLevel(logging.WARNING)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"mlflow\..*")
            yield
    finally:
        logger.setLevel(level)
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar


def save_pyfunc(export_dir: str | Path, path: str | Path, input_example=None) -> Path:
    """Write the pyfunc model of the export ``export_dir`` into the new directory ``path``; returns ``path``.
    ``input_example``: a DataFrame of real input rows (default: two known users; for linkage, one empty record).
    The model is MLflow's "model from code" (:mod:`engine_serving.pyfunc_model`), not a pickle."""
    from .model import read_export

    read_export(export_dir)  # not an export: a ModelError that says so
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    signature, example = signature_of(export_dir)
    with _quiet():
        mlflow.pyfunc.save_model(str(path), python_model=str(Path(__file__).with_name("pyfunc_model.py")),
                                 artifacts={"export": str(export_dir)}, signature=signature,
                                 input_example=example if input_example is None else input_example,
                                 pip_requirements=_requirements())
    return Path(path)


def log_pyfunc(export_dir: str | Path, run_id: str, tracking_uri: str | None = None,
               artifact_path: str = ARTIFACT_PATH, input_example=None) -> str:
    """Log the pyfunc model of ``export_dir`` to MLflow run ``run_id`` (any status; it is not reopened) as
    ``artifact_path``. Returns ``runs:/<run_id>/<artifact_path>``. Raises on failure (callers that must not fail
    catch it)."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="engine-pyfunc-") as tmp:
        local = save_pyfunc(export_dir, Path(tmp) / artifact_path, input_example)
        with _quiet():
            MlflowClient(tracking_uri=tracking_uri).log_artifacts(run_id, str(local), artifact_path)
    return f"runs:/{run_id}/{artifact_path}"
