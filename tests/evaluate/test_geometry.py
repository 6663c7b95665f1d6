"""alignment and uniformity: hand examples and naive double loops in float64."""

import itertools
import math

import pytest
import torch

from engine.evaluate import alignment, uniformity


def naive_alignment(x, y, alpha):
    total = 0.0
    for xi, yi in zip(x.double().tolist(), y.double().tolist()):
        nx, ny = math.sqrt(sum(v * v for v in xi)), math.sqrt(sum(v * v for v in yi))
        total += math.sqrt(sum((a / nx - b / ny) ** 2 for a, b in zip(xi, yi))) ** alpha
    return total / len(x)


def naive_uniformity(x, t):
    rows = [[v / math.sqrt(sum(w * w for w in r)) for v in r] for r in x.double().tolist()]
    pairs = [(i, j) for i in range(len(rows)) for j in range(i + 1, len(rows))]
    potential = sum(math.exp(-t * sum((a - b) ** 2 for a, b in zip(rows[i], rows[j]))) for i, j in pairs)
    return math.log(potential / len(pairs))


def test_alignment_hand_examples():
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    assert alignment(x, x) == 0.0  # identical views
    assert alignment(x, 5 * x) == pytest.approx(0.0, abs=1e-7)  # only directions matter
    assert alignment(x, -x) == pytest.approx(4.0)  # antipodal: ||2 x̂||^2 = 4
    # orthogonal unit vectors: ||e1 - e2|| = sqrt(2) -> alpha=2 gives 2, alpha=1 gives sqrt(2)
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 7.0]])
    assert alignment(e1, e2) == pytest.approx(2.0)
    assert alignment(e1, e2, alpha=1) == pytest.approx(math.sqrt(2))
    # mixed: pair 1 identical (0), pair 2 antipodal (4) -> mean 2
    x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0], [0.0, -1.0]])
    assert alignment(x, y) == pytest.approx(2.0)


def test_uniformity_hand_examples():
    # Two antipodal points: squared distance 4 -> log exp(-4t) = -4t.
    antipodal = torch.tensor([[1.0, 0.0], [-3.0, 0.0]], dtype=torch.float64)
    assert uniformity(antipodal) == pytest.approx(-8.0)
    assert uniformity(antipodal, t=1) == pytest.approx(-4.0)
    # Three points 120 degrees apart on the circle: every squared distance is 3 -> -3t.
    tri = torch.tensor([[math.cos(a), math.sin(a)] for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)])
    assert uniformity(tri) == pytest.approx(-6.0, abs=1e-5)
    # Collapsed embeddings: every distance 0 -> log 1 = 0 (the worst value).
    assert uniformity(torch.ones(5, 3)) == pytest.approx(0.0, abs=1e-7)
    # Two orthogonal points: squared distance 2 -> -2t; with one antipodal pair added (rows e1, e2, -e1):
    #   pairs (e1,e2): 2, (e1,-e1): 4, (e2,-e1): 2 -> log((2 exp(-4) + exp(-8)) / 3)
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert uniformity(e[:2]) == pytest.approx(-4.0)
    assert uniformity(e) == pytest.approx(math.log((2 * math.exp(-4) + math.exp(-8)) / 3))


@pytest.mark.parametrize("n, d, alpha", list(itertools.product([1, 5, 40], [2, 16], [1, 2, 3.5])))
def test_alignment_matches_naive(n, d, alpha):
    g = torch.Generator().manual_seed(n * d)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    assert alignment(x, y, alpha=alpha) == pytest.approx(naive_alignment(x, y, alpha), rel=1e-12)
    assert alignment(x.float(), y.float(), alpha=alpha) == pytest.approx(naive_alignment(x, y, alpha), rel=1e-5)


@pytest.mark.parametrize("n, d, t", list(itertools.product([2, 7, 60], [2, 32], [0.5, 2.0])))
def test_uniformity_matches_naive(n, d, t):
    g = torch.Generator().manual_seed(n + d)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    assert uniformity(x, t=t) == pytest.approx(naive_uniformity(x, t), rel=1e-10)
    assert uniformity(x.float(), t=t) == pytest.approx(naive_uniformity(x, t), rel=1e-5)


def test_uniformity_subsample():
    x = torch.randn(50, 4, dtype=torch.float64)
    # no subsample when n <= max_samples, or when disabled
    assert uniformity(x, max_samples=50) == pytest.approx(naive_uniformity(x, 2.0), rel=1e-10)
    assert uniformity(x, max_samples=None) == pytest.approx(naive_uniformity(x, 2.0), rel=1e-10)
    # the documented subsample: x[randperm(n, generator)[:max_samples]]
    got = uniformity(x, max_samples=12, generator=torch.Generator().manual_seed(5))
    idx = torch.randperm(50, generator=torch.Generator().manual_seed(5))[:12]
    assert got == pytest.approx(naive_uniformity(x[idx], 2.0), rel=1e-10)
    assert got == uniformity(x, max_samples=12, generator=torch.Generator().manual_seed(5))


def test_well_spread_points_stay_finite():
    # 1000 nearly uniform points with a large t: a plain log(mean(exp)) would still work, but logsumexp must agree.
    x = torch.randn(1000, 64, dtype=torch.float64)
    value = uniformity(x, t=50.0, max_samples=None)
    sq = torch.pdist(torch.nn.functional.normalize(x, dim=1)).pow(2)
    assert math.isfinite(value)
    assert value == pytest.approx(torch.exp(-50.0 * sq).mean().log().item(), rel=1e-10)


def test_bad_arguments():
    with pytest.raises(ValueError, match="equal shapes"):
        alignment(torch.ones(2, 3), torch.ones(3, 3))
    with pytest.raises(ValueError, match="at least one pair"):
        alignment(torch.ones(0, 3), torch.ones(0, 3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        uniformity(torch.ones(1, 3))
    with pytest.raises(ValueError, match="t must be > 0"):
        uniformity(torch.ones(3, 3), t=0)
    with pytest.raises(ValueError, match="max_samples"):
        uniformity(torch.ones(3, 3), max_samples=1)
