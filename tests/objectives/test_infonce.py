import itertools
import math

import pytest
import torch
from pydantic import ValidationError

from engine.components import ObjectiveOutput
from engine_objectives import InfoNCE


def reference_infonce(anchor, positive, tau, normalize, symmetric):
    """Slow and plain, in float64: mean over rows of -log softmax of the positive's similarity."""
    a, p = anchor.double(), positive.double()
    if normalize:
        a = a / a.norm(dim=1, keepdim=True)
        p = p / p.norm(dim=1, keepdim=True)

    def one_way(x, y):
        total = 0.0
        for i in range(x.shape[0]):
            numerator = torch.exp(x[i] @ y[i] / tau)
            denominator = sum(torch.exp(x[i] @ y[j] / tau) for j in range(y.shape[0]))
            total = total - torch.log(numerator / denominator)
        return total / x.shape[0]

    loss = one_way(a, p)
    return (loss + one_way(p, a)) / 2 if symmetric else loss


@pytest.mark.parametrize(
    "batch_size,dim,tau,normalize,symmetric",
    list(itertools.product([1, 3, 8], [1, 4, 16], [0.05, 0.2, 1.0], [True, False], [False, True])),
)
def test_infonce_matches_reference(batch_size, dim, tau, normalize, symmetric):
    anchor, positive = torch.randn(batch_size, dim), torch.randn(batch_size, dim)
    if not normalize:  # keep exp() of the plain reference in range at tau=0.05
        anchor, positive = anchor / math.sqrt(dim), positive / math.sqrt(dim)
    expected = reference_infonce(anchor, positive, tau, normalize, symmetric)
    loss_fn = InfoNCE(temperature=tau, normalize=normalize, symmetric=symmetric)

    out = loss_fn(anchor.double(), positive.double())
    assert isinstance(out, ObjectiveOutput)
    assert out.loss.shape == () and out.parts == {"infonce": out.loss}
    assert torch.allclose(out.loss, expected, rtol=1e-10, atol=1e-12)
    assert torch.allclose(loss_fn(anchor, positive).loss.double(), expected, rtol=1e-4, atol=1e-5)


def test_infonce_hand_computed():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # row 1 normalises to (1/√2, 1/√2)
    # tau = 0.5: logits = [[2, √2], [0, √2]]
    # row 0: -log(e^2 / (e^2 + e^√2)) = log(1 + e^(√2 - 2)) = 0.4425471
    # row 1: -log(e^√2 / (e^0 + e^√2)) = log(1 + e^-√2)    = 0.2176222
    # mean = 0.3300847
    assert InfoNCE(temperature=0.5)(anchor, positive).loss.item() == pytest.approx(0.3300847, abs=1e-6)
    # positive -> anchor uses the columns: log(1 + e^-2) = 0.1269280 and log(2) = 0.6931472, mean 0.4100376;
    # symmetric = (0.3300847 + 0.4100376) / 2 = 0.3700611
    assert InfoNCE(temperature=0.5, symmetric=True)(anchor, positive).loss.item() == pytest.approx(
        0.3700611, abs=1e-6
    )


def test_infonce_named_steps():
    loss_fn = InfoNCE(temperature=0.5, normalize=False)
    anchor, positive = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.allclose(loss_fn.get_logits(anchor, positive), anchor @ positive.T / 0.5)
    assert loss_fn.get_ground_truth(4, "cpu").tolist() == [0, 1, 2, 3]


def test_infonce_joint_permutation_invariant():
    anchor, positive = torch.randn(6, 5), torch.randn(6, 5)
    perm = torch.randperm(6)
    loss_fn = InfoNCE(symmetric=True)
    assert torch.allclose(loss_fn(anchor, positive).loss, loss_fn(anchor[perm], positive[perm]).loss, atol=1e-6)


def test_infonce_stable_for_large_logits():
    anchor, positive = 1e4 * torch.randn(5, 3), 1e4 * torch.randn(5, 3)
    loss = InfoNCE(temperature=0.01, normalize=False)(anchor, positive).loss
    assert torch.isfinite(loss) and loss >= 0


@pytest.mark.parametrize("normalize,symmetric", list(itertools.product([True, False], [True, False])))
def test_infonce_gradcheck(normalize, symmetric):
    anchor = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    positive = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss_fn = InfoNCE(temperature=0.3, normalize=normalize, symmetric=symmetric)
    assert torch.autograd.gradcheck(lambda a, p: loss_fn(a, p).loss, (anchor, positive))


def test_infonce_learnable_temperature():
    loss_fn = InfoNCE(temperature=0.1, learnable_temperature=True)
    assert [name for name, _ in loss_fn.named_parameters()] == ["log_temperature"]
    assert loss_fn.temperature == pytest.approx(0.1)
    loss_fn(torch.randn(8, 4), torch.randn(8, 4)).loss.backward()
    grad = loss_fn.log_temperature.grad
    assert grad is not None and torch.isfinite(grad) and grad != 0

    fixed = InfoNCE(temperature=0.1)
    assert list(fixed.parameters()) == [] and fixed.temperature == 0.1


def test_infonce_config():
    assert InfoNCE.Config() == InfoNCE.Config(temperature=0.2, normalize=True, symmetric=False)
    with pytest.raises(ValidationError):
        InfoNCE.Config(temperature=0)
    with pytest.raises(ValidationError):
        InfoNCE.Config(tau=0.1)
    with pytest.raises(ValueError):
        InfoNCE(temperature=-1.0)
    loss_fn = InfoNCE.from_config(InfoNCE.Config(temperature=0.1, symmetric=True))
    assert loss_fn.get_config_dict() == {
        "temperature": 0.1,
        "normalize": True,
        "symmetric": True,
        "learnable_temperature": False,
        "intra_view_negatives": False,
    }


@pytest.mark.parametrize(
    "anchor,positive,match",
    [
        (torch.randn(3, 4), torch.randn(2, 4), r"\[3, 4\].*\[2, 4\]"),
        (torch.randn(3, 4), torch.randn(3, 5), r"\[3, 4\].*\[3, 5\]"),
        (torch.randn(4), torch.randn(4), r"\[B, D\], got shape \[4\]"),
        (torch.randn(2, 3, 4), torch.randn(2, 3, 4), r"\[B, D\], got shape \[2, 3, 4\]"),
        (torch.zeros(0, 4), torch.zeros(0, 4), r"empty batch"),
        (torch.tensor([[1.0, float("nan")]]), torch.ones(1, 2), r"anchor \[1, 2\] has NaN or inf"),
        (torch.ones(1, 2), torch.tensor([[float("inf"), 1.0]]), r"positive \[1, 2\] has NaN or inf"),
        (torch.ones(2, 2, dtype=torch.long), torch.ones(2, 2), r"float tensor"),
    ],
)
def test_infonce_bad_input(anchor, positive, match):
    with pytest.raises(ValueError, match=match):
        InfoNCE()(anchor, positive)


def reference_nt_xent(anchor, positive, tau, normalize):
    """SimCLR's NT-Xent in float64, one row at a time: the other view is the positive, every other row a negative."""
    z = torch.cat([anchor, positive]).double()
    if normalize:
        z = z / z.norm(dim=1, keepdim=True)
    n, b = z.shape[0], anchor.shape[0]
    total = 0.0
    for r in range(n):
        partner = (r + b) % n
        denominator = sum(torch.exp(z[r] @ z[k] / tau) for k in range(n) if k != r)
        total = total - torch.log(torch.exp(z[r] @ z[partner] / tau) / denominator)
    return total / n


@pytest.mark.parametrize("batch_size,tau,normalize", list(itertools.product([1, 2, 7], [0.1, 1.0], [True, False])))
def test_nt_xent_matches_reference(batch_size, tau, normalize):
    anchor, positive = torch.randn(batch_size, 6) / 2, torch.randn(batch_size, 6) / 2
    expected = reference_nt_xent(anchor, positive, tau, normalize)
    loss_fn = InfoNCE(temperature=tau, normalize=normalize, intra_view_negatives=True)
    assert torch.allclose(loss_fn(anchor.double(), positive.double()).loss, expected, rtol=1e-10, atol=1e-12)
    a, p = anchor.double().requires_grad_(), positive.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: loss_fn(x, y).loss, (a, p))


def test_nt_xent_hand_computed():
    # B = 1, dot product, tau 1: rows a = (1, 0), p = (0, 1); each row's only other row is its positive -> loss 0
    out = InfoNCE(temperature=1.0, normalize=False, intra_view_negatives=True)(
        torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    assert out.loss.item() == pytest.approx(0.0, abs=1e-7)
    # B = 2, a = [(1,0), (0,1)], p = [(1,0), (0,0)], tau 1, dot: z = a1, a2, p1, p2
    # row a1: others a2 (0), p1 (1), p2 (0): -log(e / (e + 2)) = log(1 + 2/e) = 0.5514447
    # row a2: others a1 (0), p1 (0), p2 (0); positive p2: -log(1/3) = 1.0986123
    # row p1: others a1 (1), a2 (0), p2 (0); positive a1: 0.5514447
    # row p2: all 0; positive a2: 1.0986123             mean = 0.8250285
    out = InfoNCE(temperature=1.0, normalize=False, intra_view_negatives=True)(
        torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert out.loss.item() == pytest.approx(0.8250285, abs=1e-6)
