"""The ``seqrec`` task's full-ranking leave-one-out evaluation against a naive loop, with and without history
masking."""

from __future__ import annotations

import collections
import math

import pytest
import torch
import torch.nn.functional as F

from tests.seqrec.test_task import NUM_ITEMS, make_task


class BagEncoder(torch.nn.Module):
    """Scores = 10 x (count of each item in the history) + a deterministic per-sequence jitter, over one-hot items:
    history items rank first unless they are masked."""

    def __init__(self, num_items: int) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.num_items = num_items

    def encode(self, seqs):
        counts = F.one_hot(seqs, self.num_items + 1).sum(1).double()
        counts[:, 0] = 0
        key = (seqs.double() * torch.arange(1, seqs.shape[1] + 1).flip(0)).sum(1, keepdim=True)
        jitter = torch.sin(key * 0.37 + torch.arange(self.num_items + 1) * 1.3)
        return 10 * counts + jitter

    def item_embeddings(self):
        return torch.eye(self.num_items + 1, dtype=torch.float64)


def naive_leave_one_out(encode, seqs, split, ks, max_len, mask_history=True) -> dict[str, float]:
    sums = collections.defaultdict(float)
    for s in seqs:
        history, target = (s[:-2], s[-2]) if split == "valid" else (s[:-1], s[-1])
        scores = encode(torch.tensor([history[-max_len:]]))[0].tolist()
        excluded = {0} | (set(history) if mask_history else set())
        ranked = sorted((i for i in range(NUM_ITEMS + 1) if i not in excluded), key=lambda i: -scores[i])
        rank = ranked.index(target) if target in ranked else None
        for k in ks:
            hit = rank is not None and rank < k
            sums[f"hr@{k}"] += float(hit)
            sums[f"ndcg@{k}"] += 1 / math.log2(rank + 2) if hit else 0.0
    return {k: v / len(seqs) for k, v in sums.items()}


@pytest.mark.parametrize("mask_history", [True, False])
def test_evaluate_matches_a_naive_loop(tmp_path, seqrec_plugins, mask_history):
    task, net, seqs = make_task(tmp_path, {"mask_history": mask_history})
    net.encoder = BagEncoder(NUM_ITEMS)
    ks = [1, 3, 5]
    for split in ("valid", "test"):
        got = task.evaluate(net, split)
        want = naive_leave_one_out(net.encoder.encode, seqs, split, ks, 8, mask_history)
        assert set(got) == set(want)
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-12), (split, key)
    if mask_history:  # masking matters here: history items score >= 10
        assert want != naive_leave_one_out(net.encoder.encode, seqs, "test", ks, 8, mask_history=False)
    assert net.training  # evaluate restores the mode


def test_evaluate_a_real_encoder_against_a_loop(tmp_path, seqrec_plugins):
    task, net, seqs = make_task(tmp_path)
    net.eval()
    with torch.no_grad():
        want = naive_leave_one_out(lambda s: net.encoder.encode(s) @ net.encoder.item_embeddings().T, seqs, "test",
                                   [1, 3, 5], 8)
    got = task.evaluate(net, "test")
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
