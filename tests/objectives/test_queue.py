import math

import pytest
import torch
from pydantic import ValidationError

from engine_objectives import InfoNCE, NegativeQueue, QueueInfoNCE


def normalized(x):
    return x / x.norm(dim=1, keepdim=True)


def reference_queue_infonce(anchor, positive, queued, tau, in_batch):
    """Slow and plain, in float64: the positive against the other positives (if in batch) and the queued rows."""
    a, p = normalized(anchor.double()), normalized(positive.double())
    total = 0.0
    for i in range(a.shape[0]):
        negatives = ([p[j] for j in range(p.shape[0]) if j != i] if in_batch else []) + list(queued.double())
        logits = [float(a[i] @ p[i]) / tau] + [float(a[i] @ n) / tau for n in negatives]
        total += -logits[0] + math.log(sum(math.exp(x) for x in logits))
    return total / a.shape[0]


def test_negative_queue_fifo():
    queue = NegativeQueue(5)
    assert len(queue) == 0 and queue.negatives().numel() == 0
    queue.enqueue(torch.arange(6.0).reshape(3, 2))         # rows 0, 1, 2
    assert len(queue) == 3 and queue.negatives().tolist() == [[0, 1], [2, 3], [4, 5]]
    queue.enqueue(10 + torch.arange(6.0).reshape(3, 2))    # rows 3, 4, then overwrites the oldest (row 0)
    assert len(queue) == 5
    assert sorted(queue.negatives()[:, 0].tolist()) == [2, 4, 10, 12, 14]
    queue.enqueue(100 + torch.arange(14.0).reshape(7, 2))  # more than the capacity: keeps the last 5
    assert sorted(queue.negatives()[:, 0].tolist()) == [104, 106, 108, 110, 112]
    with pytest.raises(ValueError, match="dimension 2"):
        queue.enqueue(torch.randn(1, 3))
    queue.reset()
    assert len(queue) == 0


@pytest.mark.parametrize("in_batch", [True, False])
def test_queue_infonce_matches_reference_over_steps(in_batch):
    loss_fn = QueueInfoNCE(queue_size=5, temperature=0.5, in_batch_negatives=in_batch).double()
    seen = []
    for _ in range(3):
        anchor, positive = torch.randn(3, 4).double(), torch.randn(3, 4).double()
        queued = torch.cat(seen)[-5:] if seen else torch.zeros(0, 4, dtype=torch.float64)
        expected = reference_queue_infonce(anchor, positive, queued, 0.5, in_batch)
        out = loss_fn(anchor, positive)
        assert out.loss.item() == pytest.approx(expected, rel=1e-10)
        seen.append(normalized(positive))
    assert len(loss_fn.queue) == 5


def test_queue_infonce_empty_queue_is_infonce_and_eval_does_not_enqueue():
    anchor, positive = torch.randn(4, 3), torch.randn(4, 3)
    loss_fn = QueueInfoNCE(queue_size=8, temperature=0.2)
    loss_fn.eval()
    assert torch.allclose(loss_fn(anchor, positive).loss, InfoNCE(temperature=0.2)(anchor, positive).loss)
    assert len(loss_fn.queue) == 0
    loss_fn.train()
    loss_fn(anchor, positive)
    assert len(loss_fn.queue) == 4


def test_queue_infonce_backward_after_enqueue_and_gradcheck():
    loss_fn = QueueInfoNCE(queue_size=4, temperature=0.5).double()
    loss_fn(torch.randn(3, 3).double(), torch.randn(3, 3).double())  # fill part of the queue
    anchor = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    positive = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    loss_fn(anchor, positive).loss.backward()  # the enqueue inside must not break this backward
    assert torch.isfinite(anchor.grad).all()
    loss_fn.eval()
    assert torch.autograd.gradcheck(lambda a, p: loss_fn(a, p).loss, (anchor, positive))


def test_queue_state_dict_round_trip():
    loss_fn = QueueInfoNCE(queue_size=6)
    loss_fn(torch.randn(4, 3), torch.randn(4, 3))
    restored = QueueInfoNCE(queue_size=6)
    restored.load_state_dict(loss_fn.state_dict())
    assert torch.equal(restored.queue.negatives(), loss_fn.queue.negatives()) and len(restored.queue) == 4


def test_queue_config_and_bad_input():
    for bad in ({"queue_size": 0}, {"temperature": 0}, {"momentum": 0.99}):
        with pytest.raises(ValidationError):
            QueueInfoNCE.Config(**bad)
    with pytest.raises(ValueError, match="size must be >= 1"):
        NegativeQueue(0)
    loss_fn = QueueInfoNCE(queue_size=4)
    loss_fn(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="dimension 3"):
        loss_fn(torch.randn(2, 5), torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"\[3, 4\].*\[2, 4\]"):
        loss_fn(torch.randn(3, 4), torch.randn(2, 4))
