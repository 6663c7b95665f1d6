"""A MoCo-style FIFO queue of past positives, and InfoNCE that uses it as extra negatives."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig, ObjectiveOutput

from .checks import check_pair
from .temperature import TemperatureMixin

__all__ = ["NegativeQueue", "QueueInfoNCE"]


class NegativeQueue(nn.Module):
    r"""A first-in, first-out buffer of the last ``size`` embeddings (detached), saved with the model's state.

    The buffer is allocated on the first :meth:`enqueue`, with that batch's dimension, dtype and device (so the
    objective needs no ``embedding_dim``); a checkpoint restores it at its saved shape.
    Reference: He et al., `Momentum Contrast for Unsupervised Visual Representation Learning
    <https://arxiv.org/abs/1911.05722>`_ (CVPR 2020).

    Args:
        size (int): capacity :math:`K \ge 1`.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"NegativeQueue: size must be >= 1 (got {size})")
        self.size = size
        self.register_buffer("queue", torch.empty(0, 0))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.count)

    def negatives(self) -> Tensor:
        """The stored rows, :math:`(\\min(\\text{seen}, K), D)`; empty before the first :meth:`enqueue`."""
        return self.queue[: int(self.count)]

    @torch.no_grad()
    def enqueue(self, x: Tensor) -> None:
        """Append the rows of ``x`` :math:`(B, D)`, overwriting the oldest once full (only the last ``K`` if
        :math:`B > K`)."""
        if self.queue.numel() == 0:
            self.queue = x.new_zeros(self.size, x.shape[1])
        elif x.shape[1] != self.queue.shape[1]:
            raise ValueError(f"NegativeQueue: holds rows of dimension {self.queue.shape[1]}, got {list(x.shape)}")
        x = x.detach()[-self.size :].to(self.queue.dtype)
        idx = (int(self.ptr) + torch.arange(x.shape[0], device=self.queue.device)) % self.size
        self.queue = self.queue.index_copy(0, idx, x)  # out of place: the last loss may still need the old rows
        self.ptr.fill_((int(self.ptr) + x.shape[0]) % self.size)
        self.count.fill_(min(int(self.count) + x.shape[0], self.size))

    def reset(self) -> None:
        """Empty the queue."""
        self.queue = self.queue.new_empty(0, 0)
        self.ptr.zero_()
        self.count.zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # adopt the saved queue's shape
        key = prefix + "queue"
        if key in state_dict:
            self.queue = torch.empty_like(state_dict[key], device=self.queue.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class QueueInfoNCE(TemperatureMixin, nn.Module, Component):
    r"""InfoNCE whose negatives are the in-batch ones plus a FIFO queue of positives from earlier batches.

    With :math:`q` the normalised anchors, :math:`k` the positives and :math:`Q` the :math:`K'` queued rows:

    .. math::
        \mathcal{L} = \frac{1}{B} \sum_i -\log \frac{e^{\langle q_i, k_i \rangle / \tau}}
        {\sum_{j} e^{\langle q_i, k_j \rangle / \tau} + \sum_{r=1}^{K'} e^{\langle q_i, Q_r \rangle / \tau}}

    After the loss, in training mode, the batch's positives are pushed (detached) into the queue, so the number of
    negatives grows without the memory of a larger batch. The queued rows come from older encoder weights: MoCo
    feeds the queue from a momentum (EMA) copy of the encoder to keep them consistent; that copy belongs to the
    task, which passes its output as ``positive``. ``in_batch_negatives=False`` gives MoCo's own form (the positive
    plus queue negatives only).

    Related: :class:`~engine_objectives.InfoNCE`, :class:`~engine_objectives.MoCHi` (takes ``queue.negatives()``).
    Reference: He et al., `Momentum Contrast for Unsupervised Visual Representation Learning
    <https://arxiv.org/abs/1911.05722>`_ (CVPR 2020).

    Args:
        queue_size (int, optional): :math:`K`, past positives kept. (default: :obj:`4096`)
        temperature (float, optional): :math:`\tau > 0`. (default: :obj:`0.2`)
        normalize (bool, optional): L2-normalise rows first (cosine similarity). (default: :obj:`True`)
        in_batch_negatives (bool, optional): also use the other rows of the batch. (default: :obj:`True`)
        learnable_temperature (bool, optional): learn :math:`\log \tau`. (default: :obj:`False`)

    Shapes:
        - **input:** anchor :math:`(B, D)`, positive :math:`(B, D)`
        - **output:** :class:`~engine.components.ObjectiveOutput` with a scalar ``loss`` and
          ``parts={"infonce": loss}``
    """

    name: ClassVar[str] = "queue_infonce"

    class Config(ComponentConfig):
        """Options of :class:`QueueInfoNCE`."""

        queue_size: int = Field(4096, ge=1, description="K: past positives kept as extra negatives")
        temperature: float = Field(0.2, gt=0, description="softmax temperature tau")
        normalize: bool = Field(True, description="L2-normalise embeddings first: cosine similarity")
        in_batch_negatives: bool = Field(True, description="also use the other rows of the batch as negatives")
        learnable_temperature: bool = Field(False, description="learn log(tau) as a parameter")

    def __init__(self, queue_size: int = 4096, temperature: float = 0.2, normalize: bool = True,
                 in_batch_negatives: bool = True, learnable_temperature: bool = False) -> None:
        super().__init__()
        c = self.Config(queue_size=queue_size, temperature=temperature, normalize=normalize,
                        in_batch_negatives=in_batch_negatives, learnable_temperature=learnable_temperature)
        self.normalize, self.in_batch_negatives = c.normalize, c.in_batch_negatives
        self.learnable_temperature = c.learnable_temperature
        self._init_temperature(c.temperature, c.learnable_temperature)
        self.queue = NegativeQueue(c.queue_size)

    def get_config_dict(self) -> dict[str, Any]:
        """The options as a flat dict, for tracking."""
        return {"queue_size": self.queue.size, "temperature": self.temperature, "normalize": self.normalize,
                "in_batch_negatives": self.in_batch_negatives, "learnable_temperature": self.learnable_temperature}

    def get_logits(self, anchor: Tensor, positive: Tensor) -> Tensor:
        """Logits :math:`(B, 1 + B' + K')`: column 0 the positive, then in-batch negatives, then the queue."""
        if self.normalize:
            anchor, positive = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)
        pos = (anchor * positive).sum(dim=1, keepdim=True)
        parts = [pos]
        if self.in_batch_negatives:
            sim = anchor @ positive.T
            eye = torch.eye(anchor.shape[0], dtype=torch.bool, device=anchor.device)
            parts.append(sim.masked_fill(eye, float("-inf")))
        queued = self.queue.negatives()
        if len(queued):
            if queued.shape[1] != anchor.shape[1]:
                raise ValueError(f"QueueInfoNCE: the queue holds rows of dimension {queued.shape[1]}, got "
                                 f"{list(anchor.shape)}; call queue.reset() when the embedding size changes")
            parts.append(anchor @ queued.to(anchor.dtype).T)
        return self.scale(torch.cat(parts, dim=1))

    def forward(self, anchor: Tensor, positive: Tensor) -> ObjectiveOutput:
        check_pair(anchor, positive, "QueueInfoNCE")
        logits = self.get_logits(anchor, positive)
        loss = (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
        if self.training:
            self.queue.enqueue(F.normalize(positive, dim=-1) if self.normalize else positive)
        return ObjectiveOutput(loss=loss, parts={"infonce": loss})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.get_config_dict().items() if k != "queue_size")
