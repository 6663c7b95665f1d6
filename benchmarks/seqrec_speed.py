"""Seconds per training epoch and evaluation time of each sequential model on Beauty, and ONNX vs PyTorch encoder
throughput at batch 256.

Each model runs in its own subprocess (peak RSS is its own): the pipeline is loaded exactly as `engine run` loads
it, ``--steps`` batches are timed after one warm-up batch with the task's own updates (MCLRec makes three per batch),
and the epoch time is ``mean_batch * batches_per_epoch``. Evaluation is the full-ranking validation pass, timed once.

The throughput part exports SASRec's sequence encoder (``engine export``'s graph), then encodes the same batches of
256 test histories with PyTorch eager (``torch.no_grad``) and with onnxruntime (CPU provider), both on
``--threads`` threads, and reports sequences per second.

    .venv/bin/python benchmarks/seqrec_speed.py --steps 20 --threads 1 --out out/seqrec_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("sasrec", "cl4srec", "duorec", "mclrec")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(model: str, dataset: str, threads: int | None):
    import torch

    from engine.config import load_pipeline
    from engine.run import prepare

    if threads:
        torch.set_num_threads(threads)
    cfg = load_pipeline(ROOT / "pipelines" / f"{model}-{dataset}.yaml")
    task, net = prepare(cfg)
    return cfg, task, net


def time_model(model: str, dataset: str, steps: int, threads: int | None) -> dict:
    import torch

    cfg, task, net = load(model, dataset, threads)
    net.train()
    optimizers = {name: torch.optim.Adam(group["params"], lr=group.get("lr", cfg.train.lr))
                  for name, group in task.parameter_groups(net).items()}
    times = []
    for i, batch in enumerate(task.train_batches(1, torch.Generator().manual_seed(cfg.seed))):
        if i > steps:
            break
        tic = time.perf_counter()
        for group, out in task.training_steps(net, batch):  # what the trainer does with each update
            net.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizers[group].step()
        if i > 0:  # the first batch warms caches up
            times.append(time.perf_counter() - tic)
    batch_s = sum(times) / len(times)
    tic = time.perf_counter()
    with torch.no_grad():
        task.evaluate(net, "valid")
    eval_s = time.perf_counter() - tic
    return {"model": model, "dataset": dataset, "batch_size": cfg.train.batch_size,
            "batches_per_epoch": task.num_batches(), "batch_s": batch_s, "epoch_s": batch_s * task.num_batches(),
            "eval_s": eval_s, "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads(),
            "batches_timed": len(times)}


def time_onnx(dataset: str, batch_size: int, reps: int, threads: int | None) -> dict:
    import numpy as np
    import onnxruntime as ort
    import torch

    cfg, task, net = load("sasrec", dataset, threads)
    net.eval()
    with tempfile.TemporaryDirectory() as tmp:
        report = task.export_onnx(net, tmp)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(report["path"], options, providers=["CPUExecutionProvider"])
    histories = task.data.padded_history("test", task.model_cfg.max_len)
    batches = [histories[i * batch_size:(i + 1) * batch_size] for i in range(reps)]
    encode = net.encoder.encode

    def run_torch(x):
        with torch.no_grad():
            return encode(x)

    def run_onnx(x):
        return session.run(["seq_repr"], {"item_seq": x.numpy()})[0]

    result = {"dataset": dataset, "batch_size": batch_size, "batches": reps, "threads": threads,
              "provider": session.get_providers()[0], "parity_max_abs_diff": report["max_abs_diff"]}
    for name, fn in (("torch", run_torch), ("onnx", run_onnx)):
        fn(batches[0])  # warm-up
        tic = time.perf_counter()
        outs = [fn(b) for b in batches]
        elapsed = time.perf_counter() - tic
        result[f"{name}_seq_per_s"] = batch_size * reps / elapsed
        result[f"{name}_first"] = np.asarray(outs[0])[:2, :3].tolist()
    result["onnx_over_torch"] = result["onnx_seq_per_s"] / result["torch_seq_per_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed training batches per model")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--dataset", default="beauty", choices=["beauty", "sports"])
    parser.add_argument("--threads", type=int, default=None, help="torch / onnxruntime threads (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch of the throughput comparison")
    parser.add_argument("--reps", type=int, default=40, help="batches encoded by each engine")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        if args.one == "onnx":
            result = time_onnx(args.dataset, args.batch_size, args.reps, args.threads)
        else:
            result = time_model(args.one, args.dataset, args.steps, args.threads)
        print(json.dumps(result))
        return
    results = []
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    for name in [*args.models, "onnx"]:
        cmd = [sys.executable, __file__, "--one", name, "--steps", str(args.steps), "--dataset", args.dataset,
               "--batch-size", str(args.batch_size), "--reps", str(args.reps)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        if name == "onnx":
            print(f"encoder at batch {r['batch_size']}, {r['threads']} thread(s): torch {r['torch_seq_per_s']:.0f} "
                  f"seq/s, onnxruntime ({r['provider']}) {r['onnx_seq_per_s']:.0f} seq/s, "
                  f"ratio {r['onnx_over_torch']:.2f}x, parity {r['parity_max_abs_diff']:.1e}", flush=True)
        else:
            print(f"{r['model']:<8} batch {r['batch_s'] * 1000:7.1f} ms  epoch {r['epoch_s']:7.1f} s "
                  f"({r['batches_per_epoch']} batches)  eval {r['eval_s']:5.1f} s  peak RSS "
                  f"{r['peak_rss_mb']:6.0f} MB", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
