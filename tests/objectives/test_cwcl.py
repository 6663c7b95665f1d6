import itertools
import math

import pytest
import torch
from pydantic import ValidationError

from engine_objectives import CWCL, InfoNCE


def normalized(x):
    return x / x.norm(dim=1, keepdim=True)


def reference_cwcl(anchor, positive, weights, tau, symmetric):
    """Slow and plain, in float64 on cosine similarities: per row, the w-weighted mean of -log softmax."""
    a, p, w = normalized(anchor.double()), normalized(positive.double()), weights.double()
    b = a.shape[0]

    def one_way(x, y, w):
        loss = 0.0
        for i in range(b):
            denominator = sum(math.exp(float(x[i] @ y[k]) / tau) for k in range(b))
            row = sum(float(w[i, j]) * math.log(math.exp(float(x[i] @ y[j]) / tau) / denominator) for j in range(b))
            loss += -row / float(w[i].sum())
        return loss / b

    return (one_way(a, p, w) + one_way(p, a, w.T)) / 2 if symmetric else one_way(a, p, w)


@pytest.mark.parametrize("batch_size,tau,symmetric,source", list(itertools.product(
    [1, 4, 7], [0.1, 1.0], [False, True], ["anchor", "positive"])))
def test_cwcl_matches_reference_with_default_weights(batch_size, tau, symmetric, source):
    anchor, positive = torch.randn(batch_size, 5), torch.randn(batch_size, 5)
    x = normalized((anchor if source == "anchor" else positive).double())
    weights = torch.tensor([[(1 + float(x[i] @ x[j])) / 2 for j in range(batch_size)] for i in range(batch_size)],
                           dtype=torch.float64)
    expected = reference_cwcl(anchor, positive, weights, tau, symmetric)
    loss_fn = CWCL(temperature=tau, symmetric=symmetric, weight_source=source)
    out = loss_fn(anchor.double(), positive.double())
    assert out.parts == {"cwcl": out.loss}
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)


def test_cwcl_explicit_weights_and_identity_is_infonce():
    anchor, positive = torch.randn(5, 3).double(), torch.randn(5, 3).double()
    weights = torch.rand(5, 5).double()
    expected = reference_cwcl(anchor, positive, weights, 0.5, True)
    assert CWCL(temperature=0.5, symmetric=True)(anchor, positive, weights).loss.item() == pytest.approx(expected)
    eye = torch.eye(5, dtype=torch.float64)
    for symmetric in (False, True):
        infonce = InfoNCE(temperature=0.5, symmetric=symmetric)(anchor, positive).loss
        cwcl = CWCL(temperature=0.5, symmetric=symmetric)(anchor, positive, eye).loss
        assert torch.allclose(cwcl, infonce, rtol=1e-12)


def test_cwcl_hand_computed():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # tau 1: logits = I; default weights from the anchor: (1 + cos) / 2 = [[1, 0.5], [0.5, 1]]
    # row 0: log-softmax = [1 - log(e + 1), -log(e + 1)] = [-0.3132617, -1.3132617]
    #   -(1 * -0.3132617 + 0.5 * -1.3132617) / 1.5 = 0.6465950; row 1 the same by symmetry
    loss = CWCL(temperature=1.0)(anchor, positive).loss
    assert loss.item() == pytest.approx(0.6465950, abs=1e-6)


def test_cwcl_weights_carry_no_gradient_and_gradcheck():
    anchor = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    positive = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    loss_fn = CWCL(temperature=0.5, symmetric=True)
    weights = torch.rand(4, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, p: loss_fn(a, p, weights).loss, (anchor, positive), fast_mode=True)
    weights = loss_fn.get_ground_truth(anchor, positive)
    assert not weights.requires_grad and torch.allclose(weights.diagonal(), torch.ones(4, dtype=torch.float64))


def test_cwcl_config_and_bad_input():
    with pytest.raises(ValidationError):
        CWCL.Config(weight_source="both")
    with pytest.raises(ValidationError):
        CWCL.Config(temperature=0)
    loss_fn = CWCL()
    a, p = torch.randn(3, 4), torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"weights must be a float tensor \[3, 3\]"):
        loss_fn(a, p, torch.rand(3, 2))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        loss_fn(a, p, 2 * torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        loss_fn(a, p, torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="positive entry"):
        loss_fn(a, p, torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"\[3, 4\].*\[2, 4\]"):
        loss_fn(a, torch.randn(2, 4))
