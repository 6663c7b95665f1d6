import itertools
import math

import pytest
import torch
from pydantic import ValidationError

from engine_objectives import DCL


def normalized(x):
    return x / x.norm(dim=1, keepdim=True)


def reference_dcl(anchor, positive, tau, normalize, symmetric, intra, sigma):
    """Slow and plain, in float64: -w_i s_ii / tau + log sum over the negatives (never the positive)."""
    a, p = anchor.double(), positive.double()
    if normalize:
        a, p = normalized(a), normalized(p)
    b = a.shape[0]
    pos_sim = [float(a[i] @ p[i]) for i in range(b)]
    if sigma is None:
        w = [1.0] * b
    else:
        total = sum(math.exp(s / sigma) for s in pos_sim)
        w = [2 - b * math.exp(s / sigma) / total for s in pos_sim]
    if intra:
        z = torch.cat([a, p])
        loss = 0.0
        for r in range(2 * b):
            partner = (r + b) % (2 * b)
            neg = sum(math.exp(float(z[r] @ z[k]) / tau) for k in range(2 * b) if k not in (r, partner))
            loss += -w[r % b] * pos_sim[r % b] / tau + math.log(neg)
        return loss / (2 * b)

    def one_way(x, y):
        loss = 0.0
        for i in range(b):
            neg = sum(math.exp(float(x[i] @ y[j]) / tau) for j in range(b) if j != i)
            loss += -w[i] * float(x[i] @ y[i]) / tau + math.log(neg)
        return loss / b

    return (one_way(a, p) + one_way(p, a)) / 2 if symmetric else one_way(a, p)


CASES = list(itertools.product([2, 5], [0.1, 1.0], [True, False], [(False, False), (True, False), (False, True)],
                               [None, 0.5]))


@pytest.mark.parametrize("batch_size,tau,normalize,form,sigma", CASES)
def test_dcl_matches_reference(batch_size, tau, normalize, form, sigma):
    symmetric, intra = form
    anchor, positive = torch.randn(batch_size, 4) / 2, torch.randn(batch_size, 4) / 2
    expected = reference_dcl(anchor, positive, tau, normalize, symmetric, intra, sigma)
    loss_fn = DCL(temperature=tau, normalize=normalize, symmetric=symmetric, intra_view_negatives=intra,
                  weight_sigma=sigma)
    out = loss_fn(anchor.double(), positive.double())
    assert out.parts == {"dcl": out.loss}
    assert out.loss.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_dcl_hand_computed():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    # tau 1, dot: s = [[1, 0], [0, 0]]
    # row 0: -s_00 + log(e^{s_01}) = -1 + 0 = -1;  row 1: -s_11 + log(e^{s_10}) = 0 + 0 = 0;  mean = -0.5
    # (InfoNCE would give log(1 + e^-1) and log 2: the positive stays in its denominator)
    assert DCL(temperature=1.0, normalize=False)(anchor, positive).loss.item() == pytest.approx(-0.5, abs=1e-7)
    # columns: col 0: -1 + log(e^{s_10}) = -1; col 1: -0 + log(e^{s_01}) = 0 -> symmetric mean -0.5 as well
    loss = DCL(temperature=1.0, normalize=False, symmetric=True)(anchor, positive).loss
    assert loss.item() == pytest.approx(-0.5, abs=1e-7)
    # intra-view, rows z = a0 (1,0), a1 (0,1), p0 (1,0), p1 (0,0); negatives exclude self and partner:
    # a0: -1 + log(e^<a0,a1> + e^<a0,p1>) = -1 + log 2;  a1: -0 + log(e^0 + e^0) = log 2
    # p0: -1 + log(e^<p0,a1> + e^<p0,p1>) = -1 + log 2;  p1: log 2     mean = log 2 - 0.5 = 0.1931472
    loss = DCL(temperature=1.0, normalize=False, intra_view_negatives=True)(anchor, positive).loss
    assert loss.item() == pytest.approx(0.1931472, abs=1e-6)


@pytest.mark.parametrize("symmetric,intra,sigma", [(False, False, None), (True, False, 0.5), (False, True, 0.5)])
def test_dcl_gradcheck(symmetric, intra, sigma):
    anchor = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    positive = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss_fn = DCL(temperature=0.5, symmetric=symmetric, intra_view_negatives=intra, weight_sigma=sigma)
    assert torch.autograd.gradcheck(lambda a, p: loss_fn(a, p).loss, (anchor, positive))


def test_dcl_config_and_bad_input():
    assert DCL.Config().temperature == 0.1 and DCL.Config().weight_sigma is None
    for bad in ({"temperature": 0}, {"weight_sigma": 0.0}, {"sigma": 0.5}):
        with pytest.raises(ValidationError):
            DCL.Config(**bad)
    loss_fn = DCL.from_config(DCL.Config(learnable_temperature=True))
    assert [n for n, _ in loss_fn.named_parameters()] == ["log_temperature"]
    with pytest.raises(ValueError, match="at least 2 rows"):
        DCL()(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"\[3, 4\].*\[2, 4\]"):
        DCL()(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        DCL()(torch.full((2, 4), float("nan")), torch.randn(2, 4))
