import itertools
import math

import pytest
import torch
from pydantic import ValidationError

from engine_objectives import GRAM, InfoNCE, Symile, gram_volume


def normalized(x):
    return x / x.norm(dim=1, keepdim=True)


def reference_symile(modalities, tau, normalize):
    """Slow and plain, in float64: for each target modality and row, -log softmax over candidates of the MIP."""
    xs = [normalized(x.double()) if normalize else x.double() for x in modalities]
    b, m = xs[0].shape[0], len(xs)

    def mip(vectors):
        return sum(math.prod(float(v[d]) for v in vectors) for d in range(vectors[0].shape[0]))

    total = 0.0
    for target in range(m):
        for i in range(b):
            others = [xs[k][i] for k in range(m) if k != target]
            logits = [mip(others + [xs[target][j]]) / tau for j in range(b)]
            total += -logits[i] + math.log(sum(math.exp(x) for x in logits))
    return total / (m * b)


def determinant(rows):
    """Laplace expansion along the first row: slow, plain, exact for small matrices."""
    if len(rows) == 1:
        return rows[0][0]
    return sum((-1) ** c * rows[0][c] * determinant([r[:c] + r[c + 1 :] for r in rows[1:]]) for c in range(len(rows)))


def reference_gram(modalities, tau, anchor, symmetric):
    """Slow and plain, in float64: volumes from the Gram determinant of (a_i, m_j, ...), then cross-entropies."""
    xs = [normalized(x.double()) for x in modalities]
    b = xs[0].shape[0]
    others = [x for k, x in enumerate(xs) if k != anchor]

    def volume(i, j):
        vectors = [xs[anchor][i]] + [x[j] for x in others]
        gram = [[float(u @ v) for v in vectors] for u in vectors]
        return math.sqrt(max(determinant(gram), 1e-12))

    logits = [[-volume(i, j) / tau for j in range(b)] for i in range(b)]
    rows = sum(-logits[i][i] + math.log(sum(math.exp(x) for x in logits[i])) for i in range(b)) / b
    cols = sum(-logits[j][j] + math.log(sum(math.exp(logits[i][j]) for i in range(b))) for j in range(b)) / b
    return (rows + cols) / 2 if symmetric else rows


@pytest.mark.parametrize("num_modalities,batch_size,normalize", list(itertools.product([2, 3, 4], [1, 4],
                                                                                         [True, False])))
def test_symile_matches_reference(num_modalities, batch_size, normalize):
    modalities = [torch.randn(batch_size, 5) for _ in range(num_modalities)]
    expected = reference_symile(modalities, 0.5, normalize)
    out = Symile(temperature=0.5, normalize=normalize)([x.double() for x in modalities])
    assert out.parts == {"symile": out.loss}
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)


def test_symile_two_modalities_is_clip():
    a, b = torch.randn(6, 4).double(), torch.randn(6, 4).double()
    clip = InfoNCE(temperature=0.2, symmetric=True)(a, b).loss
    assert torch.allclose(Symile(temperature=0.2)((a, b)).loss, clip, rtol=1e-12)


def test_symile_hand_computed():
    # B = 2, three modalities, tau 1, no normalisation; MIP = sum_d x_d y_d z_d
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    # target x, row 0 (y0 * z0 = (2, 0)): scores x_j -> [2, 0];  row 1 (y1 * z1 = (0, 1)): [0, 1]
    #   -> log(1 + e^-2) + log(1 + e^-1) = 0.1269280 + 0.3132617
    # target y, row 0 (x0 * z0 = (2, 0)): y_j -> [2, 2];  row 1 ((0, 1)): [1, 1]  -> log 2 + log 2
    # target z, row 0 (x0 * y0 = (1, 0)): z_j -> [2, 0];  row 1 ((0, 1)): [0, 1]  -> 0.1269280 + 0.3132617
    # total / (3 * 2) = (2 * 0.4401897 + 1.3862944) / 6 = 2.2666738 / 6 = 0.3777790
    loss = Symile(temperature=1.0, normalize=False)([x, y, z]).loss
    assert loss.item() == pytest.approx(0.3777790, abs=1e-6)


@pytest.mark.parametrize("num_modalities,batch_size,anchor,symmetric", [(2, 3, 0, True), (3, 4, 1, True),
                                                                         (3, 4, 0, False), (4, 3, 2, True)])
def test_gram_matches_reference(num_modalities, batch_size, anchor, symmetric):
    modalities = [torch.randn(batch_size, 6) for _ in range(num_modalities)]
    expected = reference_gram(modalities, 0.3, anchor, symmetric)
    out = GRAM(temperature=0.3, anchor=anchor, symmetric=symmetric)([x.double() for x in modalities])
    assert out.parts == {"gram": out.loss}
    assert out.loss.item() == pytest.approx(expected, rel=1e-9)


def test_gram_volume_hand_computed():
    e = torch.eye(3, dtype=torch.float64)
    # orthonormal vectors span the unit cube: volume 1; two at 60 degrees: |sin 60| = sqrt(3) / 2
    assert gram_volume(e).item() == pytest.approx(1.0)
    two = torch.tensor([[1.0, 0.0, 0.0], [0.5, math.sqrt(3) / 2, 0.0]], dtype=torch.float64)
    assert gram_volume(two).item() == pytest.approx(math.sqrt(3) / 2)
    # aligned vectors: zero volume (clamped to sqrt(1e-12))
    assert gram_volume(torch.ones(2, 3, dtype=torch.float64)).item() == pytest.approx(1e-6)
    # GRAM on two modalities scores with |sin| of each pair: identical pairs get the largest logit 0
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    vols = GRAM().get_volumes([x, x])
    assert torch.allclose(vols, torch.tensor([[1e-6, 1.0], [1.0, 1e-6]]), atol=1e-6)


def test_multimodal_gradcheck():
    xs = [torch.randn(3, 4, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    symile, gram = Symile(temperature=0.5), GRAM(temperature=0.5)
    assert torch.autograd.gradcheck(lambda *m: symile(m).loss, xs, fast_mode=True)
    assert torch.autograd.gradcheck(lambda *m: gram(m).loss, xs, fast_mode=True)


@pytest.mark.parametrize("cls", [Symile, GRAM])
def test_multimodal_bad_input(cls):
    loss_fn = cls()
    with pytest.raises(ValueError, match="list or tuple"):
        loss_fn(torch.randn(3, 4))
    with pytest.raises(ValueError, match="at least 2 modalities"):
        loss_fn([torch.randn(3, 4)])
    with pytest.raises(ValueError, match=r"same \[B, D\].*\[3, 4\], \[2, 4\]"):
        loss_fn([torch.randn(3, 4), torch.randn(2, 4)])
    with pytest.raises(ValueError, match=r"same \[B, D\]"):
        loss_fn([torch.randn(3, 4), torch.randn(3, 5)])
    with pytest.raises(ValueError, match=r"modality 1 must be a float tensor"):
        loss_fn([torch.randn(3, 4), torch.ones(3, 4, dtype=torch.long)])
    with pytest.raises(ValueError, match="modality 0 .* NaN"):
        loss_fn([torch.full((3, 4), float("nan")), torch.randn(3, 4)])
    with pytest.raises(ValueError, match="empty"):
        loss_fn([torch.zeros(0, 4), torch.zeros(0, 4)])
    with pytest.raises(ValidationError):
        cls.Config(temperature=0)


def test_gram_anchor_out_of_range():
    with pytest.raises(ValueError, match="anchor=2 but only 2 modalities"):
        GRAM(anchor=2)([torch.randn(3, 4), torch.randn(3, 4)])
    with pytest.raises(ValidationError):
        GRAM.Config(anchor=-1)
