r"""The user-item bipartite graph and its symmetric normalised adjacency.

Users are nodes ``0..U-1`` and items ``U..U+I-1``; the adjacency is

.. math::
    \hat{\mathbf{A}} = \mathbf{D}^{-1/2} \mathbf{A} \mathbf{D}^{-1/2}, \qquad
    \mathbf{A} = \begin{pmatrix} \mathbf{0} & \mathbf{R} \\ \mathbf{R}^{\top} & \mathbf{0} \end{pmatrix},

with isolated nodes given zero rows (no NaN or inf).

Why ``torch.sparse`` CSR and not PyG's ``LGConv``: measured on CPU (2 shared cores, 2 threads, torch 2.13,
torch-geometric 2.8 without torch-sparse/pyg-lib) on a gowalla-sized random bipartite graph (29,858 users, 40,981
items, 810,128 edges, 1.62M non-zeros), dim 64, 3 layers, forward + backward, median (min) of 7 interleaved runs:

=======================================================  ===================
propagation                                               time
=======================================================  ===================
CSR ``spmm(adj, h, symmetric=True)`` (used here)          621 ms (601 ms)
CSR ``torch.sparse.mm``                                   1661 ms (1592 ms)
COO ``torch.sparse.mm``                                   1140 ms (954 ms)
PyG ``LGConv`` with the CSR tensor as ``adj_t``           1625 ms (1596 ms)
PyG ``LGConv`` with ``edge_index`` (gather/scatter)       4580 ms (4487 ms)
``build_graph`` (once per graph or augmented view)        513 ms (500 ms)
=======================================================  ===================

PyG's ``LGConv`` on a torch sparse tensor calls the same ``torch.sparse.mm``; its ``edge_index`` path is 3-4x
slower and stores ``[2E, D]`` messages per layer for backward. ``torch.sparse.mm``'s own backward spends about
over half its time transposing ``adj`` (a sort of all non-zeros per layer); ``adj`` is symmetric, so
:func:`~engine_graphcl.sparse.spmm` reuses it in the backward. Learned edge weights (DCCF's masks) go through
:class:`~engine_graphcl.sparse.LearnedAdjacency`: autograd through a CSR tensor's values would build a dense
``[N, N]`` gradient (out of memory at this size); with it a 2-layer DCCF step takes about 5 s and 1.6 GB here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from .sparse import LearnedAdjacency, edge_dot, spmm

__all__ = ["Graph", "LearnedAdjacency", "build_graph", "normalized_adjacency", "spmm"]

Normalization = Literal["symmetric", "row"]


def _directed_edges(users: Tensor, items: Tensor, num_users: int) -> tuple[Tensor, Tensor]:
    """Rows and columns of both directions: user -> item first, then item -> user."""
    items = items + num_users
    return torch.cat([users, items]), torch.cat([items, users])


def _normalised_values(
    row: Tensor, col: Tensor, weight: Tensor, num_nodes: int, normalization: Normalization = "symmetric"
) -> Tensor:
    """``w_rc / sqrt(d_r d_c)`` (or ``w_rc / d_r``) with weighted degrees; zero-degree nodes get ``0``, not ``inf``."""
    deg = torch.zeros(num_nodes, dtype=weight.dtype, device=weight.device).index_add(0, row, weight)
    if normalization == "row":
        return weight * deg.pow(-1.0).masked_fill(deg <= 0, 0.0)[row]
    inv_sqrt = deg.pow(-0.5).masked_fill(deg <= 0, 0.0)
    return inv_sqrt[row] * weight * inv_sqrt[col]


def _csr_structure(row: Tensor, col: Tensor, num_nodes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted unique ``(row, col)`` pairs as CSR ``crow_indices``/``col_indices`` plus each entry's slot."""
    keys, slot = torch.unique(row * num_nodes + col, sorted=True, return_inverse=True)
    counts = torch.bincount(keys // num_nodes, minlength=num_nodes)
    crow = torch.zeros(num_nodes + 1, dtype=torch.long, device=row.device)
    crow[1:] = torch.cumsum(counts, 0)
    return crow, keys % num_nodes, slot


def _transpose_perm(slot: Tensor, nnz: int) -> Tensor:
    """For a symmetric pattern built from both directions of ``E`` edges, the slot of each entry's transpose."""
    e, perm = slot.numel() // 2, torch.empty(nnz, dtype=torch.long, device=slot.device)
    perm[slot[:e]] = slot[e:]
    perm[slot[e:]] = slot[:e]
    return perm


def _csr(crow: Tensor, col: Tensor, slot: Tensor, values: Tensor, num_nodes: int) -> Tensor:
    nnz = col.numel()
    merged = torch.zeros(nnz, dtype=values.dtype, device=values.device).index_add(0, slot, values)
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state", once per process
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, merged, (num_nodes, num_nodes), check_invariants=False)


def _values(row: Tensor, col: Tensor, edge_weight: Tensor | None, dtype: torch.dtype | None, n: int) -> Tensor:
    """Symmetric-normalised values of the directed edges, from per-edge weights (default ones)."""
    if edge_weight is None:
        edge_weight = torch.ones(row.numel() // 2, dtype=dtype or torch.get_default_dtype(), device=row.device)
    elif dtype is not None:
        edge_weight = edge_weight.to(dtype)
    return _normalised_values(row, col, torch.cat([edge_weight, edge_weight]), n)


def normalized_adjacency(
    users: Tensor,
    items: Tensor,
    num_users: int,
    num_items: int,
    edge_weight: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""The symmetric normalised bipartite adjacency :math:`\mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}` (CSR).

    Duplicate edges are summed. For learned edge weights use :meth:`Graph.reweighted`, whose backward stays sparse.

    Args:
        users (LongTensor): user ids of the edges, ``[E]``.
        items (LongTensor): item ids of the edges, in ``[0, num_items)``, ``[E]``.
        num_users (int): number of users ``U``.
        num_items (int): number of items ``I``.
        edge_weight (Tensor, optional): non-negative weight per edge, ``[E]``. (default: ones)
        dtype (torch.dtype, optional): dtype of the values. (default: ``edge_weight``'s, else the default dtype)
    """
    n = num_users + num_items
    row, col = _directed_edges(users, items, num_users)
    crow, col_idx, slot = _csr_structure(row, col, n)
    return _csr(crow, col_idx, slot, _values(row, col, edge_weight, dtype, n), n)


@dataclass
class Graph:
    r"""A user-item bipartite graph with its normalised adjacency.

    Args:
        num_users (int): number of users ``U`` (nodes ``0..U-1``).
        num_items (int): number of items ``I`` (nodes ``U..U+I-1``).
        users (LongTensor): user id of each edge, ``[E]``.
        items (LongTensor): item id of each edge, in ``[0, I)``, ``[E]``.
        adj (Tensor): sparse CSR ``[N, N]``, :math:`\mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}`.
        edge_weight (Tensor, optional): weight of each edge, ``[E]``.
        slot (LongTensor, optional): position in ``adj.values()`` of each directed edge (user -> item edges, then
            item -> user), ``[2E]``; lets :meth:`reweighted` re-weight ``adj`` without sorting.
        transpose_perm (LongTensor, optional): ``adj.values()[transpose_perm]`` is the transpose, ``[nnz]``.
    """

    num_users: int
    num_items: int
    users: Tensor
    items: Tensor
    adj: Tensor
    edge_weight: Tensor | None = None
    slot: Tensor | None = None
    transpose_perm: Tensor | None = None

    @property
    def num_nodes(self) -> int:
        return self.num_users + self.num_items

    @property
    def num_edges(self) -> int:
        return self.users.numel()

    def to(self, device: torch.device | str) -> Graph:
        """A copy on ``device``."""

        def move(t):
            return None if t is None else t.to(device)

        return replace(
            self,
            users=move(self.users),
            items=move(self.items),
            adj=move(self.adj),
            edge_weight=move(self.edge_weight),
            slot=move(self.slot),
            transpose_perm=move(self.transpose_perm),
        )

    def subgraph(self, edge_mask: Tensor) -> Graph:
        """The graph of the edges where ``edge_mask`` ``[E]`` is true, freshly normalised (same nodes)."""
        weight = None if self.edge_weight is None else self.edge_weight[edge_mask]
        return build_graph(
            self.users[edge_mask], self.items[edge_mask], self.num_users, self.num_items, weight, self.adj.dtype
        )

    def _structure(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``crow``, ``col``, each directed edge's slot ``[2E]`` and the transpose permutation ``[nnz]``."""
        if self.slot is None:
            row, col = _directed_edges(self.users, self.items, self.num_users)
            crow, col_idx, slot = _csr_structure(row, col, self.num_nodes)
        else:
            crow, col_idx, slot = self.adj.crow_indices(), self.adj.col_indices(), self.slot
        perm = self.transpose_perm if self.slot is not None and self.transpose_perm is not None else None
        return crow, col_idx, slot, _transpose_perm(slot, col_idx.numel()) if perm is None else perm

    def edge_dot(self, x: Tensor) -> Tensor:
        """``<x[u], x[U + i]>`` for every edge ``(u, i)``, ``[E]``, from node features ``x`` ``[N, D]``.

        Differentiable, without the ``[E, D]`` gathers of ``(x[u] * x[i]).sum(-1)``: ``sampled_addmm`` forward,
        two sparse products backward.
        """
        crow, col, slot, perm = self._structure()
        return edge_dot(crow, col, slot[: self.num_edges], perm, x)

    def reweighted(self, edge_weight: Tensor, normalization: Normalization = "symmetric") -> LearnedAdjacency:
        """The adjacency of the same edges with weights ``edge_weight`` ``[E]``, normalised (differentiable).

        Args:
            edge_weight (Tensor): non-negative weight per edge, ``[E]``.
            normalization (str, optional): ``"symmetric"`` (:math:`D^{-1/2}AD^{-1/2}`) or ``"row"``
                (:math:`D^{-1}A`). (default: :obj:`"symmetric"`)
        """
        row, col = _directed_edges(self.users, self.items, self.num_users)
        values = _normalised_values(row, col, torch.cat([edge_weight, edge_weight]), self.num_nodes, normalization)
        crow, col_idx, slot, perm = self._structure()
        return LearnedAdjacency(crow, col_idx, values.new_zeros(col_idx.numel()).index_add(0, slot, values), perm)

    def __repr__(self) -> str:
        return f"Graph(num_users={self.num_users}, num_items={self.num_items}, num_edges={self.num_edges})"


def build_graph(
    users: Tensor,
    items: Tensor,
    num_users: int,
    num_items: int,
    edge_weight: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Graph:
    """Build a :class:`Graph` from its edges (vectorised; isolated nodes get zero rows).

    Args:
        users (LongTensor): user id of each edge, ``[E]``.
        items (LongTensor): item id of each edge, in ``[0, num_items)``, ``[E]``.
        num_users (int): number of users.
        num_items (int): number of items.
        edge_weight (Tensor, optional): weight of each edge, ``[E]``. (default: ones)
        dtype (torch.dtype, optional): dtype of ``adj``. (default: ``edge_weight``'s, else the default dtype)
    """
    users = torch.as_tensor(users, dtype=torch.long)
    items = torch.as_tensor(items, dtype=torch.long, device=users.device)
    if users.shape != items.shape or users.dim() != 1:
        raise ValueError(f"users and items must be 1-D of equal length, got {tuple(users.shape)}, {tuple(items.shape)}")
    if users.numel() and (int(users.min()) < 0 or int(users.max()) >= num_users):
        raise ValueError(f"user ids must lie in [0, {num_users})")
    if items.numel() and (int(items.min()) < 0 or int(items.max()) >= num_items):
        raise ValueError(f"item ids must lie in [0, {num_items})")
    n = num_users + num_items
    row, col = _directed_edges(users, items, num_users)
    crow, col_idx, slot = _csr_structure(row, col, n)
    adj = _csr(crow, col_idx, slot, _values(row, col, edge_weight, dtype, n), n)
    return Graph(num_users, num_items, users, items, adj, edge_weight, slot, _transpose_perm(slot, col_idx.numel()))
