"""Bayesian personalised ranking over one or several sampled negatives per positive."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.components import Component, ComponentConfig, ObjectiveOutput


def check_triplet(user: Tensor, pos_item: Tensor, neg_item: Tensor) -> None:
    """Raise :class:`ValueError` unless the inputs are finite floats: [B, D], [B, D], and [B, D] or [B, N, D]."""
    for label, x, dims in (("user", user, (2,)), ("pos_item", pos_item, (2,)), ("neg_item", neg_item, (2, 3))):
        if not isinstance(x, Tensor) or x.dim() not in dims or not x.is_floating_point():
            got = f"shape {list(x.shape)}, {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            want = "[B, D] or [B, N, D]" if len(dims) == 2 else "[B, D]"
            raise ValueError(f"BPR: {label} must be a float tensor {want}, got {got}")
    shapes = f"user {list(user.shape)}, pos_item {list(pos_item.shape)}, neg_item {list(neg_item.shape)}"
    if pos_item.shape != user.shape or neg_item.shape[0] != user.shape[0] or neg_item.shape[-1] != user.shape[-1]:
        raise ValueError(f"BPR: batch sizes and dimensions must agree: {shapes}")
    if user.shape[0] == 0 or neg_item.shape[-2] == 0:
        raise ValueError(f"BPR: empty batch or no negatives: {shapes}")
    for label, x in (("user", user), ("pos_item", pos_item), ("neg_item", neg_item)):
        if not torch.isfinite(x).all():
            raise ValueError(f"BPR: {label} {list(x.shape)} has NaN or inf values; check the encoder's output")


class BPR(nn.Module, Component):
    r"""The BPR loss: a user should score its observed item above a sampled unobserved one.

    With scores :math:`x_{ui} = \langle u, i \rangle` and :math:`N` negatives :math:`j_1 \dots j_N` per triple:

    .. math::
        \mathcal{L} = \frac{1}{B N} \sum_{b=1}^{B} \sum_{n=1}^{N}
        -\log \sigma\left(x_{u_b i_b} - x_{u_b j_{bn}}\right)

    computed as :math:`\mathrm{softplus}(x_{uj} - x_{ui})`, which never overflows. L2 regularisation of the
    embeddings is the optimizer's weight decay, not part of this loss.

    Related: :class:`~engine_objectives.InfoNCE` (all in-batch negatives, with a temperature).
    Reference: Rendle et al., `BPR: Bayesian Personalized Ranking from Implicit Feedback
    <https://arxiv.org/abs/1205.2618>`_ (UAI 2009).

    Shapes:
        - **input:** user :math:`(B, D)`, pos_item :math:`(B, D)`, neg_item :math:`(B, D)` or :math:`(B, N, D)`
        - **output:** :class:`~engine.components.ObjectiveOutput` with a scalar ``loss`` and
          ``parts={"bpr": loss}``
    """

    name: ClassVar[str] = "bpr"
    #: a mean of per-row terms: a rank's share is its rows' mean weighted by its share of the rows
    data_parallel: ClassVar[str] = "rows"
    #: what forward() takes ((user, positive item, negative item) embeddings); tasks that contrast two views reject it up front
    inputs: ClassVar[str] = "triplet"

    class Config(ComponentConfig):
        """:class:`BPR` has no options."""

    def __init__(self) -> None:  # explicit: nn.Module's **kwargs would make from_config pass every context key
        super().__init__()

    def get_config_dict(self) -> dict[str, Any]:
        """The options as a flat dict, for tracking (none)."""
        return {}

    def get_scores(self, user: Tensor, pos_item: Tensor, neg_item: Tensor) -> tuple[Tensor, Tensor]:
        """Scores :math:`x_{ui}` of shape :math:`(B, 1)` and :math:`x_{uj}` of shape :math:`(B, N)`."""
        if neg_item.dim() == 2:
            neg_item = neg_item.unsqueeze(1)
        pos = (user * pos_item).sum(dim=-1, keepdim=True)
        neg = torch.einsum("bd,bnd->bn", user, neg_item)
        return pos, neg

    def forward(self, user: Tensor, pos_item: Tensor, neg_item: Tensor) -> ObjectiveOutput:
        check_triplet(user, pos_item, neg_item)
        pos, neg = self.get_scores(user, pos_item, neg_item)
        loss = F.softplus(neg - pos).mean()
        return ObjectiveOutput(loss=loss, parts={"bpr": loss})
