import math

import pytest
import torch
from pydantic import ValidationError

from engine_objectives import InfoNCE, MixDraws, MoCHi


def normalized(x):
    return x / x.norm(dim=1, keepdim=True)


def reference_mochi(anchor, positive, negatives, draws, tau, num_hard):
    """Slow and plain, in float64: sort each row's negatives, mix the hardest as drawn, then one InfoNCE row."""
    q, k = normalized(anchor.double()), normalized(positive.double())
    bank = [] if negatives is None else list(normalized(negatives.double()))
    b = q.shape[0]
    total = 0.0
    for i in range(b):
        candidates = [k[j] for j in range(b) if j != i] + bank
        ranked = sorted(candidates, key=lambda n: float(q[i] @ n), reverse=True)[:num_hard]
        synthetic = []
        for s in range(draws.alpha.shape[1]):
            alpha = float(draws.alpha[i, s])
            h = alpha * ranked[int(draws.pair_a[i, s])] + (1 - alpha) * ranked[int(draws.pair_b[i, s])]
            synthetic.append(h / h.norm())
        for s in range(draws.beta.shape[1]):
            beta = float(draws.beta[i, s])
            h = beta * q[i] + (1 - beta) * ranked[int(draws.query_pair[i, s])]
            synthetic.append(h / h.norm())
        logits = [float(q[i] @ k[i]) / tau] + [float(q[i] @ n) / tau for n in candidates + synthetic]
        total += -logits[0] + math.log(sum(math.exp(x) for x in logits))
    return total / b


@pytest.mark.parametrize("batch_size,num_bank,num_hard", [(5, 0, 3), (6, 4, 20), (1, 3, 2), (4, 0, 1)])
def test_mochi_matches_reference(batch_size, num_bank, num_hard):
    anchor, positive = torch.randn(batch_size, 4).double(), torch.randn(batch_size, 4).double()
    negatives = torch.randn(num_bank, 4).double() if num_bank else None
    loss_fn = MoCHi(temperature=0.3, num_hard=num_hard, num_mix=3, num_query_mix=2)
    available = min(num_hard, batch_size - 1 + num_bank)
    draws = loss_fn.draw(batch_size, available, torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = reference_mochi(anchor, positive, negatives, draws, 0.3, available)
    out = loss_fn(anchor, positive, negatives, draws=draws)
    assert out.parts == {"mochi": out.loss}
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)


def test_mochi_draws_ranges_and_generator():
    loss_fn = MoCHi(num_mix=50, num_query_mix=40)
    d1 = loss_fn.draw(3, 7, torch.Generator().manual_seed(0))
    d2 = loss_fn.draw(3, 7, torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(vars(d1).values(), vars(d2).values()))
    assert d1.pair_a.shape == (3, 50) and d1.beta.shape == (3, 40)
    assert 0 <= int(d1.pair_a.min()) and int(d1.pair_b.max()) < 7 and int(d1.query_pair.max()) < 7
    assert 0 < float(d1.alpha.min()) and float(d1.alpha.max()) < 1 and float(d1.beta.max()) < 0.5
    anchor, positive = torch.randn(3, 4), torch.randn(3, 4)
    a = loss_fn(anchor, positive, generator=torch.Generator().manual_seed(5)).loss
    b = loss_fn(anchor, positive, generator=torch.Generator().manual_seed(5)).loss
    assert torch.equal(a, b)


def test_mochi_without_mixing_is_infonce_and_mixing_only_adds_negatives():
    anchor, positive = torch.randn(6, 4).double(), torch.randn(6, 4).double()
    plain = InfoNCE(temperature=0.2)(anchor, positive).loss
    assert torch.allclose(MoCHi(temperature=0.2, num_mix=0, num_query_mix=0)(anchor, positive).loss, plain)
    assert MoCHi(temperature=0.2)(anchor, positive).loss > plain


def test_mochi_synthetic_negatives_carry_no_gradient_and_gradcheck():
    anchor = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    positive = torch.randn(4, 3, dtype=torch.float64)
    negatives = torch.randn(5, 3, dtype=torch.float64)
    # anchor-only gradcheck with negative-negative mixes only: the synthetic points then do not depend on the anchor
    # (the hard set is piecewise constant in it), so the stop-gradient is invisible to finite differences
    loss_fn = MoCHi(temperature=0.5, num_hard=4, num_mix=3, num_query_mix=0)
    draws = loss_fn.draw(4, 4, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: loss_fn(a, positive, negatives, draws=draws).loss, (anchor,))
    # with anchor mixes, the gradient is that of InfoNCE with the synthetic points held constant
    loss_fn = MoCHi(temperature=0.5, num_hard=4, num_mix=3, num_query_mix=2)
    draws = loss_fn.draw(4, 4, torch.Generator().manual_seed(0), dtype=torch.float64)
    grad = torch.autograd.grad(loss_fn(anchor, positive, negatives, draws=draws).loss, anchor)[0]
    q, k, n = normalized(anchor), normalized(positive), normalized(negatives)
    sim = torch.cat([(q @ k.T).masked_fill(torch.eye(4, dtype=torch.bool), -1e9), q @ n.T], dim=1)
    hard = torch.cat([k, n])[sim.detach().argsort(dim=1, descending=True)[:, :4]]
    synthetic = loss_fn.synthesize(q.detach(), hard, draws)
    assert not synthetic.requires_grad
    logits = torch.cat([(q * k).sum(1, keepdim=True), sim, torch.einsum("bd,bsd->bs", q, synthetic)], 1) / 0.5
    expected = torch.autograd.grad((torch.logsumexp(logits, 1) - logits[:, 0]).mean(), anchor)[0]
    assert torch.allclose(grad, expected, rtol=1e-10)


def test_mochi_config_and_bad_input():
    for bad in ({"num_hard": 0}, {"num_mix": -1}, {"temperature": 0}, {"queue": 10}):
        with pytest.raises(ValidationError):
            MoCHi.Config(**bad)
    with pytest.raises(ValueError, match=r"negatives must be a float tensor \[K, 4\]"):
        MoCHi()(torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 3))
    with pytest.raises(ValueError, match="negatives .* NaN"):
        MoCHi()(torch.randn(3, 4), torch.randn(3, 4), torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError, match=r"\[3, 4\].*\[2, 4\]"):
        MoCHi()(torch.randn(3, 4), torch.randn(2, 4))
    assert isinstance(MoCHi().draw(2, 3), MixDraws)
