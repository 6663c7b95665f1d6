"""Data-parallel primitives: shards, the cross-rank gathered InfoNCE against the dense one (2 gloo processes on
127.0.0.1, started and stopped by the test)."""

from __future__ import annotations

import pytest
import torch

from engine.distributed import Shard, ShardedBatch, rows_of, slice_rows


def test_shards_cover_the_batch_once_in_order():
    for n, world in [(7, 2), (8, 2), (5, 3), (2, 2), (1, 2)]:
        pieces = []
        for r in range(world):
            part = Shard(r, world).for_rows(n)
            start, stop = part.bounds(n)
            pieces.append((part.world, start, stop))
        if n >= world:
            assert [p[1] for p in pieces] == sorted(p[1] for p in pieces)
            assert sum(p[2] - p[1] for p in pieces) == n
            assert pieces[0][1] == 0 and pieces[-1][2] == n
            assert max(p[2] - p[1] for p in pieces) - min(p[2] - p[1] for p in pieces) <= 1
        else:  # fewer rows than ranks: every rank computes the whole batch
            assert pieces == [(1, 0, n)] * world


def test_share_weights_local_means_into_the_global_mean():
    x = torch.arange(7, dtype=torch.float64)
    shares = []
    for r in range(2):
        s = Shard(r, 2)
        local = s.take(x)
        shares.append(s.share(local.mean(), local.numel(), 7))
    assert torch.allclose(sum(shares) / 2, x.mean())
    assert Shard().share(x.mean(), 7, 7) is not None


def test_slice_rows_cuts_tensors_of_the_batch_size_only():
    batch = (torch.arange(6), {"b": torch.ones(6, 2), "k": torch.ones(3)}, None, [torch.zeros(6)])
    local = slice_rows(batch, (2, 5), 6)
    assert local[0].tolist() == [2, 3, 4]
    assert local[1]["b"].shape == (3, 2) and local[1]["k"].shape == (3,)
    assert local[2] is None and local[3][0].shape == (3,)
    assert rows_of(batch) == 6


def test_default_shard_batch_weights_by_rows():
    from engine.task import Task

    task = Task.__new__(Task)
    out = task.shard_batch((torch.arange(5), torch.arange(5) * 2), Shard(1, 2))
    assert isinstance(out, ShardedBatch)
    assert out.batch[0].tolist() == [3, 4] and out.batch[1].tolist() == [6, 8]
    assert out.weight == pytest.approx(2 * 2 / 5) and out.totals == {"rows": 5}


def dense_infonce(options, anchor, positive):
    from engine_objectives import InfoNCE

    torch.manual_seed(0)
    objective = InfoNCE(**options).double()
    a, p = anchor.clone().requires_grad_(True), positive.clone().requires_grad_(True)
    loss = objective(a, p).loss
    loss.backward()
    return float(loss.detach()), [a.grad, p.grad, *[q.grad for q in objective.parameters()]]


OPTIONS = [
    {"temperature": 0.2},
    {"temperature": 0.5, "symmetric": True},
    {"temperature": 0.3, "intra_view_negatives": True},
    {"temperature": 0.2, "learnable_temperature": True, "symmetric": True},
    {"temperature": 0.2, "projection_dim": 4, "projection_input_dim": 6, "intra_view_negatives": True},
]


@pytest.mark.timeout(180)
def test_gathered_infonce_equals_the_dense_one(objectives_plugin):
    """Loss and gradients (inputs, learnable temperature, projection head) of InfoNCE over a global batch of 7 rows
    split 4 + 3 over 2 gloo ranks equal the single-process InfoNCE on the 7 rows, in float64."""
    from engine.train.launch import launch

    from distributed_workers import gathered_infonce

    g = torch.Generator().manual_seed(3)
    anchor = torch.randn(7, 6, generator=g, dtype=torch.float64)
    positive = anchor + 0.3 * torch.randn(7, 6, generator=g, dtype=torch.float64)
    for options in OPTIONS:
        out = launch(2, "cpu", gathered_infonce, (options, anchor, positive))
        loss, grads = dense_infonce(options, anchor, positive)
        assert out["counts"] == [4, 3]
        assert out["loss"] == pytest.approx(loss, rel=1e-12, abs=1e-12), options
        assert len(out["grads"]) == len(grads)
        for got, want in zip(out["grads"], grads):
            assert torch.allclose(got, want, rtol=1e-10, atol=1e-12), options


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["user", "bug"])
def test_a_failing_rank_stops_the_others_and_its_error_is_the_runs(kind, capsys):
    import time

    from engine.train.launch import WorkerError, launch

    from distributed_workers import fail_on_rank_1

    tic = time.monotonic()
    with pytest.raises(WorkerError) as info:
        launch(2, "cpu", fail_on_rank_1, (kind,))
    assert time.monotonic() - tic < 60  # rank 0, blocked in a barrier, was stopped
    if kind == "user":
        assert str(info.value) == "data/x.csv: rank 1 cannot read it" and info.value.exit_code == 2
    else:
        assert info.value.exit_code == 1 and "rank 1 of 2 failed" in str(info.value)
        assert "ValueError: a bug on rank 1" in capsys.readouterr().err
