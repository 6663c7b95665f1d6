import itertools
import math

import pytest
import torch
from pydantic import ValidationError

from engine_objectives import DebiasedInfoNCE, HardNegativeInfoNCE, InfoNCE


def normalized(x):
    return x / x.norm(dim=1, keepdim=True)


def reference_row(pos_sim, neg_sims, tau, beta, tau_plus):
    """The estimator as the papers' code writes it, in plain float64 arithmetic (exp, then the clamp)."""
    n = len(neg_sims)
    pos = math.exp(pos_sim / tau)
    neg = [math.exp(s / tau) for s in neg_sims]
    imp = [math.exp(beta * s / tau) for s in neg_sims]
    reweighted = sum(i * e for i, e in zip(imp, neg)) / (sum(imp) / n)
    ng = (-tau_plus * n * pos + reweighted) / (1 - tau_plus)
    ng = max(ng, n * math.exp(-1 / tau))
    return -math.log(pos / (pos + ng))


def reference(anchor, positive, tau, beta, tau_plus, symmetric, intra):
    a, p = normalized(anchor.double()), normalized(positive.double())
    b = a.shape[0]
    if intra:
        z = torch.cat([a, p])
        rows = []
        for r in range(2 * b):
            partner = (r + b) % (2 * b)
            negs = [float(z[r] @ z[k]) for k in range(2 * b) if k not in (r, partner)]
            rows.append(reference_row(float(z[r] @ z[partner]), negs, tau, beta, tau_plus))
        return sum(rows) / len(rows)

    def one_way(x, y):
        rows = [reference_row(float(x[i] @ y[i]), [float(x[i] @ y[j]) for j in range(b) if j != i], tau, beta,
                              tau_plus) for i in range(b)]
        return sum(rows) / b

    return (one_way(a, p) + one_way(p, a)) / 2 if symmetric else one_way(a, p)


CASES = list(itertools.product([2, 6], [0.2, 0.5], [0.0, 1.0], [0.0, 0.1, 0.3],
                               [(False, False), (True, False), (False, True)]))


@pytest.mark.parametrize("batch_size,tau,beta,tau_plus,form", CASES)
def test_hard_negative_matches_reference(batch_size, tau, beta, tau_plus, form):
    symmetric, intra = form
    anchor, positive = torch.randn(batch_size, 3), torch.randn(batch_size, 3)
    expected = reference(anchor, positive, tau, beta, tau_plus, symmetric, intra)
    out = HardNegativeInfoNCE(temperature=tau, beta=beta, tau_plus=tau_plus, symmetric=symmetric,
                              intra_view_negatives=intra)(anchor.double(), positive.double())
    assert out.parts == {"hard_negative_infonce": out.loss}
    assert out.loss.item() == pytest.approx(expected, rel=1e-9)
    if beta == 0.0:
        debiased = DebiasedInfoNCE(temperature=tau, tau_plus=tau_plus, symmetric=symmetric,
                                   intra_view_negatives=intra)(anchor.double(), positive.double())
        assert debiased.parts == {"debiased_infonce": debiased.loss}
        assert debiased.loss.item() == pytest.approx(expected, rel=1e-9)


def test_zero_beta_and_prior_is_infonce():
    anchor, positive = torch.randn(7, 4).double(), torch.randn(7, 4).double()
    for symmetric, intra in ((False, False), (True, False), (False, True)):
        plain = InfoNCE(temperature=0.3, symmetric=symmetric, intra_view_negatives=intra)(anchor, positive).loss
        ours = HardNegativeInfoNCE(temperature=0.3, beta=0.0, tau_plus=0.0, symmetric=symmetric,
                                   intra_view_negatives=intra)(anchor, positive).loss
        assert torch.allclose(ours, plain, rtol=1e-12)


def test_hard_negative_hand_computed_clamp():
    # B = 2, tau 1, identical rows: every similarity is 1, N = 1 negative per row, tau+ = 0.5, beta 0
    # numerator: (e - 0.5 * 1 * e) / (1 - 0.5) = e; clamp floor N e^-1 = 0.3679 is not active
    # loss = -log(e / (e + e)) = log 2 = 0.6931472
    x = torch.ones(2, 3)
    assert DebiasedInfoNCE(temperature=1.0, tau_plus=0.5)(x, x).loss.item() == pytest.approx(math.log(2), abs=1e-6)
    # tau+ = 0.9: (e - 0.9 e) / 0.1 = e as well (all similarities equal): still log 2
    assert DebiasedInfoNCE(temperature=1.0, tau_plus=0.9)(x, x).loss.item() == pytest.approx(math.log(2), abs=1e-6)
    # a = (1, 0), p = (1, 0), (0, 1) for row 2... row 0: pos 1, neg <a0, p1> = 0 -> e^0 = 1; tau+ 0.5:
    # (1 - 0.5 * e) / 0.5 < 0 -> clamped to N e^-1 = 0.3679; loss = log(1 + 0.3679 / e) = 0.1269280
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # row 1 is the same by symmetry, so the mean is 0.1269280 (= log(1 + e^-2))
    assert DebiasedInfoNCE(temperature=1.0, tau_plus=0.5)(a, a).loss.item() == pytest.approx(
        math.log(1 + math.exp(-2)), abs=1e-6)


def test_hard_negative_stable_at_small_temperature():
    # in float32, e^(3 s / tau) overflows at tau = 0.005; the log-space computation does not (float64 reference)
    anchor, positive = torch.randn(6, 4), torch.randn(6, 4)
    loss = HardNegativeInfoNCE(temperature=0.005, beta=2.0, tau_plus=0.1)(anchor, positive).loss
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(reference(anchor, positive, 0.005, 2.0, 0.1, False, False), rel=1e-4)


@pytest.mark.parametrize("beta,tau_plus,intra", [(0.0, 0.1, False), (1.0, 0.1, True), (2.0, 0.0, False)])
def test_hard_negative_gradcheck(beta, tau_plus, intra):
    anchor = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    positive = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss_fn = HardNegativeInfoNCE(temperature=0.5, beta=beta, tau_plus=tau_plus, intra_view_negatives=intra)
    assert torch.autograd.gradcheck(lambda a, p: loss_fn(a, p).loss, (anchor, positive))


def test_hard_negative_config_and_bad_input():
    for bad in ({"tau_plus": 1.0}, {"tau_plus": -0.1}, {"beta": -1}, {"temperature": 0}):
        with pytest.raises(ValidationError):
            HardNegativeInfoNCE.Config(**bad)
    with pytest.raises(ValidationError):
        DebiasedInfoNCE.Config(beta=1.0)
    assert "beta" not in DebiasedInfoNCE().get_config_dict()
    assert DebiasedInfoNCE.from_config(DebiasedInfoNCE.Config(tau_plus=0.2)).tau_plus == 0.2
    with pytest.raises(ValueError, match="at least 2 rows"):
        DebiasedInfoNCE()(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"\[3, 4\].*\[2, 4\]"):
        HardNegativeInfoNCE()(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        HardNegativeInfoNCE()(torch.randn(2, 4), torch.full((2, 4), float("inf")))
