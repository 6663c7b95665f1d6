"""Load test of ``engine serve`` from a second process, on loopback: requests/s and p50 / p99 latency, then malformed
requests, each of which must get a 4xx while the server keeps answering ``/health``.

``--servers`` names the servers to measure one after the other in the same run, each at every ``--concurrency``
level (a comma list, e.g. ``1,8,32``): ``fastapi`` (``engine serve``: FastAPI on uvicorn, request batching on),
``fastapi-nobatch`` (``engine serve --no-batching``) and ``stdlib`` (the standard-library threading server that
``engine serve`` ran before, kept as ``benchmarks/stdlib_server.py`` for this comparison only).

Each server is a real subprocess bound to 127.0.0.1 on a free port. This process is the client:
``--concurrency`` threads, each with its own keep-alive connection, send valid requests (``POST /recommend`` for
uniformly drawn known users of a graph or sequential model; ``POST /match`` for records drawn from ``--records`` with
a linkage model) until ``--requests`` have been sent or ``--seconds`` have passed, whichever comes first. Latency is
measured per request, client side (send to last byte read). Then the malformed requests of :func:`malformed_cases`
(bad JSON, a non-object body, an unknown user, wrong types, missing fields, k out of range, an unknown field, a body
over the limit, no Content-Length, an unknown route, a wrong method) go out one by one, each followed by
``GET /health`` on a fresh connection and, at the end, one valid request whose answer must equal the first one's.

The model is ``--model DIR`` (an ``engine export`` directory), or ``--pipeline YAML``: trained here with
``engine run --no-track`` (``--epochs``, one torch thread) and exported with ``engine export`` into ``--work``.

    .venv/bin/python benchmarks/serve_load.py --pipeline pipelines/quickstart.yaml --epochs 2 \\
        --servers stdlib,fastapi-nobatch,fastapi --concurrency 1,8,32 --requests 3000 --seconds 20 --threads 1 \\
        --out out/serve_load.json

Exit status 1 when a valid request failed or a malformed one did not get a 4xx (or took the server down).

The client (requests, the load, the malformed cases) is ``benchmarks/load_client.py``; this file launches the servers.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from load_client import LoadResult, check_malformed, malformed_cases, request, run_load  # noqa: E402

__all__ = ["LoadResult", "check_malformed", "malformed_cases", "request", "run_load", "start_server", "stop_server",
           "valid_bodies", "measure"]


# -- the server ---------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *map(str, args)]


def child_env(threads: int) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "serving"), os.environ.get("PYTHONPATH", "")])}
    env.pop("ENGINE_LOAD_PLUGINS", None)  # `engine serve` of a linkage model needs the installed plugins
    return env


def train_and_export(pipeline: str, epochs: int, work: Path, threads: int) -> Path:
    """``engine run`` (untracked, ``epochs`` epochs, checkpoints under ``work``) then ``engine export``."""
    sets = ["--set", f"train.epochs={epochs}", "--set", f"train.num_threads={threads}",
            "--set", f"train.checkpoint_dir={work / 'checkpoints'}"]
    env = child_env(threads)
    for cmd in (engine_cmd("run", pipeline, "--no-track", *sets),
                engine_cmd("export", pipeline, *sets, "-o", work / "export")):
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[2:4])} failed:\n{done.stderr[-3000:]}")
    return work / "export"


SERVERS = ("fastapi", "fastapi-nobatch", "stdlib")


def server_cmd(server: str, model: str | Path, port: int, threads: int) -> list[str]:
    """The command line of ``server`` (one of :data:`SERVERS`) serving ``model`` on 127.0.0.1:``port``."""
    if server == "stdlib":
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from stdlib_server import make_server; "
                "from engine_serving import load_model; "
                "make_server(load_model(sys.argv[2], threads=int(sys.argv[4])), '127.0.0.1', int(sys.argv[3]))"
                ".serve_forever()")
        return [sys.executable, "-c", code, str(ROOT / "benchmarks"), str(model), str(port), str(threads)]
    if server not in SERVERS:
        raise SystemExit(f"unknown server {server!r}; known: {', '.join(SERVERS)}")
    batching = "--no-batching" if server == "fastapi-nobatch" else "--batching"
    return engine_cmd("serve", "--model", model, "--host", "127.0.0.1", "--port", port, "--threads", threads, batching)


def start_server(model: str | Path, threads: int = 1, port: int | None = None, timeout: float = 120.0,
                 server: str = "fastapi") -> tuple[subprocess.Popen, int]:
    """``server`` (default ``engine serve``) serving MODEL on 127.0.0.1 and a free port; returns once ``GET /health``
    answers 200."""
    port = port or free_port()
    proc = subprocess.Popen(server_cmd(server, model, port, threads),
                            env=child_env(threads), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{server} server exited with {proc.returncode}:\n{proc.stderr.read().decode()[-3000:]}")
        try:
            if request(port, "GET", "/health", timeout=2)[0] == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError(f"{server} server did not answer /health within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- what to send -------------------------------------------------------------------------------------------------
def valid_bodies(export: Path, k: int, seed: int = 0, records: str | None = None) -> tuple[str, Iterator, dict]:
    """``(family, endless iterator of (path, body), probe)`` for the model in ``export``; ``probe`` holds a known
    and an unknown user id (graph, sequence) or a record (linkage) for :func:`malformed_cases`."""
    import numpy as np
    import polars as pl

    meta = json.loads((export / "export.json").read_text())
    family = meta["serving"]["family"]
    rng = np.random.default_rng(seed)
    if family == "linkage":
        if not records:
            raise SystemExit("a linkage model needs --records FILE (records to match, with the model's fields)")
        fields = meta["serving"]["fields"]
        frame = pl.read_parquet(records) if records.endswith(".parquet") else pl.read_csv(records, infer_schema=False)
        rows = frame.select([c for c in fields if c in frame.columns]).to_dicts()

        def gen_records():
            while True:
                yield "/match", {"record": rows[int(rng.integers(len(rows)))], "k": k}

        return family, gen_records(), {"record": rows[0]}
    users = pl.read_parquet(export / meta["serving"]["users"])["user"]
    ids = users.to_list()
    unknown = (max(ids) + 1000) if users.dtype.is_integer() else "no-such-user"

    def gen_users():
        while True:
            yield "/recommend", {"user": ids[int(rng.integers(len(ids)))], "k": k}

    return family, gen_users(), {"known": ids[0], "unknown": unknown}


def measure(server: str, export: Path, family: str, bodies: Iterator, probe: dict, args) -> dict[str, Any]:
    """One server: the load at every concurrency level, then the malformed requests."""
    proc, port = start_server(export, threads=args.threads, server=server)
    levels = []
    try:
        _, health = request(port, "GET", "/health")
        print(f"{server} pid {proc.pid} on 127.0.0.1:{port}: {json.dumps(health)}", flush=True)
        for _ in range(20):  # warm-up
            request(port, "POST", *next(bodies))
        first = None
        for concurrency in args.concurrency:
            load = run_load(port, bodies, args.requests, args.seconds, concurrency, keep_answers=1)
            stats = load.summary()
            first = first or (load.answers[0] if load.answers else None)
            levels.append({"concurrency": concurrency, **stats})
            print(f"  {server:<16} {concurrency:>3} connections: {stats['requests']} requests in "
                  f"{stats['seconds']} s: {stats['requests_per_s']} req/s, p50 {stats['p50_ms']} ms, "
                  f"p99 {stats['p99_ms']} ms, max {stats['max_ms']} ms; {stats['failed']} failed", flush=True)
            for line in load.failures[:5]:
                print(f"    failed: {line}")
        bad = check_malformed(port, malformed_cases(family, probe.get("known"), probe.get("unknown"),
                                                    probe.get("record")))
        for row in bad:
            if not (row["is_4xx"] and row["healthy_after"]):
                print(f"    {row['case']:<32} -> {row['status']}  health after: "
                      f"{'ok' if row['healthy_after'] else 'DOWN'}")
        body = first[0] if first else next(bodies)[1]
        status, again = request(port, "POST", "/match" if family == "linkage" else "/recommend", body)
        same = status == 200 and (first is None or again == first[1])
        alive = proc.poll() is None
    finally:
        stop_server(proc)
    passed = (all(lv["failed"] == 0 for lv in levels) and all(r["is_4xx"] and r["healthy_after"] for r in bad)
              and same and alive)
    print(f"  {server}: malformed {sum(r['is_4xx'] for r in bad)}/{len(bad)} got a 4xx, server "
          f"{'up' if alive else 'DOWN'} after all of them; a valid request after them: "
          f"{'same answer' if same else 'DIFFERENT'}; {'PASS' if passed else 'FAIL'}", flush=True)
    return {"server": server, "levels": levels, "malformed": bad, "passed": passed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="an `engine export` directory")
    src.add_argument("--pipeline", help="train (--epochs) and export this pipeline first")
    parser.add_argument("--epochs", type=int, default=2, help="epochs when training --pipeline")
    parser.add_argument("--work", default=None, help="where to train and export (default: a temporary directory)")
    parser.add_argument("--records", default=None, help="records to send to /match (linkage models)")
    parser.add_argument("--servers", default="fastapi", help=f"comma list of {', '.join(SERVERS)}")
    parser.add_argument("--requests", type=int, default=3000, help="at most this many valid requests per level")
    parser.add_argument("--seconds", type=float, default=60.0, help="and for at most this long per level")
    parser.add_argument("--concurrency", default="4", help="client threads, one connection each: a comma list")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime / torch threads of the server")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        work = Path(args.work or tmp)
        if args.pipeline:
            tic = time.perf_counter()
            export = train_and_export(args.pipeline, args.epochs, work, args.threads)
            print(f"trained {args.epochs} epoch(s) of {args.pipeline} and exported to {export} "
                  f"({time.perf_counter() - tic:.0f} s)", flush=True)
        else:
            export = Path(args.model)
        family, bodies, probe = valid_bodies(export, args.k, records=args.records)
        results = [measure(server, export, family, bodies, probe, args) for server in servers]
    print(f"\n| server | connections | requests/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|")
    for res in results:
        for lv in res["levels"]:
            print(f"| {res['server']} | {lv['concurrency']} | {lv['requests_per_s']} | {lv['p50_ms']} | "
                  f"{lv['p99_ms']} |")
    passed = all(r["passed"] for r in results)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "model": str(args.model or args.pipeline), "family": family, "k": args.k, "cpus": os.cpu_count(),
            "server_threads": args.threads, "results": results, "passed": passed}, indent=2))
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
