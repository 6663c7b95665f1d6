"""``engine score``: a real process killed with SIGKILL part-way and started again loses and duplicates no row;
MLflow run ids as --model; bad input gives one line and exit code 2."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
from click.testing import CliRunner

from engine.cli import cli

SERVING = str(pathlib.Path(__file__).resolve().parents[2] / "serving")


def score_cmd(model, input_path, output, *extra):
    return [sys.executable, "-m", "engine.cli", "score", "--model", str(model), "--input", str(input_path),
            "--output", str(output), *map(str, extra)]


def read_parts(directory: pathlib.Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in sorted(directory.glob("part-*.parquet"))])


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_sigkill_then_rerun_scores_every_row_exactly_once(graph_model, tmp_path):
    from engine_serving import load_model, run_job

    rng = np.random.default_rng(0)
    users = rng.permutation(np.repeat(np.arange(400), 60))  # 24,000 rows, each user 60 times
    pl.DataFrame({"user": users}).write_parquet(tmp_path / "in.parquet")
    out = tmp_path / "out"
    cmd = score_cmd(graph_model.export, tmp_path / "in.parquet", out, "--top-k", 5, "--chunk-size", 100,
                    "--threads", 1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SERVING, os.environ.get("PYTHONPATH", "")])}

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(out.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = sorted(p.name for p in out.glob("part-*.parquet"))
    assert proc.returncode == -signal.SIGKILL
    print(f"killed after {len(before)} of 240 parts")
    assert 1 <= len(before) < 240, len(before)  # stopped part-way
    assert json.loads((out / "_job.json").read_text())["status"] == "running"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["parts"] == 240 and report["parts_skipped"] >= len(before)
    assert report["parts_written"] + report["parts_skipped"] == 240
    assert "onnxruntime provider CPUExecutionProvider" in done.stderr
    assert not list(out.glob(".part-*.tmp"))

    got = read_parts(out)
    # no lost and no duplicated row: the user column, in rank-1 rows, is the input column row for row
    assert got.filter(pl.col("rank") == 1)["user"].to_numpy().tolist() == users.tolist()
    assert got.height == users.size * 5
    # and the parts equal an uninterrupted run's
    clean = tmp_path / "clean"
    run_job(load_model(str(graph_model.export), threads=1), tmp_path / "in.parquet", clean, top_k=5,
            chunk_size=100, progress=False)
    assert got.equals(read_parts(clean))
    manifest = json.loads((out / "_job.json").read_text())
    assert manifest["status"] == "complete" and manifest["output_rows"] == users.size * 5

    again = invoke(*cmd[3:])  # a finished job run again writes nothing
    assert again.exit_code == 0 and '"parts_written": 0' in again.output


def test_model_from_an_mlflow_run_id_or_runs_uri(graph_model, tmp_path):
    pl.DataFrame({"user": [0, 1, 2]}).write_csv(tmp_path / "in.csv")
    by_dir = invoke("score", "--model", graph_model.export, "--input", tmp_path / "in.csv", "--output",
                    tmp_path / "a", "--top-k", 4)
    assert by_dir.exit_code == 0, by_dir.output
    for name, model in [("b", graph_model.run_id), ("c", f"runs:/{graph_model.run_id}/onnx")]:
        result = invoke("score", "--model", model, "--tracking-uri", graph_model.mlflow_uri, "--input",
                        tmp_path / "in.csv", "--output", tmp_path / name, "--top-k", 4)
        assert result.exit_code == 0, result.output
        assert read_parts(tmp_path / name).equals(read_parts(tmp_path / "a"))


def assert_user_error(result, *fragments):
    assert result.exit_code == 2, (result.output, result.exception)
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in last, last


def test_bad_input_is_one_line_and_exit_2(graph_model, tmp_path):
    m = graph_model.export
    pl.DataFrame({"customer": [1, 2]}).write_parquet(tmp_path / "nouser.parquet")
    pl.DataFrame({"user": [1, 99999, 123456]}).write_parquet(tmp_path / "unknown.parquet")
    pl.DataFrame({"user": []}, schema={"user": pl.Int64}).write_parquet(tmp_path / "empty.parquet")
    (tmp_path / "empty.csv").write_text("user\n")
    (tmp_path / "words.csv").write_text("user\nalice\n")
    pl.DataFrame({"user": [1]}).write_parquet(tmp_path / "ok.parquet")
    (tmp_path / "not_export").mkdir()

    def score(input_name, model=m, out="out", *extra):
        return invoke("score", "--model", model, "--input", tmp_path / input_name, "--output", tmp_path / out,
                      *extra)

    assert_user_error(score("nouser.parquet"), "no 'user' column", "customer")
    assert_user_error(score("unknown.parquet"), "2 user id(s) unknown", "99999")
    assert_user_error(score("empty.parquet"), "no rows")
    assert_user_error(score("empty.csv"), "no rows")
    assert_user_error(score("words.csv"), "'user'")
    assert_user_error(score("missing.parquet"), "not found")
    assert_user_error(score("ok.parquet", tmp_path / "not_export"), "not an engine export")
    assert_user_error(score("ok.parquet", tmp_path / "nowhere"), "no such directory")
    assert_user_error(score("ok.parquet", "0123456789abcdef0123456789abcdef", "out", "--tracking-uri",
                            graph_model.mlflow_uri), "not found")
    assert not (tmp_path / "out").exists()  # bad input leaves nothing behind
    # another job in a used output directory is refused, not mixed in
    assert score("ok.parquet", m, "used").exit_code == 0
    assert_user_error(score("ok.parquet", m, "used", "--top-k", 3), "another scoring job", "top_k")
    result = invoke("score", "--model", m, "--input", tmp_path / "ok.parquet", "--output", tmp_path / "o",
                    "--top-k", 0)
    assert result.exit_code == 2 and "--top-k" in result.output


def test_seen_items_can_be_kept(graph_model, tmp_path):
    from engine_serving import load_model, score_chunk

    served = load_model(str(graph_model.export), threads=1)
    rows = pl.DataFrame({"user": [0]})
    keep, drop = score_chunk(served, 0, rows, 120, exclude_seen=False), score_chunk(served, 0, rows, 120)
    seen = set(np.asarray(served.seen_items[served.seen_indptr[0]:served.seen_indptr[1]]).tolist())
    assert keep.height == 120 and drop.height == 120 - len(seen)
    assert set(keep["item"].to_list()) - set(drop["item"].to_list()) == seen
