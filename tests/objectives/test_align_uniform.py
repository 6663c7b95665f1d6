import math

import pytest
import torch
from pydantic import ValidationError

from engine.evaluate import alignment, uniformity
from engine_objectives import AlignUniform, alignment_loss, uniformity_loss


def normalized(x):
    return x / x.norm(dim=1, keepdim=True)


def reference(anchor, positive, alpha, t):
    """Slow and plain, in float64: mean ||a_i - p_i||^alpha; log of the mean Gaussian potential over pairs i < j."""
    a, p = normalized(anchor.double()), normalized(positive.double())
    b = a.shape[0]
    align = sum(float((a[i] - p[i]).norm()) ** alpha for i in range(b)) / b

    def uniform(x):
        pairs = [math.exp(-t * float((x[i] - x[j]).norm()) ** 2) for i in range(b) for j in range(i + 1, b)]
        return math.log(sum(pairs) / len(pairs))

    return align, (uniform(a) + uniform(p)) / 2


@pytest.mark.parametrize("batch_size,alpha,t", [(2, 2.0, 2.0), (5, 1.0, 1.0), (8, 2.0, 0.5), (3, 3.0, 2.0)])
def test_align_uniform_matches_reference(batch_size, alpha, t):
    anchor, positive = torch.randn(batch_size, 4), torch.randn(batch_size, 4)
    align, uniform = reference(anchor, positive, alpha, t)
    out = AlignUniform(alpha=alpha, t=t, align_weight=0.3, uniform_weight=2.0)(anchor.double(), positive.double())
    assert out.parts["align"].item() == pytest.approx(align, rel=1e-10)
    assert out.parts["uniform"].item() == pytest.approx(uniform, rel=1e-10)
    assert out.loss.item() == pytest.approx(0.3 * align + 2.0 * uniform, rel=1e-10)


def test_align_uniform_agrees_with_the_evaluation_metrics():
    x, y = torch.randn(50, 8), torch.randn(50, 8)
    assert alignment_loss(x, y).item() == pytest.approx(alignment(x, y), rel=1e-5)
    assert uniformity_loss(x).item() == pytest.approx(uniformity(x), rel=1e-5)


def test_align_uniform_hand_computed():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    # align: ||a0 - p0||^2 = 0, ||a1 - p1||^2 = 1 + 1 = 2 -> mean 1
    # uniform, t = 2: anchor pair distance^2 = 2 -> log e^-4 = -4; positive pair (antipodal) distance^2 = 4 -> -8
    # mean -6; loss = 1 - 6 = -5
    out = AlignUniform()(anchor, positive)
    assert out.parts["align"].item() == pytest.approx(1.0) and out.parts["uniform"].item() == pytest.approx(-6.0)
    assert out.loss.item() == pytest.approx(-5.0)


def test_align_uniform_gradcheck_and_metric_only_use():
    anchor = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    positive = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    loss_fn = AlignUniform(alpha=1.5)
    assert torch.autograd.gradcheck(lambda a, p: loss_fn(a, p).loss, (anchor, positive), fast_mode=True)
    # coinciding rows: the inner-product form keeps the uniformity gradient finite
    same = torch.ones(3, 2, requires_grad=True)
    uniformity_loss(same).backward()
    assert torch.isfinite(same.grad).all()
    out = AlignUniform(align_weight=0.0, uniform_weight=0.0)(anchor, positive)
    assert out.loss.item() == 0.0 and out.parts["align"].item() > 0


def test_align_uniform_config_and_bad_input():
    for bad in ({"alpha": 0}, {"t": -1}, {"align_weight": -0.1}, {"lam": 1}):
        with pytest.raises(ValidationError):
            AlignUniform.Config(**bad)
    with pytest.raises(ValueError, match="at least 2 rows"):
        AlignUniform()(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        uniformity_loss(torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"\[3, 4\].*\[2, 4\]"):
        AlignUniform()(torch.randn(3, 4), torch.randn(2, 4))
