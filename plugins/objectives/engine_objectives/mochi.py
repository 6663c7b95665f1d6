"""MoCHi: InfoNCE with extra hard negatives synthesised by mixing the hardest ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig, ObjectiveOutput

from .checks import check_finite, check_pair, describe

__all__ = ["MixDraws", "MoCHi"]


@dataclass
class MixDraws:
    """Random choices of one MoCHi step, per anchor row: which hard negatives are mixed, and how much.

    ``pair_a``, ``pair_b``: :math:`(B, s)` ranks among the hard negatives; ``alpha``: :math:`(B, s)` in
    :math:`(0, 1)`; ``query_pair``: :math:`(B, s')` ranks; ``beta``: :math:`(B, s')` in :math:`(0, 0.5)`.
    """

    pair_a: Tensor
    pair_b: Tensor
    alpha: Tensor
    query_pair: Tensor
    beta: Tensor


class MoCHi(nn.Module, Component):
    r"""MoCHi (mixing of contrastive hard negatives) on top of InfoNCE.

    For each anchor :math:`q_i` (rows L2-normalised), rank its negatives :math:`n` by :math:`\langle q_i, n\rangle`
    and keep the :math:`N` hardest, :math:`\tilde n_1 \dots \tilde n_N`. Then synthesise

    .. math::
        h_k = \frac{\alpha_k \tilde n_{a_k} + (1 - \alpha_k) \tilde n_{b_k}}{\lVert \cdot \rVert_2}, \;
        k = 1 \dots s, \qquad
        h'_k = \frac{\beta_k q_i + (1 - \beta_k) \tilde n_{c_k}}{\lVert \cdot \rVert_2}, \; k = 1 \dots s'

    with :math:`\alpha_k \sim U(0, 1)`, :math:`\beta_k \sim U(0, 0.5)` and ranks drawn uniformly, and add them to
    the negatives of an InfoNCE over cosine similarities:

    .. math::
        \mathcal{L} = \frac{1}{B} \sum_i -\log \frac{e^{\langle q_i, k_i \rangle / \tau}}
        {e^{\langle q_i, k_i \rangle / \tau} + \sum_{n} e^{\langle q_i, n \rangle / \tau}
        + \sum_{k} e^{\langle q_i, h_k \rangle / \tau} + \sum_{k} e^{\langle q_i, h'_k \rangle / \tau}}

    The negatives of row :math:`i` are the other rows of ``positive`` plus every row of ``negatives`` (e.g. a
    :class:`~engine_objectives.NegativeQueue`). Synthetic points carry no gradient (they are new negatives, not a
    path back into the encoder). Pass a ``generator`` to make the draws reproducible. The paper's values
    (:math:`N = 1024, s = 1024, s' = 256`) assume a 65k-entry queue; the defaults here suit in-batch negatives and
    cost :math:`B (s + s') D` extra memory.

    Related: :class:`~engine_objectives.HardNegativeInfoNCE` (reweights instead of synthesising),
    :class:`~engine_objectives.QueueInfoNCE`.
    Reference: Kalantidis et al., `Hard Negative Mixing for Contrastive Learning
    <https://arxiv.org/abs/2010.01028>`_ (NeurIPS 2020).

    Args:
        temperature (float, optional): :math:`\tau > 0`. (default: :obj:`0.2`)
        num_hard (int, optional): :math:`N`, hardest negatives to mix (capped by the number available).
            (default: :obj:`64`)
        num_mix (int, optional): :math:`s`, negative-negative mixes per anchor. (default: :obj:`32`)
        num_query_mix (int, optional): :math:`s'`, anchor-negative mixes per anchor. (default: :obj:`16`)

    Shapes:
        - **input:** anchor :math:`(B, D)`, positive :math:`(B, D)`, optional negatives :math:`(K, D)`
        - **output:** :class:`~engine.components.ObjectiveOutput` with a scalar ``loss`` and
          ``parts={"mochi": loss}``
    """

    name: ClassVar[str] = "mochi"

    class Config(ComponentConfig):
        """Options of :class:`MoCHi`."""

        temperature: float = Field(0.2, gt=0, description="softmax temperature tau (cosine similarities)")
        num_hard: int = Field(64, ge=1, description="N: hardest negatives per anchor that are mixed")
        num_mix: int = Field(32, ge=0, description="s: synthetic negatives mixing two hard negatives")
        num_query_mix: int = Field(16, ge=0, description="s': synthetic negatives mixing the anchor and a hard one")

    def __init__(self, temperature: float = 0.2, num_hard: int = 64, num_mix: int = 32,
                 num_query_mix: int = 16) -> None:
        super().__init__()
        c = self.Config(temperature=temperature, num_hard=num_hard, num_mix=num_mix, num_query_mix=num_query_mix)
        self.temperature, self.num_hard, self.num_mix, self.num_query_mix = (
            c.temperature, c.num_hard, c.num_mix, c.num_query_mix)

    def get_config_dict(self) -> dict[str, Any]:
        """The options as a flat dict, for tracking."""
        return {"temperature": self.temperature, "num_hard": self.num_hard, "num_mix": self.num_mix,
                "num_query_mix": self.num_query_mix}

    def get_similarities(self, q: Tensor, k: Tensor, negatives: Tensor | None) -> Tensor:
        """Cosine similarities of each anchor with its negatives, :math:`(B, B + K)`; its own positive is -inf."""
        sim = q @ k.T
        sim = sim.masked_fill(torch.eye(q.shape[0], dtype=torch.bool, device=q.device), float("-inf"))
        return sim if negatives is None else torch.cat([sim, q @ negatives.T], dim=1)

    def draw(self, batch_size: int, num_hard: int, generator: torch.Generator | None = None,
             device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> MixDraws:
        """Draw ranks in ``[0, num_hard)`` and mixing coefficients for every anchor (on the generator's device)."""
        s, s2 = (batch_size, self.num_mix), (batch_size, self.num_query_mix)
        gen_device = generator.device if generator is not None else "cpu"
        kw = {"generator": generator, "device": gen_device}
        draws = MixDraws(
            pair_a=torch.randint(num_hard, s, **kw), pair_b=torch.randint(num_hard, s, **kw),
            alpha=torch.rand(s, dtype=dtype, **kw), query_pair=torch.randint(num_hard, s2, **kw),
            beta=0.5 * torch.rand(s2, dtype=dtype, **kw))
        return MixDraws(*(t.to(device) for t in vars(draws).values()))

    @torch.no_grad()
    def synthesize(self, q: Tensor, hard: Tensor, draws: MixDraws) -> Tensor:
        """Synthetic negatives :math:`(B, s + s', D)` from anchors ``q`` :math:`(B, D)` and their hard negatives
        ``hard`` :math:`(B, N, D)` sorted hardest first."""
        pick = lambda idx: torch.gather(hard, 1, idx[..., None].expand(-1, -1, hard.shape[-1]))  # noqa: E731
        alpha, beta = draws.alpha[..., None], draws.beta[..., None]
        mixed = alpha * pick(draws.pair_a) + (1 - alpha) * pick(draws.pair_b)
        query = beta * q[:, None, :] + (1 - beta) * pick(draws.query_pair)
        return F.normalize(torch.cat([mixed, query], dim=1), dim=-1)

    def forward(self, anchor: Tensor, positive: Tensor, negatives: Tensor | None = None,
                generator: torch.Generator | None = None, draws: MixDraws | None = None) -> ObjectiveOutput:
        check_pair(anchor, positive, "MoCHi")
        if negatives is not None:
            if not isinstance(negatives, Tensor) or negatives.dim() != 2 or negatives.shape[1] != anchor.shape[1] \
                    or not negatives.is_floating_point():
                raise ValueError(f"MoCHi: negatives must be a float tensor [K, {anchor.shape[1]}], "
                                 f"got {describe(negatives)}")
            check_finite(negatives, "negatives", "MoCHi")
            negatives = F.normalize(negatives.to(anchor.dtype), dim=-1)
        q, k = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)
        sim = self.get_similarities(q, k, negatives)
        available = sim.shape[1] - 1
        n_hard = min(self.num_hard, available)
        logits = [sim / self.temperature]
        if n_hard > 0 and self.num_mix + self.num_query_mix > 0:
            order = torch.topk(sim.detach(), n_hard, dim=1).indices
            bank = k if negatives is None else torch.cat([k, negatives])
            hard = bank.detach()[order]
            if draws is None:
                draws = self.draw(q.shape[0], n_hard, generator, q.device, q.dtype)
            synthetic = self.synthesize(q.detach(), hard, draws)
            logits.append(torch.einsum("bd,bsd->bs", q, synthetic) / self.temperature)
        pos = (q * k).sum(dim=1) / self.temperature
        all_logits = torch.cat([pos[:, None], *logits], dim=1)  # the -inf diagonal drops out of the logsumexp
        loss = (torch.logsumexp(all_logits, dim=1) - pos).mean()
        return ObjectiveOutput(loss=loss, parts={"mochi": loss})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.get_config_dict().items())
