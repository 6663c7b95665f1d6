"""Peak memory and time of dense vs tiled InfoNCE (forward + backward) on CPU, one thread.

Each (form, method, batch) runs in a fresh subprocess. The child imports torch, allocates the two ``[B, D]`` inputs,
runs a small warm-up (B = 256), then records its resident set size (``/proc/self/statm``) as the baseline and times
forward + backward of the full batch (best of up to ``--repeats`` runs while they fit in ``--budget`` seconds). The
memory column is the child's peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) minus that baseline: what the
loss itself needed. Dense runs that would need more than ``--max-dense-gb`` (estimated as three float32 B x B
matrices: logits, softmax and its gradient) are skipped and reported as such.

    .venv/bin/python benchmarks/infonce_memory.py --out out/infonce_memory.md

Goals (issue #5): the tiled loss at the largest batch within 1.5x the per-pair time (seconds / B^2) of dense at the
largest batch dense can run, and at least 10x less peak memory than dense at equal batch.
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


def rss_mib() -> float:
    """Current resident set size (Linux), in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def child(method: str, batch: int, dim: int, tile: int, symmetric: bool, repeats: int, budget: float) -> dict:
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins" / "objectives")]
    import torch

    from engine_objectives import InfoNCE, TiledInfoNCE

    torch.set_num_threads(1)
    torch.manual_seed(0)
    if method == "dense":
        loss_fn = InfoNCE(temperature=0.2, symmetric=symmetric)
    else:
        loss_fn = TiledInfoNCE(temperature=0.2, symmetric=symmetric, tile_size=tile)

    def step(a, p):
        a.grad = p.grad = None
        loss = loss_fn(a, p).loss
        loss.backward()
        return float(loss)

    small = [torch.randn(256, dim, requires_grad=True) for _ in range(2)]
    step(*small)  # warm-up: kernels, allocator, autograd machinery
    del small
    anchor = torch.randn(batch, dim, requires_grad=True)
    positive = torch.randn(batch, dim, requires_grad=True)
    baseline = rss_mib()
    times, loss = [], None
    start = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start + times[-1] <= budget):
        tic = time.perf_counter()
        loss = step(anchor, positive)
        times.append(time.perf_counter() - tic)
    return {"seconds": min(times), "runs": len(times), "loss": loss, "baseline_mib": baseline,
            "peak_above_baseline_mib": max(peak_rss_mib() - baseline, 0.0)}


def run_child(args, method: str, batch: int, symmetric: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--batch", str(batch), "--dim", str(args.dim),
           "--tile", str(args.tile), "--repeats", str(args.repeats), "--budget", str(args.budget)]
    if symmetric:
        cmd.append("--symmetric")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ENGINE_LOAD_PLUGINS": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["exit code %d" % proc.returncode])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--tile", type=int, default=512, help="tile_size of the tiled loss (its default)")
    parser.add_argument("--forms", nargs="+", choices=["one-sided", "symmetric"], default=["one-sided", "symmetric"])
    parser.add_argument("--max-dense-gb", type=float, default=12.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (best is reported)")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of repeats per configuration")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "infonce_memory.md")
    parser.add_argument("--child", choices=["dense", "tiled"], help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--symmetric", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child(args.child, args.batch, args.dim, args.tile, args.symmetric, args.repeats,
                               args.budget)))
        return

    lines = [
        f"# Dense vs tiled InfoNCE, forward + backward, D = {args.dim}, CPU, 1 thread",
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/infonce_memory.py', *sys.argv[1:]])}`",
        "",
        f"Tiled: `TiledInfoNCE(tile_size={args.tile})`; dense: `InfoNCE`. Memory: peak RSS of a fresh process minus "
        "its RSS after imports, warm-up and input allocation. Time: best of up to "
        f"{args.repeats} runs. torch {__import__('torch').__version__}.",
        "",
        "| form | method | B | loss | time (s) | ns / pair (time / B²) | peak memory above baseline (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    results: dict[tuple[str, str, int], dict] = {}
    for form in args.forms:
        for batch in args.batches:
            for method in ("dense", "tiled"):
                dense_gb = 3 * 4 * batch**2 / 1e9
                if method == "dense" and dense_gb > args.max_dense_gb:
                    res = {"skipped": f"skipped: needs ~{dense_gb:.0f} GB > {args.max_dense_gb:g} GB"}
                else:
                    res = run_child(args, method, batch, form == "symmetric")
                results[(form, method, batch)] = res
                if "seconds" in res:
                    row = (f"| {form} | {method} | {batch:,} | {res['loss']:.6f} | {res['seconds']:.3f} | "
                           f"{1e9 * res['seconds'] / batch**2:.3f} | {res['peak_above_baseline_mib']:.1f} |")
                else:
                    row = f"| {form} | {method} | {batch:,} | {res.get('skipped', res.get('error'))} | | | |"
                lines.append(row)
                print(row, flush=True)

    lines += ["", "## Goals", ""]
    for form in args.forms:
        dense_ok = [b for b in args.batches if "seconds" in results[(form, "dense", b)]]
        largest = max(args.batches)
        tiled_big = results[(form, "tiled", largest)]
        if dense_ok and "seconds" in tiled_big:
            b_d = max(dense_ok)
            dense = results[(form, "dense", b_d)]
            ratio = (tiled_big["seconds"] / largest**2) / (dense["seconds"] / b_d**2)
            lines.append(f"- {form}: per-pair time of tiled at B = {largest:,} / dense at B = {b_d:,} (the largest "
                         f"dense can run) = {ratio:.2f}x (goal <= 1.5x): {'met' if ratio <= 1.5 else 'NOT met'}")
        for b in dense_ok:
            d, t = results[(form, "dense", b)], results[(form, "tiled", b)]
            if "peak_above_baseline_mib" in t:
                ratio = d["peak_above_baseline_mib"] / max(t["peak_above_baseline_mib"], 1e-3)
                lines.append(f"- {form}: peak memory dense / tiled at B = {b:,}: {d['peak_above_baseline_mib']:.1f} "
                             f"/ {t['peak_above_baseline_mib']:.1f} MiB = {ratio:.1f}x (goal >= 10x): "
                             f"{'met' if ratio >= 10 else 'NOT met'}")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
