"""Functions the data-parallel tests run in worker processes (importable by module name, as spawn needs)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def gathered_infonce(options: dict, anchor: torch.Tensor, positive: torch.Tensor):
    """Each rank's share of InfoNCE over its rows of the global batch (and its rows' gradients); rank 0 returns the
    mean loss over ranks, the averaged gradients of both inputs and of the temperature, and the local row counts."""
    from engine.distributed import Shard, average_gradients, process_shard, sharding
    from engine_objectives import InfoNCE

    shard = process_shard()
    torch.manual_seed(0)
    objective = InfoNCE(**options).double()
    a = anchor.clone().requires_grad_(True)
    p = positive.clone().requires_grad_(True)
    with sharding(shard):
        loss = objective(shard.take(a), shard.take(p)).loss
    loss.backward()
    params = [a, p, *objective.parameters()]
    average_gradients(params)
    total = loss.detach().clone()
    dist.all_reduce(total)
    counts = [torch.zeros(1) for _ in range(shard.world)]
    dist.all_gather(counts, torch.tensor([float(shard.take(a).shape[0])]))
    assert isinstance(shard, Shard)
    return {"loss": float(total) / shard.world, "grads": [None if t.grad is None else t.grad.clone() for t in params],
            "counts": [int(c) for c in counts]}


def run_float64(cfg, metrics_out=None, resume=False, track=False):
    """One rank of ``engine run`` (``engine.run._run``) with float64 as torch's default dtype, so that a 1-rank and a
    2-rank run differ by summation order at 1e-15, not float32's 1e-7 amplified by hundreds of Adam steps. Returns
    rank 0's outcome and the best weights."""
    from engine.run import _run, checkpoint_dir
    from engine.train import load_checkpoint

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        outcome = _run(cfg, metrics_out, resume, track)
    finally:
        torch.set_default_dtype(previous)
    if outcome is None:
        return None
    return outcome, load_checkpoint(checkpoint_dir(cfg) / "best.pt")["model"]


def first_step_float32(cfg):
    """The weights after one epoch (float32, the shipped dtype) of ``engine.run._run``, read from ``last.pt``."""
    from engine.run import _run, checkpoint_dir
    from engine.train import load_checkpoint

    _run(cfg, None, False, False)
    if dist.is_initialized() and dist.get_rank() != 0:
        return None
    return load_checkpoint(checkpoint_dir(cfg) / "last.pt")["model"]


def fail_on_rank_1(kind: str):
    """Rank 1 fails (a user error or a bug) while rank 0 waits for it in a collective."""
    from engine.errors import DataError

    if dist.get_rank() == 1:
        if kind == "user":
            raise DataError("data/x.csv: rank 1 cannot read it")
        raise ValueError("a bug on rank 1")
    dist.barrier()
    return "rank 0 should have been stopped"
