"""``engine score --backend ray``: the same parts as the single-process job, row for row; a worker killed with SIGKILL
mid-chunk and a driver killed and started again still give every row exactly once; bad input is one line, exit 2.

Every cluster here is a local one on 127.0.0.1: either the one the runner starts and stops itself, or a head this
module starts with ``ray start --head --block`` and stops by its own process handle (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from engine.cli import cli
from tests.serving.test_score_cli import assert_user_error

ray = pytest.importorskip("ray", reason="the `ray` extra is not installed")

pytestmark = pytest.mark.timeout(300)

SERVING = str(Path(__file__).resolve().parents[2] / "serving")
BIN = Path(sys.executable).parent


def read_parts(directory: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in sorted(directory.glob("part-*.parquet"))])


def local_job(model_dir, input_path, output, **kw):
    from engine_serving import load_model, run_job

    return run_job(load_model(str(model_dir), threads=1), input_path, output, progress=False, **kw)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- output equal to the single-process job ---------------------------------------------------------------------------
def test_ray_parts_equal_the_single_process_parts(graph_model, seq_model, linkage_model, linkage_registry, tmp_path,
                                                 monkeypatch):
    """Graph, sequential and linkage exports on a local 2-worker cluster: every part file equal to the local job's,
    the manifest complete, each worker process reporting what it scored."""
    from engine.plugins import load_plugins

    load_plugins()  # this process keeps the plugins the fixtures registered in memory; the Ray workers (started
    monkeypatch.setenv("ENGINE_LOAD_PLUGINS", "objectives,linkage")  # by each job) load the installed ones
    rng = np.random.default_rng(0)
    pl.DataFrame({"user": rng.integers(0, 400, 3000)}).write_parquet(tmp_path / "users.parquet")
    seq_users = pl.read_parquet(seq_model.export / "users.parquet")["user"]
    pl.DataFrame({"user": seq_users.sample(600, with_replacement=True, seed=1)}).write_parquet(tmp_path / "seq.parquet")
    records = pl.read_csv(linkage_model.pipeline.parent / "dm" / "tableA.csv", infer_schema=False)
    records.write_csv(tmp_path / "records.csv")
    cases = [(graph_model.export, "users.parquet", ["--top-k", 7, "--chunk-size", 250]),
             (seq_model.export, "seq.parquet", ["--top-k", 5, "--chunk-size", 100]),
             (linkage_model.export, "records.csv", ["--top-k", 3, "--chunk-size", 16])]
    for model_dir, name, extra in cases:
        out = tmp_path / f"ray-{name}"
        result = invoke("score", "--model", model_dir, "--input", tmp_path / name, "--output", out,
                        "--backend", "ray", "--workers", 2, "--threads", 1, *extra)
        assert result.exit_code == 0, (result.output, result.exception)
        report = json.loads(result.output[result.output.index("{"):])
        assert report["backend"] == "ray" and report["ray_address"] == "local" and report["workers"] == 2
        assert report["parts_written"] == report["parts"] > 1 and report["parts_written_by"] == "workers"
        processes = report["worker_processes"]
        assert sum(p["chunks"] for p in processes.values()) == report["parts"]
        assert all(p["peak_rss_mb"] > 0 for p in processes.values())
        clean = tmp_path / f"local-{name}"
        kw = {"top_k": extra[1], "chunk_size": extra[3]}
        if "records" in name:
            kw["id_column"] = "id"
        local_job(model_dir, tmp_path / name, clean, **kw)
        ray_files = sorted(p.name for p in out.glob("part-*.parquet"))
        assert ray_files == sorted(p.name for p in clean.glob("part-*.parquet"))
        for file in ray_files:  # row for row, part for part
            assert pl.read_parquet(out / file).equals(pl.read_parquet(clean / file)), file
        manifest = json.loads((out / "_job.json").read_text())
        assert manifest["status"] == "complete" and manifest["backend"] == "ray"
        assert manifest["output_rows"] == json.loads((clean / "_job.json").read_text())["output_rows"]
    assert not ray.is_initialized()  # the local cluster was shut down after each job


# -- exactly once under kills, on a head this test starts -------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_env(token: str) -> dict[str, str]:
    from engine_serving.ray_cluster import LOCAL_ENV

    return {**os.environ, **LOCAL_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
            "PYTHONPATH": os.pathsep.join([SERVING, os.environ.get("PYTHONPATH", "")])}


@contextlib.contextmanager
def ray_head(tmp_path: Path):
    """A one-node cluster on 127.0.0.1 (2 CPUs), stopped by its own process handle whatever happens."""
    port, token = _free_port(), secrets.token_hex(16)
    env = _ray_env(token)
    log = open(tmp_path / "ray-head.log", "w")
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port",
                             str(port), "--num-cpus", "2", "--include-dashboard", "false",
                             "--disable-usage-stats", "--block"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            assert head.poll() is None, (tmp_path / "ray-head.log").read_text()
            time.sleep(0.2)
        else:
            pytest.fail("the Ray head did not listen within 60 s")
        yield f"127.0.0.1:{port}", env, head.pid
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=45)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        kids = [c for c, p in parents.items() if p == pid]
        found += kids
        frontier += kids
    return found


def _busy_worker(root: int) -> int | None:
    """A worker process of the head ``root`` executing a scoring task (Ray titles it ``ray::score_remote``)."""
    for pid in _descendants(root):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::score_remote"):
                return pid
    return None


def _score_cmd(model, input_path, output, address, *extra):
    return [sys.executable, "-m", "engine.cli", "score", "--model", str(model), "--input", str(input_path),
            "--output", str(output), "--backend", "ray", "--ray-address", address, "--threads", "1",
            *map(str, extra)]


def test_worker_sigkill_and_driver_restart_give_every_row_once(graph_model, tmp_path):
    users = np.random.default_rng(1).permutation(np.repeat(np.arange(400), 150))  # 60,000 rows
    pl.DataFrame({"user": users}).write_parquet(tmp_path / "in.parquet")
    clean = tmp_path / "clean"
    local_job(graph_model.export, tmp_path / "in.parquet", clean, top_k=5, chunk_size=1500)
    expected = read_parts(clean)

    with ray_head(tmp_path) as (address, env, head_pid):
        # 1. a worker killed with SIGKILL while it runs a chunk: Ray runs the chunk again elsewhere (the workers
        # write the parts: --shared-output)
        out = tmp_path / "worker-killed"
        driver = subprocess.Popen(_score_cmd(graph_model.export, tmp_path / "in.parquet", out, address, "--top-k",
                                             5, "--chunk-size", 1500, "--workers", 2, "--shared-output"), env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        victim, deadline = None, time.monotonic() + 90
        while victim is None and driver.poll() is None and time.monotonic() < deadline:
            victim = _busy_worker(head_pid)
            time.sleep(0.001)
        assert victim is not None, "no worker was seen running a chunk"
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = driver.communicate(timeout=180)
        assert driver.returncode == 0, stderr
        report = json.loads(stdout)
        assert report["parts_written_by"] == "workers"
        assert str(victim) not in report["worker_processes"]  # its chunk was scored by another worker
        assert not list(out.glob(".part-*.tmp"))
        assert report["parts_written"] == report["parts"] == 40
        got = read_parts(out)
        assert got.filter(pl.col("rank") == 1)["user"].to_list() == users.tolist()  # every row, once
        assert got.equals(expected)

        # 2. the driver killed with SIGKILL part-way, then the same command again
        out = tmp_path / "driver-killed"
        cmd = _score_cmd(graph_model.export, tmp_path / "in.parquet", out, address, "--top-k", 5, "--chunk-size",
                         1500, "--workers", 2)
        driver = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        while len(list(out.glob("part-*.parquet"))) < 3 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        before = len(list(out.glob("part-*.parquet")))
        assert driver.returncode == -signal.SIGKILL and 1 <= before < 40, before
        assert json.loads((out / "_job.json").read_text())["status"] == "running"
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert again.returncode == 0, again.stderr
        report = json.loads(again.stdout)
        assert report["parts_written_by"] == "driver"  # a cluster joined by address: parts come back by default
        assert report["parts_skipped"] >= before and report["parts_written"] + report["parts_skipped"] == 40
        assert not list(out.glob(".part-*.tmp"))
        assert read_parts(out).equals(expected)
        assert json.loads((out / "_job.json").read_text())["status"] == "complete"


# -- bad input --------------------------------------------------------------------------------------------------------
def test_bad_ray_input_is_one_line_exit_2_and_writes_nothing(graph_model, tmp_path, monkeypatch):
    pl.DataFrame({"user": [0, 1, 2]}).write_parquet(tmp_path / "in.parquet")
    base = ["score", "--model", graph_model.export, "--input", tmp_path / "in.parquet", "--output", tmp_path / "out"]
    port = _free_port()  # nothing listens there
    tic = time.monotonic()
    assert_user_error(invoke(*base, "--backend", "ray", "--ray-address", f"127.0.0.1:{port}"),
                      f"127.0.0.1:{port}", "cannot reach a Ray cluster")
    assert time.monotonic() - tic < 15  # not Ray's minute of retries
    assert_user_error(invoke(*base, "--backend", "ray", "--ray-address", "nowhere"), "HOST:PORT")
    assert_user_error(invoke(*base, "--workers", 2), "--backend ray")
    assert_user_error(invoke(*base, "--shared-output"), "--backend ray")
    assert_user_error(invoke(*base, "--ray-address", f"127.0.0.1:{port}"), "--backend ray")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    assert_user_error(invoke(*base, "--backend", "ray"), "needs Ray", "engine[ray]")
    assert not (tmp_path / "out").exists()


def _loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def _listening_addresses(root: int) -> set[str]:
    """The local addresses of the TCP sockets listening in ``root``'s descendants (the local cluster's servers)."""
    import ipaddress

    inodes = set()
    for pid in _descendants(root):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                raw = bytes.fromhex(cols[1].split(":")[0])
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # per-32-bit host order
                found.add(str(ipaddress.ip_address(words)))
    return found


def test_a_worker_that_cannot_see_the_model_directory_unpacks_the_shipped_one(graph_model, tmp_path):
    """On a cluster whose nodes do not share a filesystem the export travels through the object store: a worker
    whose path does not hold it unpacks the bundle once and scores as the driver's model does. (And every server
    of the local cluster listens on the loopback interface only.)"""
    import hashlib

    from engine_serving import load_model
    from engine_serving.ray_cluster import RayCluster
    from engine_serving.ray_runner import ModelSpec, _worker_model

    here = ModelSpec(str(graph_model.export), threads=1)
    digest = hashlib.sha256((graph_model.export / "export.json").read_bytes()).hexdigest()
    elsewhere = ModelSpec(str(tmp_path / "not-on-this-node"), threads=1)

    def top(spec, bundle):
        model = _worker_model(spec, bundle, digest)
        return str(model.directory), model.recommend(np.arange(50), 5)[0]

    with RayCluster(num_cpus=1) as ray_mod:
        bundle = [ray_mod.put(here.bundle())]
        directory, got = ray_mod.get(ray_mod.remote(num_cpus=1)(top).remote(elsewhere, bundle))
        listening = _listening_addresses(os.getpid())
    assert listening and all(_loopback(a) for a in listening), listening
    assert "engine-ray-models" in directory and directory.endswith(digest)
    assert np.array_equal(got, load_model(str(graph_model.export), threads=1).recommend(np.arange(50), 5)[0])
    assert not (tmp_path / "not-on-this-node").exists()
