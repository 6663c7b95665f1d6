"""Sparse products whose backward stays sparse: ``spmm`` and :class:`LearnedAdjacency`.

``torch.sparse.mm``'s backward transposes a CSR matrix (a sort of all ``nnz``, every call), and autograd through a
CSR tensor's ``values()`` builds a dense ``[N, N]`` gradient (20 GB at gowalla's size). The graphs here have a
symmetric pattern, so the transpose is a known permutation of the values, and the gradient with respect to the
values is a sampled product (``torch.sparse.sampled_addmm``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


class _CSRMatMul(torch.autograd.Function):
    """``A @ x`` for a square CSR ``A`` with a symmetric pattern; ``values[perm]`` are the values of ``A^T``
    (``perm=None``: ``A`` is symmetric). Unlike ``torch.sparse.mm``'s, the backward sorts nothing and stays
    ``O(nnz D)`` when the values need gradients."""

    @staticmethod
    def forward(ctx, crow: Tensor, col: Tensor, values: Tensor, perm: Tensor | None, x: Tensor) -> Tensor:
        ctx.save_for_backward(crow, col, values, perm, x)
        n = crow.numel() - 1
        return torch.sparse.mm(torch.sparse_csr_tensor(crow, col, values, (n, n), check_invariants=False), x)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        crow, col, values, perm, x = ctx.saved_tensors
        n, values = crow.numel() - 1, values.detach()
        grad_values = grad_x = None
        if ctx.needs_input_grad[2]:  # <grad_out[r], x[c]> on the pattern only
            pattern = torch.sparse_csr_tensor(crow, col, values, (n, n), check_invariants=False)
            grad_values = torch.sparse.sampled_addmm(pattern, grad_out.contiguous(), x.detach().T, beta=0.0).values()
        if ctx.needs_input_grad[4]:  # A^T @ grad_out: same pattern, values permuted
            t_values = values if perm is None else values[perm]
            adj_t = torch.sparse_csr_tensor(crow, col, t_values, (n, n), check_invariants=False)
            grad_x = torch.sparse.mm(adj_t, grad_out)
        return None, None, grad_values, None, grad_x


class _EdgeDot(torch.autograd.Function):
    """``<a[u], a[U + i]>`` per edge via ``sampled_addmm`` on the (symmetric) pattern; backward is two ``spmm``."""

    @staticmethod
    def forward(ctx, crow: Tensor, col: Tensor, slot_ui: Tensor, perm: Tensor, a: Tensor) -> Tensor:
        ctx.save_for_backward(crow, col, slot_ui, perm, a)
        n = crow.numel() - 1
        pattern = torch.sparse_csr_tensor(crow, col, a.new_zeros(col.numel()), (n, n), check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, a, a.T, beta=0.0).values()[slot_ui]

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        crow, col, slot_ui, perm, a = ctx.saved_tensors
        n = crow.numel() - 1
        g = grad_out.new_zeros(col.numel()).index_add(0, slot_ui, grad_out)  # on the user -> item entries
        s = torch.sparse_csr_tensor(crow, col, g, (n, n), check_invariants=False)
        s_t = torch.sparse_csr_tensor(crow, col, g[perm], (n, n), check_invariants=False)
        return None, None, None, None, torch.sparse.mm(s, a) + torch.sparse.mm(s_t, a)


@dataclass(frozen=True)
class LearnedAdjacency:
    """A normalised adjacency ``[N, N]`` on a graph's (symmetric) pattern whose values may need gradients.

    ``adj @ x``, ``torch.sparse.mm(adj, x)`` and :func:`spmm` all give ``A x`` with an ``O(nnz D)`` backward. (A
    CSR tensor with learned values would do too, but autograd through ``Tensor.values()`` materialises a dense
    ``[N, N]`` gradient: 20 GB at gowalla's size.)

    Args:
        crow (LongTensor): CSR row pointers, ``[N + 1]``.
        col (LongTensor): CSR column indices, ``[nnz]``.
        values (Tensor): ``[nnz]``.
        transpose_perm (LongTensor): ``values[transpose_perm]`` are the values of :math:`A^{\top}`, ``[nnz]``.
    """

    crow: Tensor
    col: Tensor
    values: Tensor
    transpose_perm: Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return (self.crow.numel() - 1,) * 2

    def matmul(self, x: Tensor) -> Tensor:
        return _CSRMatMul.apply(self.crow, self.col, self.values, self.transpose_perm, x)

    __matmul__ = matmul

    def to_dense(self) -> Tensor:
        """The dense matrix (differentiable; small graphs only)."""
        n = self.shape[0]
        rows = torch.repeat_interleave(torch.arange(n, device=self.col.device), self.crow[1:] - self.crow[:-1])
        return self.values.new_zeros(n, n).index_put((rows, self.col), self.values)

    def to_sparse_csr(self) -> Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, self.values, self.shape, check_invariants=False)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.sparse.mm, torch.mm, torch.matmul) and isinstance(args[0], cls) and not kwargs:
            return args[0].matmul(args[1])
        return NotImplemented


def spmm(adj: Tensor | LearnedAdjacency, x: Tensor, symmetric: bool = False) -> Tensor:
    """``adj @ x`` for a dense, COO, CSR or :class:`LearnedAdjacency` ``adj`` ``[N, M]`` and ``x`` ``[M, D]``.

    Args:
        adj (Tensor or LearnedAdjacency): the matrix.
        x (Tensor): the features.
        symmetric (bool, optional): a CSR ``adj`` equals its transpose (as :attr:`Graph.adj` does), so the
            backward reuses it instead of transposing (which sorts all ``nnz`` every call). (default: :obj:`False`)
    """
    if isinstance(adj, LearnedAdjacency):
        return adj.matmul(x)
    if adj.layout == torch.strided:
        return adj @ x
    if symmetric and adj.layout == torch.sparse_csr:
        return _CSRMatMul.apply(adj.crow_indices(), adj.col_indices(), adj.values(), None, x)
    return torch.sparse.mm(adj, x)


def edge_dot(crow: Tensor, col: Tensor, slot_ui: Tensor, perm: Tensor, x: Tensor) -> Tensor:
    """``<x[r], x[c]>`` at the pattern entries ``slot_ui`` of a symmetric CSR pattern (differentiable)."""
    return _EdgeDot.apply(crow, col, slot_ui, perm, x.contiguous())
