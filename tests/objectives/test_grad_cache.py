import pytest
import torch
from torch import nn

from engine.components import ObjectiveOutput
from engine_objectives import InfoNCE, SupCon, grad_cache


def mlp(dropout=0.0):
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Dropout(dropout), nn.Linear(8, 4)).double()


def grads(*modules):
    return [p.grad.clone() for m in modules for p in m.parameters()]


@pytest.mark.parametrize("chunk", [1, 3, 4, 10])
def test_grad_cache_equals_full_batch_gradients(chunk):
    queries, docs = torch.randn(10, 5, dtype=torch.float64), torch.randn(10, 5, dtype=torch.float64)
    q_enc, d_enc = mlp(), mlp()
    objective = InfoNCE(temperature=0.2, symmetric=True, learnable_temperature=True).double()
    full = objective(q_enc(queries), d_enc(docs)).loss
    full.backward()
    expected, expected_tau = grads(q_enc, d_enc), objective.log_temperature.grad.clone()
    for m in (q_enc, d_enc, objective):
        m.zero_grad()

    out = grad_cache([q_enc, d_enc], [queries.split(chunk), docs.split(chunk)], objective)
    assert isinstance(out, ObjectiveOutput) and not out.loss.requires_grad
    assert torch.allclose(out.loss, full.detach(), rtol=1e-12)
    for got, want in zip(grads(q_enc, d_enc), expected):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    assert torch.allclose(objective.log_temperature.grad, expected_tau, rtol=1e-10)


def test_grad_cache_replays_dropout_masks():
    """With dropout, the second forward of each chunk sees the same masks as the first: the gradients equal those
    of keeping every chunk's graph (same seed, same chunks)."""
    x, y = torch.randn(9, 5, dtype=torch.float64), torch.randn(9, 5, dtype=torch.float64)
    encoder = mlp(dropout=0.5)
    objective = InfoNCE(temperature=0.5)

    torch.manual_seed(11)
    reps = [torch.cat([encoder(c) for c in x.split(4)]), torch.cat([encoder(c) for c in y.split(4)])]
    reference = objective(*reps).loss
    reference.backward()
    expected = grads(encoder)
    encoder.zero_grad()

    torch.manual_seed(11)
    out = grad_cache(encoder, [x.split(4), y.split(4)], objective)
    assert torch.allclose(out.loss, reference.detach(), rtol=1e-12)
    for got, want in zip(grads(encoder), expected):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_grad_cache_chunk_forms_and_objective_kwargs():
    encoder = mlp()
    x = torch.randn(6, 5, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    objective = SupCon(temperature=0.5)
    full = objective(encoder(x), labels=labels).loss
    full.backward()
    expected = grads(encoder)
    encoder.zero_grad()

    class Keyword(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, inputs, scale=1.0):
            return self.inner(inputs) * scale

    wrapped = Keyword(encoder)
    chunks = [{"inputs": x[:2]}, (x[2:5], 1.0), x[5:]]
    out = grad_cache(wrapped, [chunks], objective, labels=labels)
    assert torch.allclose(out.loss, full.detach(), rtol=1e-12)
    for got, want in zip(grads(encoder), expected):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    # a plain function returning a scalar works too
    encoder.zero_grad()
    out = grad_cache(encoder, [x.split(2)], lambda r: r.pow(2).sum())
    assert out.parts == {} and torch.allclose(out.loss, encoder(x).pow(2).sum().detach())


def test_grad_cache_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        grad_cache(mlp(), [], InfoNCE())
    with pytest.raises(ValueError, match="non-empty"):
        grad_cache(mlp(), [[]], InfoNCE())
    with pytest.raises(ValueError, match="3 encoders for 2 input groups"):
        grad_cache([mlp()] * 3, [[torch.randn(2, 5)], [torch.randn(2, 5)]], InfoNCE())
