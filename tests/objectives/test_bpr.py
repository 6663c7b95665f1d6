import itertools
import math

import pytest
import torch
from pydantic import ValidationError

from engine_objectives import BPR


def reference_bpr(user, pos_item, neg_item):
    """Slow and plain, in float64: mean of -log sigmoid(<u, i> - <u, j>) over every (triple, negative)."""
    u, i, j = user.double(), pos_item.double(), neg_item.double()
    if j.dim() == 2:
        j = j.unsqueeze(1)
    losses = []
    for b in range(u.shape[0]):
        for n in range(j.shape[1]):
            x = u[b] @ i[b] - u[b] @ j[b, n]
            losses.append(-torch.log(1 / (1 + torch.exp(-x))))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("batch_size,dim,num_neg", list(itertools.product([1, 4, 7], [1, 3, 8], [None, 1, 5])))
def test_bpr_matches_reference(batch_size, dim, num_neg):
    user, pos_item = torch.randn(batch_size, dim), torch.randn(batch_size, dim)
    neg_item = torch.randn(batch_size, dim) if num_neg is None else torch.randn(batch_size, num_neg, dim)
    expected = reference_bpr(user, pos_item, neg_item)

    out = BPR()(user.double(), pos_item.double(), neg_item.double())
    assert out.loss.shape == () and out.parts == {"bpr": out.loss}
    assert torch.allclose(out.loss, expected, rtol=1e-10, atol=1e-12)
    assert torch.allclose(BPR()(user, pos_item, neg_item).loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_bpr_one_negative_two_shapes_agree():
    user, pos_item, neg_item = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    assert torch.allclose(BPR()(user, pos_item, neg_item).loss, BPR()(user, pos_item, neg_item[:, None]).loss)


def test_bpr_hand_computed():
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos_item = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    neg_item = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    # row 0: x = 2 - 0 = 2  -> -log sigmoid(2)  = log(1 + e^-2) = 0.1269280
    # row 1: x = 1 - 3 = -2 -> -log sigmoid(-2) = log(1 + e^2)  = 2.1269280
    # mean = 1 + log(1 + e^-2) = 1.1269280
    assert BPR()(user, pos_item, neg_item).loss.item() == pytest.approx(1.1269280, abs=1e-6)


def test_bpr_stable_for_large_margins():
    user = torch.tensor([[1.0]])
    # margin -1000: -log sigmoid(-1000) = 1000 exactly in floating point (the plain formula gives inf)
    assert BPR()(user, torch.tensor([[0.0]]), torch.tensor([[1000.0]])).loss.item() == pytest.approx(1000.0)
    assert BPR()(user, torch.tensor([[1000.0]]), torch.tensor([[0.0]])).loss.item() == pytest.approx(0.0, abs=1e-30)
    assert math.isfinite(BPR()(user, torch.tensor([[0.0]]), torch.tensor([[1e30]])).loss.item())


@pytest.mark.parametrize("num_neg", [None, 3])
def test_bpr_gradcheck(num_neg):
    shape = (4, 3) if num_neg is None else (4, num_neg, 3)
    user = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    pos_item = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    neg_item = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, i, j: BPR()(u, i, j).loss, (user, pos_item, neg_item))


def test_bpr_config():
    assert BPR.Config().model_dump() == {}
    with pytest.raises(ValidationError):
        BPR.Config(reg=1e-4)
    loss_fn = BPR.from_config(BPR.Config(), num_users=10)  # context it does not take is ignored
    assert isinstance(loss_fn, BPR) and loss_fn.get_config_dict() == {} and list(loss_fn.parameters()) == []


@pytest.mark.parametrize(
    "user,pos_item,neg_item,match",
    [
        (torch.randn(3, 4), torch.randn(2, 4), torch.randn(3, 4), r"user \[3, 4\], pos_item \[2, 4\]"),
        (torch.randn(3, 4), torch.randn(3, 4), torch.randn(2, 4), r"neg_item \[2, 4\]"),
        (torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 2, 5), r"neg_item \[3, 2, 5\]"),
        (torch.randn(3, 4), torch.randn(3, 5), torch.randn(3, 4), r"pos_item \[3, 5\]"),
        (torch.randn(4), torch.randn(4), torch.randn(4), r"user must be .*\[B, D\], got shape \[4\]"),
        (torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 1, 1, 4), r"\[B, N, D\], got shape \[2, 1, 1, 4\]"),
        (torch.randn(0, 4), torch.randn(0, 4), torch.randn(0, 4), r"empty batch"),
        (torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 0, 4), r"no negatives"),
        (torch.full((2, 4), float("nan")), torch.randn(2, 4), torch.randn(2, 4), r"user \[2, 4\] has NaN"),
        (torch.randn(2, 4), torch.randn(2, 4), torch.full((2, 3, 4), float("inf")), r"neg_item \[2, 3, 4\] has NaN"),
    ],
)
def test_bpr_bad_input(user, pos_item, neg_item, match):
    with pytest.raises(ValueError, match=match):
        BPR()(user, pos_item, neg_item)
