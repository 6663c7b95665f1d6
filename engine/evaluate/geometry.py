"""Alignment and uniformity of embeddings on the unit hypersphere.

Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
Hypersphere", ICML 2020 (https://arxiv.org/abs/2005.10242). Both metrics L2-normalise the rows first
(``x̂ = x / max(||x||, 1e-12)``, so an all-zero row stays zero) and are lower-is-better.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["alignment", "uniformity"]


def _unit_rows(x: Tensor) -> Tensor:
    # float32 / float64 kept as given; half precision and integers are promoted to float32.
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    return F.normalize(x, dim=1)


@torch.no_grad()
def alignment(x: Tensor, y: Tensor, alpha: float = 2) -> float:
    """Mean distance between positive pairs:

    .. math::
        \\mathcal{L}_\\text{align} = \\frac{1}{n} \\sum_{i=1}^{n} \\lVert \\hat x_i - \\hat y_i \\rVert_2^{\\alpha}

    Ranges over ``[0, 2^alpha]``: 0 when each pair points the same way, ``2^alpha`` when antipodal.

    Args:
        x, y: ``[n, d]`` embeddings of the two views; row ``i`` of ``x`` pairs with row ``i`` of ``y``.
        alpha: exponent on the distance (default: 2, as in the paper).
    """
    if x.dim() != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must be 2-D with equal shapes (got {tuple(x.shape)} and {tuple(y.shape)})")
    if x.shape[0] == 0:
        raise ValueError("alignment needs at least one pair")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0 (got {alpha})")
    dist = (_unit_rows(x) - _unit_rows(y)).norm(dim=1)
    return float(dist.pow(alpha).mean().item())


@torch.no_grad()
def uniformity(
    x: Tensor, t: float = 2, max_samples: int | None = 4096, generator: torch.Generator | None = None
) -> float:
    """Log of the mean Gaussian potential over distinct pairs:

    .. math::
        \\mathcal{L}_\\text{uniform} = \\log \\frac{2}{m(m-1)} \\sum_{i<j} e^{-t \\lVert \\hat x_i - \\hat x_j \\rVert^2}

    Ranges over ``[-4t, 0]``: 0 when all rows coincide, ``-4t`` for two antipodal points. It is computed as a
    log-sum-exp over :func:`torch.pdist`, so it stays finite for well-spread embeddings.

    Args:
        x: ``[n, d]`` embeddings, ``n >= 2``.
        t: temperature of the Gaussian potential (default: 2, as in the paper).
        max_samples: when ``n`` exceeds it, only the rows ``x[torch.randperm(n, generator=generator)[:max_samples]]``
            are used, bounding memory to ``max_samples^2 / 2`` distances (default: 4096; ``None`` uses all rows).
        generator: CPU random generator for the subsample (default: torch's global one).
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be 2-D with at least 2 rows (got shape {tuple(x.shape)})")
    if t <= 0:
        raise ValueError(f"t must be > 0 (got {t})")
    n = x.shape[0]
    if max_samples is not None:
        if max_samples < 2:
            raise ValueError(f"max_samples must be >= 2 (got {max_samples})")
        if n > max_samples:
            idx = torch.randperm(n, generator=generator)[:max_samples]
            x = x[idx.to(x.device)]
    x = _unit_rows(x)
    sq = torch.pdist(x, p=2).pow(2)
    return float((torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel())).item())
