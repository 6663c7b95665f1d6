"""``engine score --backend ray`` against the single-process job, in one run: rows/s, peak memory of the driver and
of each worker, and the overhead of Ray itself at several input sizes.

The case is ``score_speed.py``'s big one: 1,000,000 users x 100,000 items, dim 64, **random** embeddings, 10 random
seen items per user, top-20 (scoring cost does not depend on the values). Inputs: the first N users for each
``--sizes`` (default 10k, 100k, 1M), cut into 20 parts each (``--parts``), the same chunks for every backend.

Each measurement is the real command line in its own process (``engine score ...``, wrapped in ``/usr/bin/time``
for the driver's peak RSS), so the wall time includes the process start, the model load and, for Ray, starting and
stopping the local cluster (every server on 127.0.0.1) and loading the model in each worker:

* ``local-1t``: the single-process job, one onnxruntime thread;
* ``local-2t``: the single-process job, two threads (the whole 2-core machine, the fair rival of two workers);
* ``ray-2w``: ``--backend ray --workers 2 --threads 1``.

Every backend's parts are compared with ``local-1t``'s, file for file. Reported per run: wall seconds, rows/s, the
driver's peak RSS, and for Ray the cluster start, each worker's chunks, busy seconds, rows/s and peak RSS; "Ray
overhead" is ray's wall time minus the workers' mean busy time (what is not scoring: cluster start, worker start and
model load, scheduling, transfers).

    .venv/bin/python benchmarks/ray_scoring.py --out out/ray_scoring.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

BACKENDS = {
    "local-1t": ["--threads", "1"],
    "local-2t": ["--threads", "2"],
    "ray-2w": ["--backend", "ray", "--workers", "2", "--threads", "1"],
}


def _engine() -> str:
    return str(Path(sys.executable).parent / "engine")


def run_one(name: str, work: Path, size: int, parts: int, k: int) -> dict:
    out = work / f"out-{name}-{size}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    chunk = -(-size // parts)
    cmd = ["/usr/bin/time", "-f", "maxrss_kb=%M", _engine(), "score", "--model", str(work / "export"), "--input",
           str(work / f"input-{size}.parquet"), "--output", str(out), "--top-k", str(k), "--chunk-size", str(chunk),
           *BACKENDS[name]]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "TQDM_DISABLE": "1"}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "2" if name == "local-2t" else "1"
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        raise RuntimeError(f"{name} at {size} failed:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout)
    driver_mb = int(re.findall(r"maxrss_kb=(\d+)", proc.stderr)[-1]) / 1024
    row = {"backend": name, "users": size, "parts": report["parts"], "chunk_size": chunk, "wall_s": round(wall, 2),
           "job_s": report["seconds"], "rows_per_s": round(size / wall, 1), "driver_peak_mb": round(driver_mb),
           "output_rows": report["output_rows"], "provider": report["provider"]}
    if report.get("backend") == "ray":
        workers = report["worker_processes"]
        busy = [w["score_s"] + w["load_s"] for w in workers.values()]
        row.update({"ray_startup_s": report["ray_startup_s"], "worker_processes": workers,
                    "workers_busy_mean_s": round(sum(busy) / len(busy), 2),
                    "worker_rows_per_s": [w["rows_per_s"] for w in workers.values()],
                    "worker_peak_mb": [round(w["peak_rss_mb"]) for w in workers.values()],
                    "worker_load_s": [w["load_s"] for w in workers.values()],
                    "ray_overhead_s": round(wall - sum(busy) / len(busy), 2)})
    return row


def same_parts(a: Path, b: Path) -> bool:
    import polars as pl

    files = sorted(p.name for p in a.glob("part-*.parquet"))
    return files == sorted(p.name for p in b.glob("part-*.parquet")) and all(
        pl.read_parquet(a / f).equals(pl.read_parquet(b / f)) for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--parts", type=int, default=20, help="parts per input (the chunk size follows)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--work", default="out/ray_scoring_work", help="export and inputs (kept between runs)")
    parser.add_argument("--out", default="out/ray_scoring.json")
    args = parser.parse_args()

    import numpy as np
    import polars as pl

    from score_speed import prepare

    work = Path(args.work)
    if not (work / "export" / "export.json").is_file():
        desc = prepare("big", work, 1_000_000)
        print(f"prepared {desc}", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        path = work / f"input-{size}.parquet"
        if not path.is_file():
            pl.DataFrame({"user": np.arange(size, dtype=np.int64)}).write_parquet(path)
    rows = []
    for size in sizes:
        for name in args.backends.split(","):
            load = os.getloadavg()[0]
            row = run_one(name, work, size, args.parts, args.k)
            row["load_before"] = round(load, 2)
            if name != "local-1t" and (work / f"out-local-1t-{size}" / "_job.json").is_file():
                row["parts_equal_local_1t"] = same_parts(work / f"out-{name}-{size}", work / f"out-local-1t-{size}")
            rows.append(row)
            shown = {k: v for k, v in row.items() if k != "worker_processes"}
            print(json.dumps(shown), flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"k": args.k, "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
