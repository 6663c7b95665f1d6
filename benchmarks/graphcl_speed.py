"""Seconds per training epoch, evaluation time and peak memory of each graph CL model on gowalla.

Each model runs in its own subprocess (so peak RSS is its own): the pipeline is loaded exactly as `engine run` loads
it, ``--steps`` training steps are timed after one warm-up step, and the epoch time is
``epoch_start + mean_step * batches_per_epoch`` (a full gowalla epoch is 396 steps at batch 2048). Evaluation is the
full-ranking test evaluation, timed once.

The same run also times a plain reference loop, the way LightGCN-PyTorch trains: a per-user Python negative
sampler and ``torch.sparse.mm`` on a COO adjacency; the ratio of its step time to ours is printed.

    .venv/bin/python benchmarks/graphcl_speed.py --steps 20 --out out/graphcl_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("lightgcn", "sgl", "simgcl", "xsimgcl", "dccf")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_model(model: str, steps: int, threads: int | None) -> dict:
    import torch

    from engine.config import load_pipeline
    from engine.run import prepare

    if threads:
        torch.set_num_threads(threads)
    cfg = load_pipeline(ROOT / "pipelines" / f"{model}-gowalla.yaml")
    tic = time.perf_counter()
    task, net = prepare(cfg)
    setup_s = time.perf_counter() - tic
    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    tic = time.perf_counter()
    task.on_epoch_start(net, 1, gen)
    epoch_start_s = time.perf_counter() - tic
    batches = task.train_batches(1, gen)
    times = []
    for i, batch in enumerate(batches):
        if i > steps:
            break
        tic = time.perf_counter()
        out = task.training_step(net, batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if i > 0:  # the first step warms caches up
            times.append(time.perf_counter() - tic)
    step_s = sum(times) / len(times)
    tic = time.perf_counter()
    metrics = task.evaluate(net, "test")
    eval_s = time.perf_counter() - tic
    return {"model": model, "batch_size": cfg.train.batch_size, "batches_per_epoch": task.num_batches(),
            "step_s": step_s, "epoch_start_s": epoch_start_s,
            "epoch_s": epoch_start_s + step_s * task.num_batches(), "eval_s": eval_s, "setup_s": setup_s,
            "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads(), "steps_timed": len(times),
            "untrained_recall@20": metrics["recall@20"]}


def time_reference(steps: int, threads: int | None) -> dict:
    """LightGCN-PyTorch's loop: Python per-user sampler + torch.sparse.mm on COO, 3 layers, batch 2048."""
    import numpy as np
    import torch

    from engine.data.sources import LightGCNTxtSource

    if threads:
        torch.set_num_threads(threads)
    data = LightGCNTxtSource(str(ROOT / "../shared/data/gowalla")).load()
    u = data.train["user"].to_numpy()
    i = data.train["item"].to_numpy()
    n_u, n_i = data.num_users, data.num_items
    pos = [set() for _ in range(n_u)]
    for a, b in zip(u.tolist(), i.tolist()):
        pos[a].add(b)
    pos_list = [list(p) for p in pos]
    rows = np.concatenate([u, i + n_u])
    cols = np.concatenate([i + n_u, u])
    deg = np.bincount(rows, minlength=n_u + n_i).astype(np.float32)
    vals = 1.0 / np.sqrt(deg[rows] * deg[cols])
    adj = torch.sparse_coo_tensor(torch.tensor(np.stack([rows, cols])), torch.tensor(vals), (n_u + n_i,) * 2).coalesce()
    emb = torch.nn.Embedding(n_u + n_i, 64)
    torch.nn.init.normal_(emb.weight, std=0.1)
    opt = torch.optim.Adam(emb.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)

    def sample(batch_users):  # UniformSample_original_python
        out = []
        for user in batch_users:
            items = pos_list[user]
            p = items[rng.integers(len(items))]
            while True:
                n = int(rng.integers(n_i))
                if n not in pos[user]:
                    break
            out.append((user, p, n))
        return torch.tensor(out)

    times, sample_times = [], []
    for step in range(steps + 1):
        tic = time.perf_counter()
        batch = sample(rng.integers(n_u, size=2048).tolist())
        t_sample = time.perf_counter() - tic
        h, acc = emb.weight, [emb.weight]
        for _ in range(3):
            h = torch.sparse.mm(adj, h)
            acc.append(h)
        final = torch.stack(acc).mean(0)
        us, ps, ns = final[batch[:, 0]], final[n_u + batch[:, 1]], final[n_u + batch[:, 2]]
        loss = torch.nn.functional.softplus((us * ns).sum(1) - (us * ps).sum(1)).mean()
        loss = loss + 1e-4 * emb.weight[batch[:, 0]].pow(2).sum() / 2 / 2048
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step > 0:
            times.append(time.perf_counter() - tic)
            sample_times.append(t_sample)
    step_s = sum(times) / len(times)
    return {"model": "reference-lightgcn-pytorch-loop", "step_s": step_s,
            "sample_s": sum(sample_times) / len(sample_times), "epoch_s": step_s * ((u.size + 2047) // 2048),
            "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads(), "steps_timed": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        fn = time_reference if args.one == "reference" else (lambda s, t: time_model(args.one, s, t))
        print(json.dumps(fn(args.steps, args.threads)))
        return
    results = []
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    for name in ["reference", *args.models]:
        cmd = [sys.executable, __file__, "--one", name, "--steps", str(args.steps)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{r['model']:<34} step {r['step_s'] * 1000:8.1f} ms  epoch {r['epoch_s']:8.1f} s  "
              f"eval {r.get('eval_s', float('nan')):6.1f} s  peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)
    ref = next((r for r in results if r["model"].startswith("reference")), None)
    ours = next((r for r in results if r["model"] == "lightgcn"), None)
    if ref and ours:
        ratio = ref["epoch_s"] / ours["epoch_s"]
        print(f"LightGCN epoch: reference loop / engine = {ratio:.2f}x "
              f"(reference sampler alone: {ref['sample_s'] * 1000:.0f} ms per batch)")
        results.append({"ratio_reference_over_engine_lightgcn_epoch": ratio})
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
