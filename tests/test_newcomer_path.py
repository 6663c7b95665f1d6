"""The newcomer's path, as the README tells it: run the quickstart pipeline tracked, then paste the two commands
``engine run`` prints at the end (``engine score --model RUN_ID ...`` and ``engine serve --model RUN_ID``) and get a
scored file and a server that answers, from nothing but that run id and the default store under ``./mlruns``."""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import socket
import subprocess
import sys
import time
import urllib.request

import polars as pl
import yaml
from click.testing import CliRunner

from engine.cli import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _next_commands(stdout: str) -> dict[str, list[str]]:
    """The ``engine score`` / ``engine serve`` command lines of ``engine run``'s "next" lines (comment dropped)."""
    commands = {}
    for line in stdout.splitlines():
        body = line.removeprefix("next:").strip().split("   #")[0]
        if body.startswith("engine "):
            argv = shlex.split(body)
            commands[argv[1]] = argv
    return commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None, timeout: float = 5.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def test_quickstart_run_id_scores_and_serves(tmp_path, monkeypatch, graphcl_plugins):
    pipeline = yaml.safe_load((ROOT / "pipelines" / "quickstart.yaml").read_text())
    pipeline["train"].update(epochs=2, eval_every=1)  # the path, not the accuracy, is under test
    (tmp_path / "quickstart.yaml").write_text(yaml.safe_dump(pipeline))
    monkeypatch.chdir(tmp_path)  # a fresh checkout: default store ./mlruns, checkpoints/, data/generated/
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    ran = CliRunner().invoke(cli, ["run", "quickstart.yaml"])
    assert ran.exit_code == 0, ran.output
    run_id = ran.output.split("run_id ")[1].split()[0]
    assert f"export: runs:/{run_id}/onnx" in ran.output
    commands = _next_commands(ran.output)
    assert set(commands) == {"score", "serve"}, ran.output
    assert commands["score"][commands["score"].index("--model") + 1] == run_id
    assert (tmp_path / "mlruns" / "mlflow.db").is_file() and (tmp_path / "checkpoints/quickstart/onnx").is_dir()

    scored = CliRunner().invoke(cli, commands["score"][1:])  # exactly the printed line
    assert scored.exit_code == 0, scored.output
    out = tmp_path / commands["score"][commands["score"].index("--output") + 1]
    parts = pl.concat([pl.read_parquet(p) for p in sorted(out.glob("part-*.parquet"))])
    users = pl.read_parquet(tmp_path / "checkpoints/quickstart/onnx/users.parquet")["user"]
    assert parts["user"].n_unique() == len(users) == 1000
    assert parts.group_by("user").len()["len"].max() == 20  # the default top-k, every user

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "serving"), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "engine.cli", *commands["serve"][1:], "--port", str(port)]
    server = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, health = time.monotonic() + 60, None
        while health is None and time.monotonic() < deadline and server.poll() is None:
            try:
                health = _get(f"http://127.0.0.1:{port}/health", timeout=1.0)
            except OSError:
                time.sleep(0.2)
        assert health is not None, server.stdout.read().decode() if server.poll() is not None else "no answer in 60 s"
        assert health["status"] == "ok" and health["num_users"] == 1000
        first = int(users[0])
        answer = _get(f"http://127.0.0.1:{port}/recommend", {"user": first, "k": 5})
        expected = parts.filter(pl.col("user") == first).sort("rank")["item"].head(5).to_list()
        assert answer["items"] == expected  # the server ranks as the batch job does
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
