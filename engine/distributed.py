"""Data-parallel training primitives: how a global batch is cut into ranks' shards, the one cross-rank gather of
embeddings (with gradients) that in-batch objectives use, and the reductions the trainer needs.

The contract that makes ``--nproc N`` equal a 1-process run with the same global batch ``B``:

* every rank draws the *global* batch with the same generator as a single process (so augmentation and sampling
  draws are the same) and keeps its contiguous, near-equal slice of it (:meth:`Shard.bounds`);
* every loss a rank returns is its *share*: summed over ranks and divided by ``N`` it is the single-process loss
  of the global batch. A mean over the batch's rows becomes ``mean_local * N * b_local / B`` (:meth:`Shard.share`);
  an in-batch contrastive objective scores its local anchors against the candidates of every rank
  (:func:`gather_rows`) and returns ``sum_local * N / B``; a term that does not depend on the batch (a weight
  penalty) is left as it is;
* gradients are averaged over ranks (:func:`average_gradients`), which then equal the single-process gradient.

A global batch with fewer rows than ranks (a ragged last batch) is computed whole by every rank, with no gathering
(:meth:`Shard.for_rows`): the averaged gradient is then the single-process one too.

Nothing here is active in a single process: :func:`gather_rows` returns its input, the reductions return theirs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import torch

__all__ = ["Shard", "ShardedBatch", "active", "average_gradients", "broadcast_object", "gather_rows",
           "is_distributed", "local_view", "process_shard", "reduce_epoch_sums", "rows_of", "sharding", "slice_rows"]


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


@dataclass(frozen=True)
class Shard:
    """Rank ``rank`` of ``world``: which rows of a global batch it keeps and how it weights their losses."""

    rank: int = 0
    world: int = 1

    def bounds(self, n: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of ``n``: contiguous, sizes differing by one at most, larger ones first."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)

    def for_rows(self, n: int) -> "Shard":
        """The shard that cuts a global batch of ``n`` rows: this one, or, with fewer rows than ranks, the whole
        batch on every rank (``Shard(0, 1)``: nothing gathered, every rank computes the single-process loss)."""
        return self if n >= self.world else Shard()

    def take(self, x, n: int | None = None):
        """This shard's rows of ``x`` (a tensor or an array whose first dimension is the global batch)."""
        start, stop = self.bounds(x.shape[0] if n is None else n)
        return x[start:stop]

    def share(self, local_mean, n_local: int, n_global: int):
        """This rank's share of a mean over ``n_global`` rows, given the mean over its ``n_local`` rows."""
        if self.world == 1 and n_local == n_global:
            return local_mean
        return local_mean * (self.world * n_local / n_global)


class ShardedBatch(NamedTuple):
    """What :meth:`engine.task.Task.shard_batch` returns: this rank's rows and how they sit in the global batch.

    Args:
        batch: the local batch, in the task's own batch type.
        shard: the shard that cut it (``Shard(0, 1)`` when every rank computes the whole batch).
        totals: the global counts the task normalises by (``{"rows": B, ...}``).
        weight: when set, the trainer multiplies the task's losses by it (the task's loss is a plain mean over the
            local rows); when None, the task's ``training_step`` reads ``totals`` and returns shares itself.
    """

    batch: Any
    shard: Shard
    totals: dict[str, int]
    weight: float | None = None


def local_view(batch: Any, total: str) -> tuple[Any, Callable[[Any, int], Any], dict[str, int] | None]:
    """What a task's ``training_step`` works on: ``(rows, share, totals)``.

    For a :class:`ShardedBatch` (a data-parallel run): its local rows, ``share(mean, n_local)`` turning a mean over
    ``n_local`` of them into this rank's share of the mean over the global batch's ``totals[total]``
    (:meth:`Shard.share`), and its totals. For a plain batch (one process): the batch itself, the identity and
    None."""
    if not isinstance(batch, ShardedBatch):
        return batch, (lambda x, n_local: x), None
    shard, n_global = batch.shard, batch.totals[total]
    return batch.batch, (lambda x, n_local: shard.share(x, n_local, n_global)), batch.totals


def rows_of(batch: Any) -> int:
    """The number of rows of a batch: the first dimension of its first tensor or array."""
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return int(batch.shape[0])
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (tuple, list)) else ()
    for item in items:
        if item is not None and not isinstance(item, (str, bytes, int, float)):
            try:
                return rows_of(item)
            except TypeError:
                continue
    raise TypeError(f"cannot tell the rows of a batch of type {type(batch).__name__}")


def slice_rows(batch: Any, bounds: tuple[int, int], n: int) -> Any:
    """``batch`` with rows ``bounds`` of every tensor or array whose first dimension is ``n``, recursively through
    tuples (named ones too), lists and dicts; anything else is kept whole."""
    start, stop = bounds
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return batch[start:stop] if batch.ndim and batch.shape[0] == n else batch
    if isinstance(batch, dict):
        return {k: slice_rows(v, bounds, n) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(slice_rows(v, bounds, n) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(slice_rows(v, bounds, n) for v in batch)
    return batch


def process_shard() -> Shard:
    """This process's shard: its rank and the world size (``Shard(0, 1)`` without a process group)."""
    if not is_distributed():
        return Shard()
    return Shard(torch.distributed.get_rank(), torch.distributed.get_world_size())


_ACTIVE: Shard | None = None


@contextlib.contextmanager
def sharding(shard: Shard | None) -> Iterator[None]:
    """Objectives called inside gather their candidates across ranks when ``shard`` spans more than one rank."""
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, shard if shard is not None and shard.world > 1 else None
    try:
        yield
    finally:
        _ACTIVE = previous


def active() -> Shard | None:
    """The shard of the batch being trained on when its rows are spread over ranks, else None."""
    return _ACTIVE


class _GatherRows(torch.autograd.Function):
    """All-gather of ranks' rows (sizes may differ) whose backward sums every rank's gradient into the owner's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, counts: list[int], rank: int) -> torch.Tensor:
        width = max(counts)
        padded = x.new_zeros((width, *x.shape[1:]))
        padded[: x.shape[0]] = x
        pieces = [torch.empty_like(padded) for _ in counts]
        torch.distributed.all_gather(pieces, padded)
        ctx.counts, ctx.rank = counts, rank
        return torch.cat([p[:c] for p, c in zip(pieces, counts)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        counts, width = ctx.counts, max(ctx.counts)
        padded = grad.new_zeros((len(counts), width, *grad.shape[1:]))
        for r, piece in enumerate(grad.split(counts)):
            padded[r, : counts[r]] = piece
        torch.distributed.all_reduce(padded)
        return padded[ctx.rank, : counts[ctx.rank]].clone(), None, None


def gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Every rank's rows of ``x`` concatenated in rank order, differentiable (open_clip's ``gather_features`` with
    ``gather_with_grad``): ``(x_all, offset, total)``, ``offset`` being where this rank's rows start in ``x_all``.

    Outside :func:`sharding` (one process, or a batch computed whole by every rank) it returns ``(x, 0, len(x))``.
    The backward of ``x_all`` sums the gradients of all ranks into the rank that owns each row, so a loss of the
    local anchors against ``x_all`` on each rank, averaged over ranks with the gradients, is the loss of the
    global batch. Every rank must call it the same number of times, in the same order.
    """
    shard = _ACTIVE
    if shard is None:
        return x, 0, int(x.shape[0])
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(shard.world)]
    torch.distributed.all_gather(sizes, n)
    counts = [int(s) for s in sizes]
    out = _GatherRows.apply(x.contiguous(), counts, shard.rank)
    return out, sum(counts[: shard.rank]), sum(counts)


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over ranks in one all-reduce. A parameter no rank gave a gradient keeps
    ``grad = None`` (as in a single process, where optimisers then skip it); one that some rank did not reach
    counts as a zero gradient there."""
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    device = params[0].device
    dtype = torch.float32
    for p in params:
        dtype = torch.promote_types(dtype, p.dtype)
    flat = torch.cat([torch.zeros(p.numel(), device=device, dtype=dtype) if p.grad is None
                      else p.grad.detach().reshape(-1).to(dtype) for p in params]
                     + [torch.tensor([0.0 if p.grad is None else 1.0 for p in params], device=device, dtype=dtype)])
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    used = flat[-len(params):]
    offset = 0
    for k, p in enumerate(params):
        n = p.numel()
        if used[k] > 0:
            grad = flat[offset: offset + n].view_as(p).to(p.dtype)
            if p.grad is None:
                p.grad = grad.clone()
            else:
                p.grad.copy_(grad)
        offset += n


def reduce_epoch_sums(sums: dict[str, float], counts: dict[str, int]) -> tuple[dict[str, float], dict[str, int]]:
    """Per-epoch loss sums of every rank's shares turned into the global batch's: summed over ranks, divided by
    the world size; the step counts are rank 0's (which always holds rows when any rank does)."""
    if not is_distributed():
        return sums, counts
    world = torch.distributed.get_world_size()
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, (sums, counts))
    keys = list(dict.fromkeys(k for s, _ in gathered for k in s))  # rank 0's order first
    total = {k: sum(s.get(k, 0.0) for s, _ in gathered) / world for k in keys}
    steps = {k: max(c.get(k, 0) for _, c in gathered) for k in keys}
    return total, steps


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (the value itself in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def check_objectives(model: torch.nn.Module, registry) -> None:
    """Raise a ConfigError naming the first registry objective in ``model`` that does not declare how it splits
    over ranks (class attribute ``data_parallel``: ``"rows"`` or ``"gather"``)."""
    from .errors import ConfigError

    objectives = tuple(e.cls for e in registry.entries("objective"))
    ok = sorted(e.name for e in registry.entries("objective") if getattr(e.cls, "data_parallel", None))
    for where, module in model.named_modules():
        if objectives and isinstance(module, objectives) and getattr(module, "data_parallel", None) is None:
            raise ConfigError(f"--nproc: objective {getattr(module, 'name', type(module).__name__)!r} (model.{where}) "
                              "does not split over ranks (its loss needs every rank's rows); use one that does "
                              f"({', '.join(ok) or 'none registered'}) or --nproc 1")
