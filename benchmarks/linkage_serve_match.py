"""Records per second of ``engine serve`` on a linkage export: one connection, sequential ``POST /match`` requests.

Starts ``engine serve --model EXPORT --host 127.0.0.1 --port <free> --threads T`` (its own process, stopped by its
handle at the end), sends one warm-up request, then each record of ``--input`` (a CSV with the id column and the
model's fields) as one request, and prints records/s and the p50 / p99 latency::

    .venv/bin/python benchmarks/linkage_serve_match.py --model /tmp/abt-export --input /tmp/abt200.csv --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    import httpx
    import polars as pl

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--id-column", default="id")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--startup-s", type=float, default=60.0)
    args = parser.parse_args()
    port = free_port()
    engine = str(Path(sys.executable).with_name("engine"))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.Popen([engine, "serve", "--model", args.model, "--host", "127.0.0.1", "--port", str(port),
                             "--threads", str(args.threads)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + args.startup_s
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"engine serve did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
        records = [{k: v for k, v in r.items() if k != args.id_column}
                   for r in pl.read_csv(args.input, infer_schema=False).to_dicts()]
        latencies = []
        with httpx.Client(base_url=url, timeout=60) as client:
            client.post("/match", json={"record": records[0], "k": args.k}).raise_for_status()
            tic = time.perf_counter()
            for record in records:
                t = time.perf_counter()
                client.post("/match", json={"record": record, "k": args.k}).raise_for_status()
                latencies.append(time.perf_counter() - t)
            wall = time.perf_counter() - tic
        latencies.sort()
        print(json.dumps({"requests": len(records), "threads": args.threads, "records_per_s": round(len(records) / wall, 1),
                          "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
                          "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1)}))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
