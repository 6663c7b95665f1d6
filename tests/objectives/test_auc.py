import itertools
import math

import pytest
import torch
from pydantic import ValidationError

from engine_objectives import BPR, AUCLoss


def surrogate(kind, m, margin):
    if kind == "logistic":
        return math.log(1 + math.exp(-m))
    if kind == "sigmoid":
        return 1 / (1 + math.exp(m))
    if kind == "hinge":
        return max(0.0, margin - m)
    return (margin - m) ** 2


def reference_auc(anchor, positive, negatives, kind, margin, tau):
    """Slow and plain, in float64 (dot products): the surrogate of every (positive, negative) margin, averaged."""
    a, p = anchor.double(), positive.double()
    b = a.shape[0]
    losses, wins = [], []
    for i in range(b):
        pos = float(a[i] @ p[i])
        if negatives is None:
            negs = [float(a[i] @ p[j]) for j in range(b) if j != i]
        else:
            n = negatives.double()
            n = n[i : i + 1] if n.dim() == 2 else n[i]
            negs = [float(a[i] @ x) for x in n]
        for neg in negs:
            losses.append(surrogate(kind, (pos - neg) / tau, margin))
            wins.append(1.0 if pos > neg else 0.5 if pos == neg else 0.0)
    return sum(losses) / len(losses), sum(wins) / len(wins)


@pytest.mark.parametrize("kind,negs,tau", list(itertools.product(["logistic", "sigmoid", "hinge", "squared"],
                                                                  [None, "one", "many"], [0.5, 1.0])))
def test_auc_matches_reference(kind, negs, tau):
    anchor, positive = torch.randn(5, 3), torch.randn(5, 3)
    negatives = None if negs is None else torch.randn(5, 3) if negs == "one" else torch.randn(5, 4, 3)
    expected, auc = reference_auc(anchor, positive, negatives, kind, 0.7, tau)
    loss_fn = AUCLoss(surrogate=kind, margin=0.7, temperature=tau)
    out = loss_fn(anchor.double(), positive.double(), None if negatives is None else negatives.double())
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)
    assert out.parts["auc"] is out.loss and out.parts["mann_whitney_auc"].item() == pytest.approx(auc)


def test_auc_hand_computed():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([[2.0, 0.0], [0.0, -1.0]])
    # scores: x+ = [2, -1]; in-batch negatives: row 0 <a0, p1> = 0, row 1 <a1, p0> = 0
    # margins 2 and -1; logistic: log(1 + e^-2) + log(1 + e^1) = 0.1269280 + 1.3132617 -> mean 0.7200948
    # hinge (margin 1): max(0, 1 - 2) + max(0, 1 + 1) = 2 -> mean 1;  AUC: 1 win of 2 pairs = 0.5
    out = AUCLoss()(anchor, positive)
    assert out.loss.item() == pytest.approx(0.7200948, abs=1e-6)
    assert out.parts["mann_whitney_auc"].item() == 0.5
    assert AUCLoss(surrogate="hinge")(anchor, positive).loss.item() == pytest.approx(1.0)


def test_auc_logistic_with_sampled_negatives_is_bpr():
    user, pos, neg = torch.randn(6, 4), torch.randn(6, 4), torch.randn(6, 3, 4)
    assert torch.allclose(AUCLoss()(user, pos, neg).loss, BPR()(user, pos, neg).loss)


@pytest.mark.parametrize("kind", ["logistic", "sigmoid", "squared"])
def test_auc_gradcheck(kind):
    anchor = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    positive = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    loss_fn = AUCLoss(surrogate=kind, normalize=True, temperature=0.5)
    assert torch.autograd.gradcheck(lambda a, p: loss_fn(a, p).loss, (anchor, positive))


def test_auc_config_and_bad_input():
    for bad in ({"surrogate": "exp"}, {"margin": -1}, {"temperature": 0}):
        with pytest.raises(ValidationError):
            AUCLoss.Config(**bad)
    with pytest.raises(ValueError, match="at least 2 rows"):
        AUCLoss()(torch.randn(1, 3), torch.randn(1, 3))
    assert torch.isfinite(AUCLoss()(torch.randn(1, 3), torch.randn(1, 3), torch.randn(1, 3)).loss)
    with pytest.raises(ValueError, match=r"negatives must be a float tensor \[2, 3\] or \[2, N, 3\]"):
        AUCLoss()(torch.randn(2, 3), torch.randn(2, 3), torch.randn(3, 3))
    with pytest.raises(ValueError, match="negatives .* NaN"):
        AUCLoss()(torch.randn(2, 3), torch.randn(2, 3), torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match=r"\[3, 4\].*\[3, 5\]"):
        AUCLoss()(torch.randn(3, 4), torch.randn(3, 5))
