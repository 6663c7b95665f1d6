"""Next-item losses against naive float64 loops, and the negative sampler's distribution."""

from __future__ import annotations

import collections
import math

import pytest
import torch

from engine_seqrec.losses import LOSSES, BinaryCrossEntropyLoss, BPRLoss, CrossEntropyLoss, sample_negatives

NUM_ITEMS, D = 9, 4


def inputs(n=7, k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, D, generator=gen, dtype=torch.float64)
    items = torch.randn(NUM_ITEMS + 1, D, generator=gen, dtype=torch.float64)
    targets = torch.randint(1, NUM_ITEMS + 1, (n,), generator=gen)
    negatives = sample_negatives(targets, NUM_ITEMS, k, gen)
    return hidden, items, targets, negatives


def dot(a, b) -> float:
    return float(sum(x * y for x, y in zip(a.tolist(), b.tolist())))


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def test_ce_is_softmax_over_items_without_padding():
    hidden, items, targets, _ = inputs()
    total = 0.0
    for h, t in zip(hidden, targets.tolist()):
        logits = [dot(h, items[i]) for i in range(1, NUM_ITEMS + 1)]  # row 0 (padding) is never a class
        top = max(logits)
        total += top + math.log(sum(math.exp(x - top) for x in logits)) - logits[t - 1]
    out = CrossEntropyLoss()(hidden, items, targets)
    assert out.loss.item() == pytest.approx(total / len(targets), rel=1e-12)
    assert set(out.parts) == {"ce"}
    # the padding row does not matter
    items2 = items.clone()
    items2[0] = 100.0
    assert CrossEntropyLoss()(hidden, items2, targets).loss.item() == pytest.approx(out.loss.item(), rel=1e-12)


@pytest.mark.parametrize("k", [1, 3])
def test_bce_and_bpr_against_loops(k):
    hidden, items, targets, negatives = inputs(k=k)
    bce = bpr = 0.0
    for h, t, negs in zip(hidden, targets.tolist(), negatives.tolist()):
        pos = dot(h, items[t])
        bce += -log_sigmoid(pos) - sum(log_sigmoid(-dot(h, items[j])) for j in negs)
        bpr += sum(-log_sigmoid(pos - dot(h, items[j])) for j in negs) / k
    n = len(targets)
    got_bce = BinaryCrossEntropyLoss()(hidden, items, targets, negatives)
    got_bpr = BPRLoss()(hidden, items, targets, negatives)
    assert got_bce.loss.item() == pytest.approx(bce / n, rel=1e-12) and set(got_bce.parts) == {"bce"}
    assert got_bpr.loss.item() == pytest.approx(bpr / n, rel=1e-12) and set(got_bpr.parts) == {"bpr"}


def test_losses_check_their_inputs():
    hidden, items, targets, negatives = inputs()
    with pytest.raises(ValueError, match="needs sampled negatives"):
        BPRLoss()(hidden, items, targets)
    with pytest.raises(ValueError, match="share D"):
        CrossEntropyLoss()(hidden[:, :2], items, targets)
    with pytest.raises(ValueError, match=r"targets must be \[N\]"):
        BinaryCrossEntropyLoss()(hidden, items, targets[:3], negatives)
    assert sorted(LOSSES) == ["bce", "bpr", "ce"]
    assert not LOSSES["ce"].needs_negatives and LOSSES["bce"].needs_negatives and LOSSES["bpr"].needs_negatives


def test_negatives_exclude_the_positive_and_are_uniform_over_the_rest():
    targets = torch.tensor([1, 5, 9] * 2000)
    gen = torch.Generator().manual_seed(3)
    negs = sample_negatives(targets, NUM_ITEMS, 2, gen)
    assert negs.shape == (6000, 2) and negs.dtype == torch.long
    assert int(negs.min()) >= 1 and int(negs.max()) <= NUM_ITEMS
    assert not (negs == targets.unsqueeze(1)).any()
    for t in (1, 5, 9):
        counts = collections.Counter(negs[targets == t].flatten().tolist())
        assert set(counts) == set(range(1, NUM_ITEMS + 1)) - {t}
        assert all(400 <= c <= 600 for c in counts.values())  # 4000 draws over 8 items: 500 each
    again = sample_negatives(targets, NUM_ITEMS, 2, torch.Generator().manual_seed(3))
    assert torch.equal(negs, again)
    with pytest.raises(ValueError, match="at least 2 items"):
        sample_negatives(torch.tensor([1]), 1, 1)
