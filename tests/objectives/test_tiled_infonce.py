import itertools

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from engine_objectives import InfoNCE, TiledInfoNCE, tiled_infonce_loss


def reference_infonce(anchor, positive, tau, symmetric):
    """Slow and plain, in float64, on cosine similarities: mean over rows of -log softmax of the positive."""
    a = anchor.double() / anchor.double().norm(dim=1, keepdim=True)
    p = positive.double() / positive.double().norm(dim=1, keepdim=True)

    def one_way(x, y):
        total = 0.0
        for i in range(x.shape[0]):
            denominator = sum(torch.exp(x[i] @ y[j] / tau) for j in range(y.shape[0]))
            total = total - torch.log(torch.exp(x[i] @ y[i] / tau) / denominator)
        return total / x.shape[0]

    return (one_way(a, p) + one_way(p, a)) / 2 if symmetric else one_way(a, p)


# B divisible by the tile, not divisible, smaller than the tile, tile 1, B 1
SHAPES = [(8, 4), (7, 3), (5, 16), (9, 1), (1, 1), (1, 4), (33, 8)]


@pytest.mark.parametrize("shape,symmetric", list(itertools.product(SHAPES, [False, True])))
def test_tiled_equals_dense_loss_and_gradients(shape, symmetric):
    batch, tile = shape
    anchor = torch.randn(batch, 6, dtype=torch.float64, requires_grad=True)
    positive = torch.randn(batch, 6, dtype=torch.float64, requires_grad=True)
    dense = InfoNCE(temperature=0.3, symmetric=symmetric)(anchor, positive).loss
    tiled = TiledInfoNCE(temperature=0.3, symmetric=symmetric, tile_size=tile)(anchor, positive).loss
    assert torch.allclose(tiled, dense, rtol=1e-12, atol=1e-12)
    grads_dense = torch.autograd.grad(dense, (anchor, positive))
    grads_tiled = torch.autograd.grad(tiled, (anchor, positive))
    for gd, gt in zip(grads_dense, grads_tiled):
        assert torch.allclose(gt, gd, rtol=1e-10, atol=1e-12)
    if batch <= 9:
        assert torch.allclose(tiled, reference_infonce(anchor.detach(), positive.detach(), 0.3, symmetric),
                              rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("symmetric,normalize", list(itertools.product([False, True], [False, True])))
def test_tiled_float32_and_unnormalised(symmetric, normalize):
    anchor, positive = torch.randn(70, 16), torch.randn(70, 16)
    dense_fn = InfoNCE(temperature=0.1, symmetric=symmetric, normalize=normalize)
    tiled_fn = TiledInfoNCE(temperature=0.1, symmetric=symmetric, normalize=normalize, tile_size=16)
    a1, p1 = anchor.clone().requires_grad_(), positive.clone().requires_grad_()
    a2, p2 = anchor.clone().requires_grad_(), positive.clone().requires_grad_()
    dense, tiled = dense_fn(a1, p1).loss, tiled_fn(a2, p2).loss
    dense.backward()
    tiled.backward()
    assert torch.allclose(tiled, dense, rtol=1e-5, atol=1e-5)
    assert torch.allclose(a2.grad, a1.grad, rtol=1e-4, atol=1e-6)
    assert torch.allclose(p2.grad, p1.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("symmetric", [False, True])
def test_tiled_gradcheck(symmetric):
    anchor = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    positive = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, p: tiled_infonce_loss(a, p, 2, symmetric), (anchor, positive))
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, p, c: tiled_infonce_loss(a, p, 2, symmetric, c, normalize=True),
                                    (anchor, positive, scale))
    loss_fn = TiledInfoNCE(temperature=0.5, symmetric=symmetric, tile_size=3)
    assert torch.autograd.gradcheck(lambda a, p: loss_fn(a, p).loss, (anchor, positive))


def test_tiled_stable_for_large_logits():
    anchor, positive = 1e3 * torch.randn(20, 4), 1e3 * torch.randn(20, 4)
    dense = InfoNCE(temperature=0.01, normalize=False, symmetric=True)(anchor, positive).loss
    tiled = TiledInfoNCE(temperature=0.01, normalize=False, symmetric=True, tile_size=3)(anchor, positive).loss
    assert torch.isfinite(tiled) and torch.allclose(tiled, dense, rtol=1e-5)


def test_tiled_learnable_temperature_gradient_matches_dense():
    anchor, positive = torch.randn(11, 4), torch.randn(11, 4)
    dense_fn = InfoNCE(temperature=0.2, learnable_temperature=True, symmetric=True)
    tiled_fn = TiledInfoNCE(temperature=0.2, learnable_temperature=True, symmetric=True, tile_size=4)
    dense_fn(anchor, positive).loss.backward()
    tiled_fn(anchor, positive).loss.backward()
    assert [n for n, _ in tiled_fn.named_parameters()] == ["log_temperature"]
    assert torch.allclose(tiled_fn.log_temperature.grad, dense_fn.log_temperature.grad, rtol=1e-4, atol=1e-6)


def test_tiled_never_builds_the_full_matrix(monkeypatch):
    """Every matrix product inside the function is at most tile x tile."""
    seen = []
    matmul = torch.Tensor.__matmul__

    def spy(x, y):
        out = matmul(x, y)
        seen.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    anchor = torch.randn(40, 8, requires_grad=True)
    positive = torch.randn(40, 8, requires_grad=True)
    tiled_infonce_loss(anchor, positive, tile_size=16, symmetric=True).backward()
    assert seen and max(r * c for r, c in seen) <= 16 * 16


def test_tiled_config_and_bad_input():
    assert TiledInfoNCE.Config().tile_size == 512
    with pytest.raises(ValidationError):
        TiledInfoNCE.Config(tile_size=0)
    with pytest.raises(ValidationError):
        TiledInfoNCE.Config(temperature=0)
    with pytest.raises(ValueError):
        TiledInfoNCE(temperature=-0.1)
    with pytest.raises(ValueError, match="tile_size"):
        tiled_infonce_loss(torch.randn(2, 2), torch.randn(2, 2), tile_size=0)
    with pytest.raises(ValueError, match=r"\[3, 4\].*\[2, 4\]"):
        TiledInfoNCE()(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        TiledInfoNCE()(torch.full((2, 4), float("nan")), torch.randn(2, 4))
    assert TiledInfoNCE.from_config(TiledInfoNCE.Config(tile_size=7)).get_config_dict()["tile_size"] == 7
    assert "tile_size=7" in repr(TiledInfoNCE(tile_size=7))


def test_tiled_matches_functional_cross_entropy():
    a, p = torch.randn(13, 5, dtype=torch.float64), torch.randn(13, 5, dtype=torch.float64)
    expected = F.cross_entropy(a @ p.T, torch.arange(13))
    assert torch.allclose(tiled_infonce_loss(a, p, tile_size=4), expected, rtol=1e-12)
    expected = F.cross_entropy(3 * F.normalize(a) @ F.normalize(p).T, torch.arange(13))
    assert torch.allclose(tiled_infonce_loss(a, p, 4, scale=3.0, normalize=True), expected, rtol=1e-12)


def test_tiled_zero_rows_match_f_normalize():
    """A zero row (norm below F.normalize's floor) gets the same gradient as through F.normalize."""
    anchor = torch.randn(5, 3, dtype=torch.float64)
    anchor[2] = 0.0
    anchor.requires_grad_()
    positive = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    dense = InfoNCE(temperature=0.5)(anchor, positive).loss
    tiled = TiledInfoNCE(temperature=0.5, tile_size=2)(anchor, positive).loss
    for gd, gt in zip(torch.autograd.grad(dense, (anchor, positive)), torch.autograd.grad(tiled, (anchor, positive))):
        assert torch.allclose(gt, gd, rtol=1e-10, atol=1e-12)
