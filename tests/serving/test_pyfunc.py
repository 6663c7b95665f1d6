"""The MLflow pyfunc flavour of every family's export: a tracked run logs it as artifact ``model`` beside ``onnx``;
``mlflow.pyfunc.load_model(...).predict`` equals ``engine score`` (graph, sequence, linkage) and a naive PyTorch
top-k; its signature and input example are logged; ``mlflow models serve`` answers over loopback."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import polars as pl
import pytest

from .test_score_cli import invoke, read_parts


def engine_score(export, users_or_records: pl.DataFrame, tmp_path, *extra) -> pl.DataFrame:
    """``engine score`` (the CLI, in-process) of the rows ``users_or_records``."""
    path = tmp_path / "input.parquet"
    users_or_records.write_parquet(path)
    out = tmp_path / "scored"
    result = invoke("score", "--model", export, "--input", path, "--output", out, *extra)
    assert result.exit_code == 0, result.output
    return read_parts(out)


def assert_frames_equal(got: pd.DataFrame, want: pl.DataFrame) -> None:
    assert list(got.columns) == want.columns
    for c in want.columns:
        if want[c].dtype.is_float():
            np.testing.assert_allclose(got[c].to_numpy(), want[c].to_numpy(), atol=1e-6)
        else:
            assert got[c].tolist() == want[c].to_list(), c


def test_tracked_run_logs_a_pyfunc_model_equal_to_engine_score(graph_model, tmp_path, monkeypatch):
    import mlflow

    from .test_parity import known_items, naive_topk

    monkeypatch.setenv("MLFLOW_TRACKING_URI", graph_model.mlflow_uri)
    client = mlflow.MlflowClient(graph_model.mlflow_uri)
    logged = {a.path for a in client.list_artifacts(graph_model.run_id)}
    assert {"onnx", "model"} <= logged  # `engine run` / `engine export` logged both
    model = mlflow.pyfunc.load_model(f"runs:/{graph_model.run_id}/model")
    sig = model.metadata.signature
    assert sig.inputs.input_names() == ["user"] and sig.outputs.input_names() == ["user", "item", "score", "rank"]
    assert {p.name: p.default for p in sig.params.params} == {"k": 20, "exclude_seen": True}
    local = pathlib.Path(mlflow.artifacts.download_artifacts(f"runs:/{graph_model.run_id}/model"))
    example = json.loads((local / "input_example.json").read_text())
    assert example["columns"] == ["user"] and len(example["data"]) == 2

    users = pl.DataFrame({"user": [7, 0, 399, 7, 123]})
    got = model.predict(pd.DataFrame({"user": users["user"].to_list()}), params={"k": 6})
    want = engine_score(graph_model.export, users, tmp_path, "--top-k", 6)
    assert_frames_equal(got, want)
    users_emb, items_emb = graph_model.task.embeddings(graph_model.model)
    naive = naive_topk(users_emb @ items_emb.T, known_items(graph_model.task), 6)
    for u in (7, 0, 399, 123):
        np.testing.assert_allclose(got[got["user"] == u]["score"].iloc[:6], [s for _, s in naive[u]][:6], atol=1e-5)
    seen = model.predict(pd.DataFrame({"user": [7]}), params={"k": 120, "exclude_seen": False})
    assert sorted(seen["item"]) == list(range(120))

    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=r"unknown to the model \(e.g. 4000\)"):
        model.predict(pd.DataFrame({"user": [4000]}))


def test_sequential_pyfunc_equals_engine_score(seq_model, tmp_path):
    import mlflow

    from engine_serving.pyfunc import save_pyfunc

    path = save_pyfunc(seq_model.export, tmp_path / "model")
    model = mlflow.pyfunc.load_model(str(path), model_config={"threads": 1})
    users = pl.DataFrame({"user": [101, 150, 249]})
    got = model.predict(pd.DataFrame({"user": users["user"].to_list()}), params={"k": 4})
    assert_frames_equal(got, engine_score(seq_model.export, users, tmp_path, "--top-k", 4))
    assert got["rank"].tolist() == [1, 2, 3, 4] * 3


def test_linkage_pyfunc_equals_engine_score(linkage_model, linkage_registry, tmp_path):
    import mlflow

    from engine_serving.pyfunc import save_pyfunc

    path = save_pyfunc(linkage_model.export, tmp_path / "model")
    model = mlflow.pyfunc.load_model(str(path))
    sig = model.metadata.signature
    assert sig.inputs.input_names() == ["id", "name", "city", "year"]
    assert sig.outputs.input_names() == ["left_id", "right_id", "score"]
    records = pl.read_csv(linkage_model.export.parent / "dm" / "tableA.csv", infer_schema=False).head(8)
    got = model.predict(pd.DataFrame(records.to_dict(as_series=False)), params={"k": 3})
    assert_frames_equal(got, engine_score(linkage_model.export, records, tmp_path, "--top-k", 3))
    only = model.predict(pd.DataFrame(records.to_dict(as_series=False)), params={"k": 3, "matches_only": True})
    assert (only["score"] >= linkage_model.task.threshold - 1e-6).all() and len(only) <= len(got)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_mlflow_models_serve_answers(graph_model, tmp_path):
    """``mlflow models serve -m runs:/ID/model --env-manager local`` on 127.0.0.1: its answer equals predict's, an
    unknown user is a 400. The server (started in its own process group) is stopped by its own pid."""
    import mlflow

    bin_dir = pathlib.Path(sys.executable).parent
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": graph_model.mlflow_uri, "ENGINE_LOAD_PLUGINS": "",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [str(bin_dir / "mlflow"), "models", "serve", "-m", f"runs:/{graph_model.run_id}/model",
           "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    status = r.status
                break
            except OSError:
                time.sleep(0.25)
        assert status == 200, proc.stderr.read().decode()[-3000:] if proc.poll() is not None else "no /ping in 90 s"
        body = {"dataframe_split": {"columns": ["user"], "data": [[7], [42]]}, "params": {"k": 5}}
        status, answer = _post(port, body)
        assert status == 200, answer
        from engine_serving.pyfunc import save_pyfunc

        local = mlflow.pyfunc.load_model(str(save_pyfunc(graph_model.export, tmp_path / "model")))
        want = local.predict(pd.DataFrame({"user": [7, 42]}), params={"k": 5})
        rows = answer["predictions"]
        assert [r["user"] for r in rows] == want["user"].tolist()
        assert [r["item"] for r in rows] == want["item"].tolist()
        np.testing.assert_allclose([r["score"] for r in rows], want["score"], atol=1e-6)
        status, error = _post(port, {"dataframe_split": {"columns": ["user"], "data": [[4000]]}})
        assert status == 400 and "unknown to the model" in error["message"]
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own group: the CLI and the uvicorn it execs
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
