"""Why ``engine score --backend ray`` uses Ray tasks over chunk ids and not Ray Data: both measured on one input.

* ``tasks``: ``engine score --backend ray --workers 2 --threads 1`` (the product: the driver reads each chunk,
  a task scores it with the worker's cached model, the driver writes the part atomically; resumable).
* ``ray-data``: ``ray.data.read_parquet(input).map_batches(Scorer, batch_size=chunk, concurrency=2, num_cpus=1)``
  with one model (one onnxruntime session) per actor, then ``write_parquet``: the same scoring function
  (``engine_serving.score_chunk``), Ray Data's streaming executor and writer instead of ours (no manifest, no
  resumption, its own file names).

Both start their own local cluster on 127.0.0.1 in a fresh process, so each wall time includes the cluster start
and the model loads. Ray Data needs pyarrow, which the engine does not: install it apart (``pip install --target
/tmp/raydata_site pyarrow``) and put it on ``PYTHONPATH`` for this script only. The model and inputs are
``ray_scoring.py``'s (run it first, or pass ``--work``).

    PYTHONPATH=/tmp/raydata_site .venv/bin/python benchmarks/ray_data_vs_tasks.py --users 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ray_data_child(work: Path, users: int, chunk: int, k: int, out: Path, cpus: int) -> dict:
    import numpy as np
    import polars as pl

    from engine_serving.ray_cluster import RayCluster

    cluster = RayCluster(num_cpus=cpus)  # the same local cluster as engine score's, on 127.0.0.1
    ray = cluster.start()
    model_dir = str((work / "export").resolve())

    class Scorer:
        def __init__(self) -> None:
            from engine_serving import load_model

            self.model = load_model(model_dir, threads=1)

        def __call__(self, batch: dict) -> dict:
            from engine_serving import score_chunk

            part = score_chunk(self.model, 0, pl.DataFrame({"user": np.asarray(batch["user"])}), k)
            return {c: part[c].to_numpy() for c in part.columns}

    ds = ray.data.read_parquet(str((work / f"input-{users}.parquet").resolve()))
    scored = ds.map_batches(Scorer, batch_size=chunk, concurrency=2, num_cpus=1, batch_format="numpy")
    scored.write_parquet(str(out.resolve()))
    rows = pl.scan_parquet(str(out / "*.parquet")).select(pl.len()).collect().item()
    cluster.stop()
    return {"ray_startup_s": round(cluster.startup_s, 2), "output_rows": rows}


def run(cmd: list[str], timeout: float) -> tuple[float, str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return time.perf_counter() - tic, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="out/ray_scoring_work")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--parts", type=int, default=20)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--out", default="out/ray_data_vs_tasks.json")
    parser.add_argument("--ray-data-cpus", type=int, default=2,
                        help="logical CPUs of Ray Data's local cluster (its read and write tasks need a CPU besides "
                             "the two scoring actors': with 2 they waited for one here)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before a run counts as stalled")
    parser.add_argument("--skip-tasks", action="store_true", help="only the Ray Data run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    chunk = -(-args.users // args.parts)
    if args.child:
        out = work / f"out-ray-data-{args.users}"
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        print(json.dumps(ray_data_child(work, args.users, chunk, args.k, out, args.ray_data_cpus)))
        return
    results: dict = {}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        results = json.loads(path.read_text()).get("runs", {})

    def save() -> None:
        path.write_text(json.dumps({"users": args.users, "chunk": chunk, "runs": results}, indent=2) + "\n")

    if not args.skip_tasks:
        out = work / f"out-tasks-{args.users}"
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        load = round(os.getloadavg()[0], 2)
        wall, stdout = run([str(Path(sys.executable).parent / "engine"), "score", "--model", str(work / "export"),
                            "--input", str(work / f"input-{args.users}.parquet"), "--output", str(out), "--top-k",
                            str(args.k), "--chunk-size", str(chunk), "--backend", "ray", "--workers", "2",
                            "--threads", "1"], args.timeout)
        report = json.loads(stdout)
        results["tasks"] = {"wall_s": round(wall, 2), "users_per_s": round(args.users / wall, 1),
                            "ray_startup_s": report["ray_startup_s"], "output_rows": report["output_rows"],
                            "load_before": load}
        save()
    load = round(os.getloadavg()[0], 2)
    name = f"ray-data-{args.ray_data_cpus}cpu"
    try:
        wall, stdout = run([sys.executable, __file__, "--child", "--work", str(work), "--users", str(args.users),
                            "--parts", str(args.parts), "--k", str(args.k), "--ray-data-cpus",
                            str(args.ray_data_cpus)], args.timeout)
        results[name] = {"wall_s": round(wall, 2), "users_per_s": round(args.users / wall, 1),
                         **json.loads(stdout.strip().splitlines()[-1]), "load_before": load}
    except subprocess.TimeoutExpired:
        results[name] = {"stalled_after_s": args.timeout, "load_before": load}
    save()
    print(json.dumps(results, indent=2))

if __name__ == "__main__":
    main()
