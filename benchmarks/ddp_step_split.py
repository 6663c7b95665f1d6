"""What one rank of a data-parallel graph CL step costs, in one process (BENCHMARKS.md, "Data-parallel training").

A graph encoder propagates the whole graph whatever the batch, so a rank of ``--nproc N`` still runs the full
propagation and only the batch's losses are split. This times, at one torch thread, ``--steps`` training steps
(forward + backward, after a warm-up step) of the pipeline at the global batch and at the global batch / N, and
the propagation alone (forward + backward of the encoder's output sum), and the gradient all-reduce of the model's
parameters between ``--nproc`` gloo ranks on 127.0.0.1, so the per-rank step with dedicated cores can be estimated
as the step at B / N plus the all-reduce.

    .venv/bin/python benchmarks/ddp_step_split.py pipelines/xsimgcl-gowalla.yaml --steps 8 --nproc 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def _allreduce_ms(numel: int, repeats: int) -> float:
    """Median ms of one all-reduce of ``numel`` float32 (what ``average_gradients`` sends) on this rank."""
    import torch.distributed as dist

    flat = torch.ones(numel)
    dist.all_reduce(flat)
    times = []
    for _ in range(repeats):
        dist.barrier()
        tic = time.perf_counter()
        dist.all_reduce(flat)
        times.append((time.perf_counter() - tic) * 1000)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="alternate the timings this many times; medians")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from engine.config import load_pipeline
    from engine.plugins import load_plugins
    from engine.run import prepare

    load_plugins()
    cfg = load_pipeline(args.pipeline, [])
    task, model = prepare(cfg)
    generator = torch.Generator().manual_seed(0)
    task.on_epoch_start(model, 1, generator)
    batches = task.train_batches(1, generator)
    out: dict[str, float] = {}

    def timed(fn) -> float:
        fn()  # warm-up
        tic = time.perf_counter()
        for _ in range(args.steps):
            fn()
        return (time.perf_counter() - tic) / args.steps * 1000

    batch = next(batches)
    b = cfg.train.batch_size
    half = tuple(t[: b // args.nproc] for t in batch)

    def step(x):
        def run():
            model.zero_grad(set_to_none=True)
            task.training_step(model, x).loss.backward()
        return run

    def propagation():
        model.zero_grad(set_to_none=True)
        enc = task._encode(model)
        (enc.users.sum() + enc.items.sum()).backward()

    runs: dict[str, list[float]] = {f"step_ms_batch_{b}": [], f"step_ms_batch_{b // args.nproc}": [],
                                    "propagation_ms": []}
    for _ in range(args.repeats):  # alternated, so that load from other processes hits each alike
        for (key, values), fn in zip(runs.items(), (step(batch), step(half), propagation)):
            values.append(timed(fn))
    for key, values in runs.items():
        out[key] = sorted(values)[len(values) // 2]
        out[key + "_all"] = [round(v, 1) for v in values]
    params = sum(p.numel() for p in model.parameters())
    out["parameters"] = params
    from engine.train.launch import launch

    out["allreduce_ms"] = launch(args.nproc, "cpu", _allreduce_ms, (params + len(list(model.parameters())), 10))
    out["threads"] = args.threads
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
