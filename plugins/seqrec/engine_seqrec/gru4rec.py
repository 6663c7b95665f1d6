"""GRU4Rec: a GRU over the item sequence, projected back to the item embedding space for tied scoring."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig

__all__ = ["GRU4Rec"]


class GRU4Rec(nn.Module, Component):
    r"""GRU4Rec from `"Session-based Recommendations with Recurrent Neural Networks"
    <https://arxiv.org/abs/1511.06939>`_ (Hidasi et al., ICLR 2016), in RecBole's form (embedding, dropout, GRU
    without biases, a linear map to the embedding size):

    .. math::
        \mathbf{g}_t = \mathrm{GRU}(\mathrm{Drop}(\mathbf{E}_{v_t}), \mathbf{g}_{t-1}), \qquad
        \mathbf{h}_t = \mathbf{W} \mathbf{g}_t \odot [v_t \neq 0]

    and item :math:`i` scores :math:`\mathbf{h}_t \cdot \mathbf{E}_i` with the same table (tied). Because the GRU
    has no biases and the padding embedding is zero, leading padding leaves the state at zero: a left-padded
    sequence encodes the same whatever its padding.

    Args:
        num_items (int): number of items; ids ``1..num_items`` (row ``num_items + 1`` is the mask token).
        max_len (int, optional): longest input sequence (checked only). (default: :obj:`50`)
        embedding_dim (int, optional): item embedding size ``D``. (default: :obj:`64`)
        hidden_dim (int, optional): GRU state size. (default: :obj:`128`)
        num_layers (int, optional): stacked GRU layers. (default: :obj:`1`)
        dropout (float, optional): dropout on the item embeddings. (default: :obj:`0.3`)
    """

    name: ClassVar[str] = "gru4rec"

    class Config(ComponentConfig):
        embedding_dim: int = Field(64, ge=1, description="item embedding size D (the output size)")
        hidden_dim: int = Field(128, ge=1, description="GRU state size")
        num_layers: int = Field(1, ge=1, description="stacked GRU layers")
        dropout: float = Field(0.3, ge=0, lt=1, description="dropout on the item embeddings")

    def __init__(self, num_items: int, max_len: int = 50, embedding_dim: int = 64, hidden_dim: int = 128,
                 num_layers: int = 1, dropout: float = 0.3) -> None:
        super().__init__()
        self.num_items, self.max_len = num_items, max_len
        self.hidden_dim, self.num_layers = hidden_dim, num_layers
        self.item_embedding = nn.Embedding(num_items + 2, embedding_dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(embedding_dim, hidden_dim, num_layers, bias=False, batch_first=True)
        self.proj = nn.Linear(hidden_dim, embedding_dim)
        self.reset_parameters()

    @property
    def embedding_dim(self) -> int:
        return self.item_embedding.embedding_dim

    def reset_parameters(self) -> None:
        """Xavier-normal embeddings and projection, Xavier-uniform GRU weights (RecBole), padding row 0."""
        nn.init.xavier_normal_(self.item_embedding.weight)
        for weight in self.gru.parameters():
            nn.init.xavier_uniform_(weight)
        nn.init.xavier_normal_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def forward(self, seqs: Tensor) -> Tensor:
        """``seqs`` ``LongTensor [B, L]`` (left-padded) -> ``[B, L, D]``, zero on padded positions."""
        if seqs.shape[1] > self.max_len:
            raise ValueError(f"sequences of width {seqs.shape[1]} exceed max_len {self.max_len}")
        keep = (seqs > 0).unsqueeze(-1).to(self.item_embedding.weight.dtype)
        g, _ = self.gru(self.dropout(self.item_embedding(seqs)) * keep)
        return self.proj(g) * keep

    def encode(self, seqs: Tensor) -> Tensor:
        """The last (most recent) position's output, ``[B, D]``."""
        return self.forward(seqs)[:, -1]

    def item_embeddings(self) -> Tensor:
        """Rows ``0..num_items`` of the item table, ``[num_items + 1, D]`` (row 0 is padding)."""
        return self.item_embedding.weight[: self.num_items + 1]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.num_items}, dim={self.embedding_dim}, hidden={self.hidden_dim}, "
                f"num_layers={self.num_layers})")
