"""Item-item correlation from training sequences (ItemCF-IUF over a co-occurrence window), for CoSeRec."""

from __future__ import annotations

import torch
from torch import Tensor

from ._batch import random_subset, ratio_count, real_mask


class ItemCorrelation:
    r"""The most correlated items of each item, ItemCF-IUF style, as in the offline similarity model of
    `"Contrastive Self-supervised Sequential Recommendation with Robust Augmentation"
    <https://arxiv.org/abs/2108.06479>`_ (Liu et al., 2021, CoSeRec).

    .. math::
        \mathrm{sim}(i, j) = \frac{\sum_{u:\, (i, j) \in P_u} 1 / \log(1 + |S_u|)}{\sqrt{N_i N_j}}

    where :math:`S_u` is the set of distinct items of training sequence :math:`u`, :math:`N_i` the number of
    sequences that contain :math:`i`, and :math:`P_u` the set of ordered pairs :math:`i \neq j` that occur in
    sequence :math:`u` at most ``window`` positions apart (each pair counted once per sequence, as CoSeRec's
    per-user item dictionaries do). ``window=None`` takes every pair of the sequence, which is exactly CoSeRec's
    ``ItemCF_IUF``; its cost grows with the squared sequence length, so the default looks at direct neighbours.

    Deviations from CoSeRec: it ensembles this model with an online one (cosine of the encoder's item embeddings,
    after a warm-up of 160 epochs) and offers Item2Vec; neither is implemented. Ties are broken towards the
    smaller item id. Items with no co-occurring item (and the padding id 0, and the mask id ``num_items + 1``) map to
    themselves with score 0.

    Everything is computed sparsely: the pairs are int64 keys made unique with ``torch.unique`` and summed with
    ``index_add_``, never a dense ``num_items x num_items`` matrix.

    Args:
        window (int, optional): largest distance between co-occurring positions, :math:`\geq 1`, or :obj:`None` for
            the whole sequence. (default: :obj:`1`)
        top_k (int, optional): number of neighbours kept per item. (default: :obj:`1`)
    """

    def __init__(self, window: int | None = 1, top_k: int = 1):
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None, got {window}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.window = window
        self.top_k = top_k
        self.num_items: int | None = None
        self.neighbours: Tensor | None = None  # [num_items + 2, top_k] item ids, best first
        self.scores: Tensor | None = None  # [num_items + 2, top_k] float64 similarities

    @property
    def fitted(self) -> bool:
        return self.neighbours is not None

    def fit(self, train_sequences: list[Tensor], num_items: int) -> "ItemCorrelation":
        """Compute the neighbour table from ``train_sequences`` (1-D item-id tensors; 0 entries are skipped)."""
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        V = num_items + 2  # ids 0..num_items + 1
        seqs = [s.reshape(-1).long().cpu() for s in train_sequences]
        seqs = [s[s != 0] for s in seqs]
        flat = torch.cat(seqs) if seqs else torch.zeros(0, dtype=torch.long)
        if flat.numel() and (int(flat.min()) < 1 or int(flat.max()) > num_items):
            raise ValueError(f"training item ids must lie in [1, num_items] = [1, {num_items}] (0 is padding)")
        lens = torch.tensor([s.numel() for s in seqs], dtype=torch.long)
        U = len(seqs)
        if U * V * V >= 2**62:
            raise ValueError(f"too many sequences x items for int64 pair keys ({U} x {V}^2)")
        user = torch.repeat_interleave(torch.arange(U), lens)

        # N_i (sequences containing i) and the IUF weight 1 / log(1 + |S_u|) of each sequence
        pairs_ui = torch.unique(user * V + flat)
        N = torch.bincount(pairs_ui % V, minlength=V).to(torch.float64)
        distinct = torch.bincount(pairs_ui // V, minlength=U).to(torch.float64)
        iuf = 1.0 / torch.log1p(distinct.clamp(min=1))

        # distinct (u, i, j) with i != j at most `window` apart, both orders
        max_d = int(lens.max()) - 1 if U else 0
        max_d = max_d if self.window is None else min(self.window, max_d)
        triples = []
        for d in range(1, max_d + 1):
            same = user[:-d] == user[d:]
            u, a, b = user[:-d][same], flat[:-d][same], flat[d:][same]
            keep = a != b
            u, a, b = u[keep], a[keep], b[keep]
            triples.append(torch.unique(torch.cat([(u * V + a) * V + b, (u * V + b) * V + a])))
        if len(triples) == 1:
            keys = triples[0]
        else:
            keys = torch.unique(torch.cat(triples)) if triples else torch.zeros(0, dtype=torch.long)
        u, ij = keys // (V * V), keys % (V * V)

        pair, inverse = torch.unique(ij, return_inverse=True)  # sorted by (i, j)
        co = torch.zeros(pair.numel(), dtype=torch.float64).index_add_(0, inverse, iuf[u])
        i, j = pair // V, pair % V
        score = co / torch.sqrt(N[i] * N[j])

        # per i: score descending, then j ascending (pair is already j-ascending within i; sorts are stable)
        order = torch.argsort(-score, stable=True)
        order = order[torch.argsort(i[order], stable=True)]
        i, j, score = i[order], j[order], score[order]
        starts = torch.zeros(V + 1, dtype=torch.long)
        starts[1:] = torch.cumsum(torch.bincount(i, minlength=V), 0)
        rank = torch.arange(i.numel()) - starts[i]
        top = rank < self.top_k

        neighbours = torch.arange(V).unsqueeze(1).repeat(1, self.top_k)
        scores = torch.zeros(V, self.top_k, dtype=torch.float64)
        neighbours[i[top], rank[top]] = j[top]
        scores[i[top], rank[top]] = score[top]
        self.num_items, self.neighbours, self.scores = num_items, neighbours, scores
        return self

    def most_similar(self, items: Tensor) -> Tensor:
        """The top-1 correlated item of each entry of ``items`` (any shape, ids in ``[0, num_items + 1]``)."""
        if self.neighbours is None:
            raise RuntimeError("ItemCorrelation.fit(train_sequences, num_items) must be called first")
        table = self.neighbours[:, 0]
        if table.device != items.device:
            self.neighbours, self.scores = self.neighbours.to(items.device), self.scores.to(items.device)
            table = self.neighbours[:, 0]
        # index_select: advanced indexing (table[items]) is ~500x slower here on CPU for a [256, 50] batch
        return table.index_select(0, items.reshape(-1)).view(items.shape)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(window={self.window}, top_k={self.top_k})"



class CorrelationFitted:
    """Base of the augmenters that change a ``rate`` of each sequence's items using an :class:`ItemCorrelation`
    fitted by :meth:`fit` (CoSeRec's insert and substitute)."""

    correlation: ItemCorrelation

    def __init__(self, rate: float, window: int | None = 1) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"rate must lie in (0, 1], got {rate}")
        self.rate = rate
        self.correlation = ItemCorrelation(window=window)

    def choose(self, seqs: Tensor, lengths: Tensor, generator: torch.Generator | None):
        """``(n, real, m, chosen)``: lengths, the real-item mask, ``max(1, floor(rate * n))`` per non-empty row, and
        a uniform subset of that many real positions per row."""
        n = lengths.long()
        real = real_mask(n, seqs.size(1))
        m = torch.where(n > 0, ratio_count(n, self.rate).clamp(min=1), 0)
        return n, real, m, random_subset(real, m, generator)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(rate={self.rate}, window={self.correlation.window})"

    def fit(self, train_sequences: list[Tensor], num_items: int) -> None:
        """Fit the item correlation on the training sequences; called once by the task before augmenting."""
        self.correlation.fit(train_sequences, num_items)

    def most_similar(self, items: Tensor) -> Tensor:
        if not self.correlation.fitted:
            raise RuntimeError(
                f"{type(self).__name__}.fit(train_sequences, num_items) must be called before augmenting: "
                "it computes the item correlation from the training sequences"
            )
        return self.correlation.most_similar(items)
