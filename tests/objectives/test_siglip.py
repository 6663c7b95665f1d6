import itertools
import math

import pytest
import torch
from pydantic import ValidationError

from engine_objectives import SigLIP


def reference_siglip(anchor, positive, scale, bias, normalize):
    """Slow and plain, in float64: sum over all (i, j) of -log sigmoid(z_ij (scale * s_ij + bias)), divided by B."""
    a, p = anchor.double(), positive.double()
    if normalize:
        a = a / a.norm(dim=1, keepdim=True)
        p = p / p.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(a.shape[0]):
        for j in range(p.shape[0]):
            z = 1.0 if i == j else -1.0
            logit = scale * (a[i] @ p[j]) + bias
            total = total + math.log(1 + math.exp(-z * float(logit)))
    return total / a.shape[0]


@pytest.mark.parametrize(
    "batch_size,tau,bias,normalize", list(itertools.product([1, 3, 6], [0.1, 1.0], [-10.0, 0.0], [True, False]))
)
def test_siglip_matches_reference(batch_size, tau, bias, normalize):
    anchor, positive = torch.randn(batch_size, 5) / 2, torch.randn(batch_size, 5) / 2
    loss_fn = SigLIP(temperature=tau, bias=bias, normalize=normalize).double()
    scale = float(loss_fn.log_scale.detach().exp())
    expected = reference_siglip(anchor, positive, scale, float(loss_fn.bias.detach()), normalize)
    out = loss_fn(anchor.double(), positive.double())
    assert out.parts == {"siglip": out.loss}
    assert out.loss.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_siglip_hand_computed():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    # tau 1, bias 0, dot product: logits = [[1, 0], [0, 0]], labels z = [[1, -1], [-1, 1]]
    # (0,0): softplus(-1) = log(1 + e^-1) = 0.3132617; the other three: softplus(0) = log 2 = 0.6931472
    # sum = 0.3132617 + 3 * 0.6931472 = 2.3927033; divided by B = 2: 1.1963516
    loss = SigLIP(temperature=1.0, bias=0.0, normalize=False, learnable=False)(anchor, positive).loss
    assert loss.item() == pytest.approx(1.1963516, abs=1e-6)
    # bias -1: (0,0): softplus(-(1 - 1)) = log 2; (0,1), (1,0): softplus(-1) (z = -1, logit -1); (1,1): softplus(1)
    # = 0.6931472 + 2 * 0.3132617 + 1.3132617 = 2.6329323, / 2 = 1.3164662
    loss = SigLIP(temperature=1.0, bias=-1.0, normalize=False, learnable=False)(anchor, positive).loss
    assert loss.item() == pytest.approx(1.3164662, abs=1e-6)


def test_siglip_gradcheck_including_parameters():
    loss_fn = SigLIP(temperature=0.5, bias=-1.0).double()
    anchor = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    positive = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, p: loss_fn(a, p).loss, (anchor, positive))
    loss_fn(anchor, positive).loss.backward()
    assert {n for n, _ in loss_fn.named_parameters()} == {"log_scale", "bias"}
    assert loss_fn.bias.grad != 0 and loss_fn.log_scale.grad != 0


def test_siglip_symmetric_in_its_inputs_and_stable():
    anchor, positive = torch.randn(5, 4), torch.randn(5, 4)
    loss_fn = SigLIP()
    assert torch.allclose(loss_fn(anchor, positive).loss, loss_fn(positive, anchor).loss, atol=1e-6)
    big = SigLIP(temperature=1e-4, bias=0.0, normalize=False)(1e3 * anchor, 1e3 * positive).loss
    assert torch.isfinite(big)


def test_siglip_config_and_bad_input():
    assert SigLIP.Config().model_dump() == {"temperature": 0.1, "bias": -10.0, "learnable": True, "normalize": True}
    with pytest.raises(ValidationError):
        SigLIP.Config(temperature=0.0)
    with pytest.raises(ValidationError):
        SigLIP.Config(scale=10.0)
    fixed = SigLIP(learnable=False)
    assert list(fixed.parameters()) == [] and fixed.temperature == pytest.approx(0.1)
    assert SigLIP.from_config(SigLIP.Config(bias=-5.0)).get_config_dict()["bias"] == -5.0
    with pytest.raises(ValueError, match=r"\[3, 4\].*\[3, 5\]"):
        SigLIP()(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="NaN or inf"):
        SigLIP()(torch.randn(3, 4), torch.full((3, 4), float("inf")))
