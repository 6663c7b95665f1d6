"""SASRec: a causal Transformer over the item sequence, scored against its own (tied) item embeddings."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig

from .transformer import TransformerBlock, causal_padding_mask

__all__ = ["SASRec"]


class SASRec(nn.Module, Component):
    r"""SASRec from `"Self-Attentive Sequential Recommendation" <https://arxiv.org/abs/1808.09781>`_ (Kang &
    McAuley, ICDM 2018), in the variant of RecBole and ICLRec that CL4SRec, DuoRec, ICLRec and MCLRec build on.

    For a left-padded sequence :math:`s = [v_1, \dots, v_L]` (padding id 0):

    .. math::
        \mathbf{H}^{(0)} = \mathrm{Drop}(\mathrm{LN}(\mathbf{E}_{v_t} + \mathbf{P}_t)) \odot \mathbf{m}, \qquad
        \mathbf{H}^{(l)} = \mathrm{Block}(\mathbf{H}^{(l-1)}) \odot \mathbf{m}

    where :math:`\mathbf{m}_t = [v_t \neq 0]` is the timeline mask (padded positions are zeroed) and each block is a
    :class:`~engine_seqrec.transformer.TransformerBlock` whose attention is causal and ignores padded keys. The score
    of item :math:`i` after position :math:`t` is :math:`\mathbf{H}^{(L)}_t \cdot \mathbf{E}_i` with the same item
    table (tied weights, as SASRec, CL4SRec and DuoRec score).

    Positions are counted from the right: the most recent item always has position ``max_len - 1``, so a sequence
    gives the same output whatever the width it is padded to (up to ``max_len``). Item table rows: ``0`` padding
    (kept at zero), ``1..num_items`` items, ``num_items + 1`` the mask token of sequence augmenters.

    Defaults are the CL4SRec / DuoRec / ICLRec settings for Amazon Beauty and Sports (RecBole's SASRec defaults too):
    ``D = 64``, 2 layers, 2 heads, inner size 256, GELU, dropout 0.5 on hidden states and on attention
    probabilities, LayerNorm epsilon 1e-12, weights drawn from :math:`\mathcal{N}(0, 0.02^2)`. Kang & McAuley's
    original used ``D = 50``, one head, dropout 0.5 on Beauty and a binary loss with one negative.

    Args:
        num_items (int): number of items; ids ``1..num_items``.
        max_len (int): longest input sequence ``L`` (positions learned). (default: :obj:`50`)
        hidden_dim (int, optional): width ``D``. (default: :obj:`64`)
        num_layers (int, optional): Transformer blocks. (default: :obj:`2`)
        num_heads (int, optional): attention heads. (default: :obj:`2`)
        inner_dim (int, optional): feed-forward width. (default: :obj:`256`)
        dropout (float, optional): dropout on embeddings and hidden states. (default: :obj:`0.5`)
        attn_dropout (float, optional): dropout on attention probabilities. (default: :obj:`0.5`)
    """

    name: ClassVar[str] = "sasrec"

    class Config(ComponentConfig):
        hidden_dim: int = Field(64, ge=1, description="width D of item embeddings and hidden states")
        num_layers: int = Field(2, ge=1, description="number of Transformer blocks")
        num_heads: int = Field(2, ge=1, description="attention heads (hidden_dim must be divisible by it)")
        inner_dim: int = Field(256, ge=1, description="feed-forward width")
        dropout: float = Field(0.5, ge=0, lt=1, description="dropout on embeddings and hidden states")
        attn_dropout: float = Field(0.5, ge=0, lt=1, description="dropout on attention probabilities")

    def __init__(self, num_items: int, max_len: int = 50, hidden_dim: int = 64, num_layers: int = 2,
                 num_heads: int = 2, inner_dim: int = 256, dropout: float = 0.5, attn_dropout: float = 0.5) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})")
        self.num_items, self.max_len = num_items, max_len
        self.hidden_dim, self.num_layers, self.num_heads = hidden_dim, num_layers, num_heads
        self.item_embedding = nn.Embedding(num_items + 2, hidden_dim, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_dim, num_heads, inner_dim, dropout, attn_dropout) for _ in range(num_layers)
        )
        self.reset_parameters()

    @property
    def embedding_dim(self) -> int:
        return self.hidden_dim

    def reset_parameters(self) -> None:
        """Linear and embedding weights from N(0, 0.02²), biases 0, LayerNorm (1, 0), padding row 0 (RecBole)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def forward(self, seqs: Tensor, item_input: Tensor | None = None) -> Tensor:
        """Hidden states of every position: ``seqs`` ``LongTensor [B, L]`` (left-padded, ``L <= max_len``) ->
        ``[B, L, D]``, zero on padded positions. ``item_input`` ``[num_items + 2, D]`` (item content, rows 0 and
        ``num_items + 1`` zero) is added to the item embeddings."""
        return self._hidden(seqs, last_only=False, item_input=item_input)

    def encode(self, seqs: Tensor, item_input: Tensor | None = None) -> Tensor:
        """The representation of each sequence: the hidden state of its last (most recent) position, ``[B, D]``.
        Equal to ``forward(seqs)[:, -1]``; the last block computes that position alone."""
        return self._hidden(seqs, last_only=True, item_input=item_input)[:, -1]

    def _hidden(self, seqs: Tensor, last_only: bool, item_input: Tensor | None = None) -> Tensor:
        B, L = seqs.shape
        if L > self.max_len:
            raise ValueError(f"sequences of width {L} exceed max_len {self.max_len}; keep the most recent items")
        real = seqs > 0
        keep = real.unsqueeze(-1).to(self.item_embedding.weight.dtype)
        positions = torch.arange(self.max_len - L, self.max_len, device=seqs.device)
        items = self.item_embedding(seqs) if item_input is None else self.item_embedding(seqs) + item_input[seqs]
        h = items + self.position_embedding(positions).unsqueeze(0)
        h = self.dropout(self.norm(h)) * keep
        mask = causal_padding_mask(real)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if last_only and i == last:
                return block(h, mask, last_only=True) * keep[:, -1:]
            h = block(h, mask) * keep
        return h

    def item_embeddings(self, item_input: Tensor | None = None) -> Tensor:
        """Rows ``0..num_items`` of the item table, ``[num_items + 1, D]`` (row 0 is padding), used for scoring;
        plus ``item_input``'s rows when given."""
        table = self.item_embedding.weight[: self.num_items + 1]
        return table if item_input is None else table + item_input[: self.num_items + 1]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.num_items}, max_len={self.max_len}, dim={self.hidden_dim}, "
                f"num_layers={self.num_layers}, num_heads={self.num_heads})")
