import itertools
import math

import pytest
import torch
from pydantic import ValidationError

from engine_objectives import InfoNCE, SupCon


def reference_supcon(z, labels, tau, normalize):
    """Slow and plain, in float64: for each anchor with positives, -mean over positives of the log-probability
    against every other row; averaged over those anchors."""
    z = z.double()
    if normalize:
        z = z / z.norm(dim=1, keepdim=True)
    n = z.shape[0]
    per_anchor = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(n) if k != i)
        terms = [math.log(math.exp(float(z[i] @ z[p]) / tau) / denominator) for p in positives]
        per_anchor.append(-sum(terms) / len(terms))
    return sum(per_anchor) / len(per_anchor)


@pytest.mark.parametrize("n,num_classes,tau,normalize", list(itertools.product([4, 9], [2, 3], [0.1, 1.0],
                                                                               [True, False])))
def test_supcon_matches_reference(n, num_classes, tau, normalize):
    z = torch.randn(n, 5) / 2
    labels = torch.arange(n) % num_classes
    expected = reference_supcon(z, labels.tolist(), tau, normalize)
    out = SupCon(temperature=tau, normalize=normalize)(z.double(), labels=labels)
    assert out.parts == {"supcon": out.loss}
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)


def test_supcon_views_and_pair_forms_agree():
    anchor, positive = torch.randn(5, 4).double(), torch.randn(5, 4).double()
    labels = torch.tensor([0, 1, 0, 2, 1])
    loss_fn = SupCon(temperature=0.3)
    pair = loss_fn(anchor, positive, labels=labels).loss
    views = loss_fn(torch.stack([anchor, positive], dim=1), labels=labels).loss
    flat = loss_fn(torch.cat([anchor, positive]), labels=labels.repeat(2)).loss
    expected = reference_supcon(torch.cat([anchor, positive]), labels.repeat(2).tolist(), 0.3, True)
    for value in (pair, views, flat):
        assert value.item() == pytest.approx(expected, rel=1e-10)


def test_supcon_without_labels_is_nt_xent():
    anchor, positive = torch.randn(6, 4).double(), torch.randn(6, 4).double()
    nt_xent = InfoNCE(temperature=0.2, intra_view_negatives=True)(anchor, positive).loss
    assert torch.allclose(SupCon(temperature=0.2)(anchor, positive).loss, nt_xent, rtol=1e-12)


def test_supcon_hand_computed():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    # tau 1, dot: s = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    # anchor 0: positive 1; others {1, 2}: -(1 - log(e^1 + e^0)) = log(e + 1) - 1 = 0.3132617
    # anchor 1: the same, 0.3132617; anchor 2 is alone in its class: not an anchor (still a negative)
    # mean = 0.3132617
    assert SupCon(temperature=1.0, normalize=False)(z, labels=labels).loss.item() == pytest.approx(0.3132617, abs=1e-6)
    # two positives: z = (1,0), (1,0), (0,1), labels all 0, tau 1
    # anchor 0: others 1 (s=1), 2 (s=0): log denominator log(e + 1) = 1.3132617
    #   -(1/2)[(1 - 1.3132617) + (0 - 1.3132617)] = 0.8132617;  anchor 1: the same
    # anchor 2: others s = 0, 0: log 2; -(1/2)[(0 - log 2) * 2] = 0.6931472
    # mean = (2 * 0.8132617 + 0.6931472) / 3 = 0.7732235
    loss = SupCon(temperature=1.0, normalize=False)(z, labels=torch.zeros(3, dtype=torch.long)).loss
    assert loss.item() == pytest.approx(0.7732235, abs=1e-6)


def test_supcon_gradcheck():
    z = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    loss_fn = SupCon(temperature=0.5)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, labels=labels).loss, (z,))
    a = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    p = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: loss_fn(x, y).loss, (a, p))


def test_supcon_config_and_bad_input():
    with pytest.raises(ValidationError):
        SupCon.Config(temperature=-1)
    with pytest.raises(ValidationError):
        SupCon.Config(base_temperature=0.07)
    loss_fn = SupCon()
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"labels must be a tensor of shape \[4\]"):
        loss_fn(z, labels=torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match=r"labels must be a tensor of shape \[4\]"):
        loss_fn(z, labels=torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="integer ids"):
        loss_fn(z, labels=torch.zeros(4))
    with pytest.raises(ValueError, match="pass labels as a keyword"):
        loss_fn(z, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="need labels"):
        loss_fn(z)
    with pytest.raises(ValueError, match="no two rows share a label"):
        loss_fn(z, labels=torch.arange(4))
    with pytest.raises(ValueError, match=r"\[N, D\] or \[N, V, D\]"):
        loss_fn(torch.randn(2, 2, 2, 2), labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        loss_fn(torch.full((2, 3), float("nan")), labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[3, 4\].*\[2, 4\]"):
        loss_fn(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="empty"):
        loss_fn(torch.zeros(0, 3), labels=torch.zeros(0, dtype=torch.long))
