"""InfoNCE that never materialises the B x B similarity matrix: a custom autograd function over tiles."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from engine.components import Component, ComponentConfig, ObjectiveOutput

from .checks import check_pair
from .temperature import TemperatureMixin

__all__ = ["TiledInfoNCE", "tiled_infonce_loss"]


EPS = 1e-12  # the norm floor of F.normalize


def _block(x: Tensor, norms: Tensor | None, rows: slice, scale: Tensor | None = None) -> Tensor:
    """Rows ``x[rows]``, divided by their norms when given and multiplied by ``scale`` when given."""
    out = x[rows]
    if norms is not None:
        out = out / norms[rows, None]
    return out if scale is None else out * scale


def _normalize_backward_(grad: Tensor, x: Tensor, norms: Tensor, tile: int) -> None:
    """In place, block by block: the gradient through ``x / max(||x||, eps)`` of a gradient ``grad`` w.r.t. it."""
    for i0 in range(0, x.shape[0], tile):
        rows = slice(i0, i0 + tile)
        g, n = grad[rows], norms[rows, None]
        x_hat = x[rows] / n
        projection = (x_hat * g).sum(dim=1, keepdim=True) * (n > EPS)  # rows below the floor are just divided
        g.sub_(x_hat * projection).div_(n)


class _TiledInfoNCE(torch.autograd.Function):
    """Cross-entropy of the logits ``l = c * a_hat @ p_hat.T`` against the diagonal, one ``tile x tile`` block at once.

    ``a_hat``, ``p_hat`` are the rows of ``a``, ``p``, L2-normalised when ``normalize`` (recomputed per block, never
    stored), and ``c`` is the logit scale ``1 / tau`` (a 0-d tensor, differentiable). Forward keeps only the row
    (and, when symmetric, column) log-sum-exps, combined block by block with ``logaddexp`` (an online log-sum-exp).
    Backward recomputes each block of logits and accumulates ``G = dL/dl`` (``c0 * (softmax_row [+ softmax_col])``,
    minus ``1/B`` on the diagonal) into ``dL/da_hat = c G p_hat``, ``dL/dp_hat = c G^T a_hat`` and
    ``dL/dc = sum G * l / c``, then applies the normalisation's backward in place. Extra memory: the two gradients,
    O(B) vectors and a few ``tile x tile`` blocks.
    """

    @staticmethod
    def forward(ctx, a: Tensor, p: Tensor, scale: Tensor, tile: int, symmetric: bool,  # type: ignore[override]
                normalize: bool) -> Tensor:
        b = a.shape[0]
        c = scale.to(a.dtype)
        na = a.norm(dim=1).clamp_min(EPS) if normalize else None
        np_ = p.norm(dim=1).clamp_min(EPS) if normalize else None
        lse_row = a.new_full((b,), -math.inf)
        lse_col = a.new_full((b,), -math.inf) if symmetric else a.new_empty(0)
        diag = a.new_empty(b)
        for i0 in range(0, b, tile):
            rows = slice(i0, i0 + tile)
            a_i = _block(a, na, rows, c)
            diag[rows] = (a_i * _block(p, np_, rows)).sum(dim=1)
            for j0 in range(0, b, tile):
                cols = slice(j0, j0 + tile)
                s = a_i @ _block(p, np_, cols).T
                torch.logaddexp(lse_row[rows], torch.logsumexp(s, dim=1), out=lse_row[rows])
                if symmetric:
                    torch.logaddexp(lse_col[cols], torch.logsumexp(s, dim=0), out=lse_col[cols])
        loss = (lse_row - diag).mean()
        if symmetric:
            loss = (loss + (lse_col - diag).mean()) / 2
        ctx.save_for_backward(a, p, c, na, np_, lse_row, lse_col)
        ctx.tile, ctx.symmetric = tile, symmetric
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        a, p, c, na, np_, lse_row, lse_col = ctx.saved_tensors
        tile, symmetric = ctx.tile, ctx.symmetric
        need_c = ctx.needs_input_grad[2]
        b = a.shape[0]
        coef = grad / (2 * b) if symmetric else grad / b
        target = grad / b  # dL/dl_ii of the -l_ii terms (both directions together when symmetric)
        grad_a, grad_p = torch.zeros_like(a), torch.zeros_like(p)
        grad_c = torch.zeros((), dtype=a.dtype, device=a.device)
        for i0 in range(0, b, tile):
            rows = slice(i0, i0 + tile)
            a_hat = _block(a, na, rows)
            a_i = a_hat * c
            g_a = grad_a[rows]
            for j0 in range(0, b, tile):
                cols = slice(j0, j0 + tile)
                p_hat = _block(p, np_, cols)
                s = a_i @ p_hat.T
                w = torch.exp(s - lse_row[rows, None])
                if symmetric:
                    w.add_(torch.exp(s - lse_col[None, cols]))
                w.mul_(coef)
                if need_c:
                    grad_c += torch.dot(w.view(-1), s.view(-1))
                g_a.addmm_(w, p_hat)
                grad_p[cols].addmm_(w.T, a_hat)
            p_hat = _block(p, np_, rows)
            g_a.sub_(p_hat * target)
            grad_p[rows].sub_(a_hat * target)
            if need_c:
                grad_c -= target * c * (a_hat * p_hat).sum()
        grad_a.mul_(c)
        grad_p.mul_(c)
        if na is not None:
            _normalize_backward_(grad_a, a, na, tile)
            _normalize_backward_(grad_p, p, np_, tile)
        return grad_a, grad_p, (grad_c / c if need_c else None), None, None, None


def tiled_infonce_loss(anchor: Tensor, positive: Tensor, tile_size: int = 512, symmetric: bool = False,
                       scale: float | Tensor = 1.0, normalize: bool = False) -> Tensor:
    r"""Mean cross-entropy of the logits ``scale * anchor @ positive.T`` against the identity, in blocks.

    The same value and gradients as ``F.cross_entropy(scale * anchor @ positive.T, arange(B))`` (averaged with the
    transposed logits when ``symmetric``; rows L2-normalised first when ``normalize``), in
    :math:`O(B \cdot D + \text{tile}^2)` memory. ``scale`` (:math:`1/\tau`) may be a tensor that requires grad.
    """
    if tile_size < 1:
        raise ValueError(f"tiled_infonce_loss: tile_size must be >= 1 (got {tile_size})")
    if not isinstance(scale, Tensor):
        scale = torch.tensor(float(scale), dtype=anchor.dtype, device=anchor.device)
    return _TiledInfoNCE.apply(anchor, positive, scale, int(tile_size), bool(symmetric), bool(normalize))


class TiledInfoNCE(TemperatureMixin, nn.Module, Component):
    r"""InfoNCE with memory linear in the batch size: the :math:`B \times B` logits are never stored.

    The loss is that of :class:`~engine_objectives.InfoNCE` (one-sided, or CLIP's two-sided with ``symmetric``):

    .. math::
        \mathcal{L} = \frac{1}{B} \sum_{i=1}^{B} \Big( \log \sum_{j=1}^{B} e^{s_{ij} / \tau} - s_{ii} / \tau \Big)

    computed by a custom :class:`torch.autograd.Function`: forward combines the log-sum-exp of each
    ``tile_size x tile_size`` block of logits online; backward recomputes every block and accumulates
    :math:`\partial \mathcal{L} / \partial a` and :math:`\partial \mathcal{L} / \partial p` tile by tile. Peak extra
    memory is :math:`O(B D + \text{tile}^2)` instead of :math:`O(B^2)`, at the price of one more matrix product.
    Loss and gradients equal the dense ones up to float rounding. Not twice differentiable.

    Related: :class:`~engine_objectives.InfoNCE` (dense; also NT-Xent and a projection head),
    :func:`~engine_objectives.grad_cache.grad_cache` (large batches through the encoder).
    References: van den Oord et al., `Representation Learning with Contrastive Predictive Coding
    <https://arxiv.org/abs/1807.03748>`_ (2018); the online log-sum-exp is that of Milakov & Gimelshein, `Online
    normalizer calculation for softmax <https://arxiv.org/abs/1805.02867>`_ (2018); tiling the contrastive loss is
    studied by Cheng et al., `Breaking the Memory Barrier: Near Infinite Batch Size Scaling for Contrastive Loss
    <https://arxiv.org/abs/2410.17243>`_ (2024).

    Args:
        temperature (float, optional): :math:`\tau > 0`; the initial value when learnable. (default: :obj:`0.2`)
        normalize (bool, optional): L2-normalise rows first (cosine similarity). (default: :obj:`True`)
        symmetric (bool, optional): average both directions. (default: :obj:`False`)
        learnable_temperature (bool, optional): learn :math:`\log \tau` as a parameter. (default: :obj:`False`)
        tile_size (int, optional): rows and columns per block. (default: :obj:`512`)

    Shapes:
        - **input:** anchor :math:`(B, D)`, positive :math:`(B, D)`, finite floats
        - **output:** :class:`~engine.components.ObjectiveOutput` with a scalar ``loss`` and
          ``parts={"infonce": loss}``
    """

    name: ClassVar[str] = "tiled_infonce"

    class Config(ComponentConfig):
        """Options of :class:`TiledInfoNCE`."""

        temperature: float = Field(0.2, gt=0, description="softmax temperature tau (initial value if learnable)")
        normalize: bool = Field(True, description="L2-normalise embeddings first: cosine similarity")
        symmetric: bool = Field(False, description="average anchor->positive and positive->anchor losses")
        learnable_temperature: bool = Field(False, description="learn log(tau) as a parameter")
        tile_size: int = Field(512, ge=1, description="rows and columns of each block of logits")

    def __init__(
        self,
        temperature: float = 0.2,
        normalize: bool = True,
        symmetric: bool = False,
        learnable_temperature: bool = False,
        tile_size: int = 512,
    ) -> None:
        super().__init__()
        config = self.Config(temperature=temperature, normalize=normalize, symmetric=symmetric,
                             learnable_temperature=learnable_temperature, tile_size=tile_size)
        self.normalize, self.symmetric = config.normalize, config.symmetric
        self.learnable_temperature, self.tile_size = config.learnable_temperature, config.tile_size
        self._init_temperature(config.temperature, config.learnable_temperature)

    def get_config_dict(self) -> dict[str, Any]:
        """The options as a flat dict, for tracking (the temperature is the current one)."""
        return {"temperature": self.temperature, "normalize": self.normalize, "symmetric": self.symmetric,
                "learnable_temperature": self.learnable_temperature, "tile_size": self.tile_size}

    def forward(self, anchor: Tensor, positive: Tensor) -> ObjectiveOutput:
        check_pair(anchor, positive, "TiledInfoNCE")
        if self.log_temperature is not None:
            scale = torch.exp(-self.log_temperature)  # d loss / d scale comes from the function, then autograd
        else:
            scale = torch.tensor(1 / self._temperature, dtype=anchor.dtype, device=anchor.device)
        loss = tiled_infonce_loss(anchor, positive, self.tile_size, self.symmetric, scale, self.normalize)
        return ObjectiveOutput(loss=loss, parts={"infonce": loss})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.get_config_dict().items())
