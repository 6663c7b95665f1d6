"""Batch scoring speed and peak memory: top-k for every user, onnxruntime vs PyTorch eager vs faiss, against the
machine's matmul roofline measured in the same run.

Cases (embeddings are RANDOM, dim 64, N(0, 1/64), seed 0 — scoring cost does not depend on the values):

* ``gowalla``: 29,858 users x 40,981 items; the seen items are gowalla's real training interactions
  (``/work/shared/data/gowalla/train.txt.gz``, 810,128 pairs), excluded from every top-k.
* ``big``: 1,000,000 users x 100,000 items, 10 random seen items per user. ``--big-users N`` scores only the
  first N users (the model still holds all 1M) and extrapolates linearly to 1M.

Methods, each in its own subprocess so that its peak RSS (``VmHWM``) is its own:

* ``onnx``: the real serving path (``engine score``) — an export directory (``GraphScorer`` ONNX graph with the embeddings as constants,
  written by ``engine.export.export_onnx``, plus the serving files) scored by ``engine_serving.run_job`` from a
  parquet input to parquet parts: read, onnxruntime scores, seen-item masking, two-stage exact top-k
  (``engine_serving.topk``), atomic writes.
* ``torch``: the naive eager way: ``U[batch] @ I.T``, seen items set to -inf, ``torch.topk``.
* ``faiss``: the ``engine score --index faiss`` path (``run_job`` after ``use_faiss()``, parquet I/O included):
  ``IndexFlatIP`` over the items (exact at these sizes: IVF starts at 500,000 items), ``search`` with k + (most seen
  items in the batch), seen items dropped; users batched in order of seen-item count so that few extra neighbours
  are asked for.
* ``faiss-ivf``: the same with the IVF index forced (``nlist = 4 sqrt(items)``, default ``nprobe``): approximate,
  its agreement with torch says how much.

``onnx`` and ``torch`` use batches of ``engine_serving.model.BATCH_FLOATS`` scores (~200 users of gowalla, 83 of the
100k catalogue); faiss batches 256 users.

The roofline is the best of 3 float32 4096^3 matmuls (torch, same thread count); "of roofline" is the scoring
step's useful GFLOP/s (2 * users * items * dim / seconds) over it. Beside it, ``matmul``: the scoring step's
matmul alone at its own shapes (``users[batch] @ items.T`` into a reused buffer, the ``torch`` batches; no top-k, no
masking, no I/O). With dim 64 that product writes 4 bytes per 128 flops, so it runs well below the 4096^3 figure;
"x matmul" is each method's time over it: what top-k, masking and I/O add to the product itself. One thread by default (a shared machine):

    .venv/bin/python benchmarks/score_speed.py --threads 1 --big-users 100000 --out out/score_speed.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOWALLA = Path("/work/shared/data/gowalla")
DIM = 64
METHODS = ("onnx", "torch", "faiss", "faiss-ivf")
#: measured beside the methods: the scoring step's matmul alone, same shapes (no top-k, no I/O)
MATMUL = "matmul"


def _threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)


# -- preparation (parent) ---------------------------------------------------------------------------------------------
def _embeddings(n: int, seed: int, work: Path, name: str):
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(work / f"{name}.npy", mode="w+", dtype=np.float32, shape=(n, DIM))
    for s in range(0, n, 100_000):
        out[s:s + 100_000] = rng.standard_normal((min(100_000, n - s), DIM), dtype=np.float32) / DIM ** 0.5
    out.flush()
    return np.load(work / f"{name}.npy", mmap_mode="r")


def prepare(case: str, work: Path, big_users: int) -> dict:
    """Embeddings, seen items and an export directory for ``case`` under ``work``; returns the case's description."""
    import numpy as np
    import polars as pl
    import torch

    from engine.export import export_onnx

    sys.path.insert(0, str(ROOT / "plugins" / "graphcl"))
    from engine_graphcl.task import GraphScorer, write_serving_files

    work.mkdir(parents=True, exist_ok=True)
    if case == "gowalla":
        users, items = [], []
        with gzip.open(GOWALLA / "train.txt.gz", "rt") as fh:
            for line in fh:
                ids = line.split()
                if len(ids) > 1:
                    users.extend([int(ids[0])] * (len(ids) - 1))
                    items.extend(int(t) for t in ids[1:])
        seen_u, seen_i = np.asarray(users), np.asarray(items)
        num_users = sum(1 for _ in open(GOWALLA / "user_list.txt")) - 1
        num_items = sum(1 for _ in open(GOWALLA / "item_list.txt")) - 1
        num_users, num_items = max(num_users, int(seen_u.max()) + 1), max(num_items, int(seen_i.max()) + 1)
        scored = num_users
    else:
        num_users, num_items = 1_000_000, 100_000
        rng = np.random.default_rng(1)
        seen_u = np.repeat(np.arange(num_users), 10)
        seen_i = rng.integers(0, num_items, seen_u.size)
        scored = min(big_users, num_users)
    u = _embeddings(num_users, 0, work, "users")
    i = _embeddings(num_items, 1, work, "items")
    export = work / "export"
    export.mkdir(exist_ok=True)
    tic = time.perf_counter()
    scorer = GraphScorer(torch.from_numpy(np.asarray(u)), torch.from_numpy(np.asarray(i))).eval()
    export_onnx(scorer, (torch.arange(4),), export / "model.onnx", ["user"], ["scores"], dynamic_batch=["user"])
    export_s = time.perf_counter() - tic
    del scorer
    np.save(export / "user_embeddings.npy", np.asarray(u))  # what `engine score --index faiss` searches with
    np.save(export / "item_embeddings.npy", np.asarray(i))
    serving = write_serving_files(export, "graph", None, num_users, None, num_items, seen_u, seen_i,
                                  extra={"user_embeddings": "user_embeddings.npy",
                                         "item_embeddings": "item_embeddings.npy"})
    (export / "export.json").write_text(json.dumps({"num_users": num_users, "num_items": num_items,
                                                    "serving": serving}))
    pl.DataFrame({"user": np.arange(scored, dtype=np.int64)}).write_parquet(work / "input.parquet")
    return {"case": case, "num_users": num_users, "num_items": num_items, "scored_users": scored, "dim": DIM,
            "seen_pairs": int(seen_u.size), "onnx_mb": round((export / "model.onnx").stat().st_size / 2**20, 1),
            "export_s": round(export_s, 1)}


# -- measurements (children) ------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    """Peak RSS of this process, MiB: ``VmHWM`` (reset by execve, unlike ``ru_maxrss``, which a child started by
    fork + exec inherits from its parent)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(method: str, work: Path, k: int, threads: int) -> dict:
    import numpy as np

    if method == "roofline":
        import torch

        torch.set_num_threads(threads)
        n = 4096
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(3))
        return {"gflops": 2 * n ** 3 / best / 1e9}

    sys.path.insert(0, str(ROOT / "serving"))
    from engine_serving import load_model, run_job

    model = load_model(str(work / "export"), threads=threads)  # the seen items and id maps, memory-mapped
    scored = int(__import__("polars").scan_parquet(work / "input.parquet").select(__import__("polars").len())
                 .collect().item())
    base = _rss_mb()
    sample = np.arange(min(scored, 1000))
    if method in ("onnx", "faiss", "faiss-ivf"):
        out = work / f"out-{method}"
        tic = time.perf_counter()
        if method != "onnx":
            model.use_faiss(**({"ivf_min_items": 0} if method == "faiss-ivf" else {}))
        index_s = time.perf_counter() - tic
        run_job(model, work / "input.parquet", out, top_k=k, chunk_size=50_000, progress=False)
        seconds = time.perf_counter() - tic
        top = model.recommend(sample, k)[0]
        extra = {"provider": model.provider, "index": model.index_kind, "index_build_s": round(index_s, 2)}
    else:
        import torch

        torch.set_num_threads(threads)
        users = np.load(work / "users.npy", mmap_mode="r")
        items = np.load(work / "items.npy")
        from engine_serving.model import BATCH_FLOATS

        batch = max(1, BATCH_FLOATS // items.shape[0])
        table = torch.from_numpy(items)

        if method == MATMUL:  # the product alone, into one reused buffer
            buf = torch.empty(batch, items.shape[0])

            def run(idx):
                torch.mm(torch.from_numpy(np.asarray(users[idx])), table.T, out=buf[:len(idx)])
                return np.zeros((len(idx), k), dtype=np.int64)
        else:
            def run(idx):  # the naive eager way: matmul, mask, torch.topk
                scores = torch.from_numpy(np.asarray(users[idx])) @ table.T
                rows, cols = model.seen(idx)
                scores[torch.from_numpy(rows), torch.from_numpy(cols)] = -float("inf")
                return torch.topk(scores, k, dim=1).indices.numpy()

        tic = time.perf_counter()
        for s in range(0, scored, batch):
            run(np.arange(s, min(s + batch, scored)))
        seconds = time.perf_counter() - tic
        top = None if method == MATMUL else run(sample)
        extra = {"batch": batch}
    if method != MATMUL:
        np.save(work / f"top-{method}.npy", top)
    return {"seconds": seconds, "rows_per_s": scored / seconds, "baseline_rss_mb": round(base), **extra}


def _timed(fn) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def spawn(method: str, work: Path, k: int, threads: int) -> dict:
    """Run one measurement in a fresh process (it reports its own peak RSS)."""
    cmd = [sys.executable, __file__, "--child", method, "--work", str(work), "--k", str(k), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--big-users", type=int, default=100_000, help="users scored in the 1M x 100k case")
    parser.add_argument("--cases", default="gowalla,big")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"a subset of {','.join(METHODS)} (without torch, the reference, no agreement)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    _threads(args.threads)
    if args.child:
        result = child(args.child, Path(args.work), args.k, args.threads)
        result["peak_rss_mb"] = round(_rss_mb())
        print(json.dumps(result))
        return

    import numpy as np

    print(f"threads={args.threads} k={args.k} dim={DIM}; embeddings random N(0, 1/{DIM})", flush=True)
    roof = spawn("roofline", Path("."), args.k, args.threads)["gflops"]
    print(f"matmul roofline (float32 4096^3, torch, best of 3): {roof:.1f} GFLOP/s", flush=True)
    report = {"threads": args.threads, "k": args.k, "roofline_gflops": round(roof, 1), "cases": []}
    for case in args.cases.split(","):
        with tempfile.TemporaryDirectory(prefix=f"score-speed-{case}-") as tmp:
            work = Path(tmp)
            desc = prepare(case, work, args.big_users)
            print(f"\n{case}: {desc['num_users']:,} users x {desc['num_items']:,} items, {desc['seen_pairs']:,} seen "
                  f"pairs; scoring {desc['scored_users']:,} users; ONNX {desc['onnx_mb']} MB (export "
                  f"{desc['export_s']} s)", flush=True)
            flop = 2 * desc["scored_users"] * desc["num_items"] * DIM
            print(f"{'method':<9} {'seconds':>9} {'rows/s':>10} {'GFLOP/s':>8} {'of roof':>8} {'x matmul':>8} "
                  f"{'peak MB':>8} "
                  f"{'base MB':>8}  top-{args.k} agreement with torch (first 1000 users)", flush=True)
            rows = {}
            chosen = [m for m in METHODS if m in args.methods.split(",")]
            for method in (MATMUL, *chosen):
                rows[method] = spawn(method, work, args.k, args.threads)
            ref = np.load(work / "top-torch.npy") if "torch" in rows else None
            for method, r in rows.items():
                agree = float("nan")
                if method != MATMUL and ref is not None:
                    top = np.load(work / f"top-{method}.npy")
                    agree = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(top, ref)]))
                r.update({"gflops": flop / r["seconds"] / 1e9, "agreement": agree})
                r["of_roofline"] = r["gflops"] / roof
                r["x_matmul"] = r["seconds"] / rows[MATMUL]["seconds"]
                if desc["scored_users"] < desc["num_users"]:
                    r["extrapolated_seconds_all_users"] = r["seconds"] * desc["num_users"] / desc["scored_users"]
                print(f"{method:<9} {r['seconds']:>9.2f} {r['rows_per_s']:>10,.0f} {r['gflops']:>8.1f} "
                      f"{r['of_roofline']:>8.1%} {r['x_matmul']:>8.2f} {r['peak_rss_mb']:>8,} "
                      f"{r['baseline_rss_mb']:>8,}  {agree:.4f}"
                      + (f"  ({r['provider']}, {r['index']}, index built in {r['index_build_s']} s)"
                         if "provider" in r else ""), flush=True)
                if "extrapolated_seconds_all_users" in r:
                    print(f"{'':<9} all {desc['num_users']:,} users (linear extrapolation): "
                          f"{r['extrapolated_seconds_all_users'] / 60:.1f} min", flush=True)
            report["cases"].append({**desc, "methods": rows})
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
