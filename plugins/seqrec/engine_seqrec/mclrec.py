"""MCLRec's contrast between learned views (Qin et al., SIGIR 2023, https://arxiv.org/abs/2304.07763).

Two stochastic views of a sequence are encoded into :math:`h_1, h_2`; two learnable augmenters (MLPs,
:class:`~engine_seqrec.augment.LearnedMLP`) map them to :math:`\\tilde h_1 = g_1(h_1)`, :math:`\\tilde h_2 =
g_2(h_2)`. The learned-view loss contrasts each stochastic view with the *other* view's learned one, and the two
learned views with each other:

.. math::
    \\mathcal{L}_{\\mathrm{mcl}} = \\ell(h_1, \\tilde h_2) + \\ell(h_2, \\tilde h_1) + \\ell(\\tilde h_1, \\tilde h_2)
    + \\mu \\, \\big(R(h_1, \\tilde h_2) + R(h_2, \\tilde h_1) + R(\\tilde h_1, \\tilde h_2)\\big)

where :math:`\\ell` is any contrastive objective of the registry (MCLRec: NT-Xent, dot product, :math:`\\tau = 1`)
and :math:`R` is MCLRec's contrastive regulariser (:func:`margin_regularizer`, weight :math:`\\mu`). The task
adds :math:`\\beta \\mathcal{L}_{\\mathrm{mcl}}` to the encoder's loss, and trains the augmenters alone on
:math:`\\mathcal{L}_{\\mathrm{mcl}}` in between (meta-optimisation; see ``SeqRecTask.training_steps``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["margin_regularizer", "learned_view_loss"]


def margin_regularizer(a: Tensor, b: Tensor) -> Tensor:
    r"""MCLRec's contrastive regulariser on the dot similarities of the :math:`2B` rows :math:`z = [a; b]`.

    For row :math:`r` with positive similarity :math:`p_r = \langle z_r, z_{r^+} \rangle` and negatives
    :math:`n_{rk} = \langle z_r, z_k \rangle` (:math:`k \ne r, r^+`), with :math:`m_r = \max_k n_{rk}`:

    .. math::
        R = \frac{1}{2B} \sum_r \max(0, p_r - m_r)
          + \frac{1}{2B (2B - 2)} \sum_r \sum_{k} \max(0, \max(p_r, m_r) - n_{rk})

    It penalises positives that stand above the hardest negative and negatives far below the larger of the two,
    which keeps the learned views from making the contrast trivial. :math:`R = 0` for :math:`B = 1` (no negative).

    Args:
        a (Tensor): :math:`(B, D)`.
        b (Tensor): :math:`(B, D)`, row :math:`i` the positive of ``a[i]``.
    """
    n = a.shape[0]
    if n < 2:
        return a.sum() * 0.0
    z = torch.cat([a, b])
    sim = z @ z.T
    rows = torch.arange(2 * n, device=z.device)
    partner = (rows + n) % (2 * n)
    pos = sim[rows, partner]
    negative = torch.ones_like(sim, dtype=torch.bool)
    negative[rows, rows] = False
    negative[rows, partner] = False
    neg = sim[negative].view(2 * n, 2 * n - 2)
    hardest = neg.max(dim=1).values
    upper = torch.maximum(pos, hardest)
    return (pos - hardest).clamp(min=0).mean() + (upper.unsqueeze(1) - neg).clamp(min=0).mean()


def learned_view_loss(objective, h1: Tensor, h2: Tensor, aug1, aug2, margin_weight: float) -> Tensor:
    """:math:`\\mathcal{L}_{\\mathrm{mcl}}` of the module docstring for one batch of the two stochastic views."""
    g1, g2 = aug1(h1), aug2(h2)
    pairs = ((h1, g2), (h2, g1), (g1, g2))
    loss = sum(objective(x, y).loss for x, y in pairs)
    if margin_weight:
        loss = loss + margin_weight * sum(margin_regularizer(x, y) for x, y in pairs)
    return loss
