"""One post-LayerNorm Transformer block with causal self-attention, as SASRec's RecBole and ICLRec code stack them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TransformerBlock", "causal_padding_mask"]


def causal_padding_mask(real: Tensor) -> Tensor:
    """Boolean attention mask ``[B, 1, L, L]`` for left-padded rows (``True`` = may attend).

    Query ``t`` attends to the real keys ``s <= t``, and always to itself. The diagonal keeps every row non-empty:
    padded queries (which the encoder zeroes afterwards) attend only to themselves instead of to nothing, which
    would give NaN (a key-padding mask combined with a causal mask on left padding leaves such rows empty). Real
    queries never see padded keys, so the output of a sequence does not depend on how much padding precedes it.

    Args:
        real (Tensor): ``[B, L]`` boolean, true on real (non-padding) positions.
    """
    L = real.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=real.device).tril()
    eye = torch.eye(L, dtype=torch.bool, device=real.device)
    return (causal & real.unsqueeze(1)).logical_or(eye).unsqueeze(1)


class TransformerBlock(nn.Module):
    r"""Multi-head self-attention and a position-wise feed-forward network, each followed by dropout, a residual
    connection and LayerNorm (post-LN, as in `"Attention Is All You Need" <https://arxiv.org/abs/1706.03762>`_ and
    the RecBole / ICLRec SASRec):

    .. math::
        \mathbf{H}' = \mathrm{LN}(\mathbf{H} + \mathrm{Drop}(\mathrm{MHA}(\mathbf{H}))), \qquad
        \mathbf{H}'' = \mathrm{LN}(\mathbf{H}' + \mathrm{Drop}(\mathbf{W}_2\,\mathrm{GELU}(\mathbf{W}_1 \mathbf{H}')))

    Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` with a boolean mask, which the
    ONNX exporter (``dynamo=True``) handles (a float mask does not export).

    Args:
        hidden_dim (int): model width ``D``.
        num_heads (int): attention heads (``D`` must be divisible by it).
        inner_dim (int): width of the feed-forward layer.
        dropout (float): dropout on the attention output and the feed-forward output.
        attn_dropout (float): dropout on the attention probabilities.
        layer_norm_eps (float, optional): LayerNorm epsilon. (default: :obj:`1e-12`, as RecBole and ICLRec)
    """

    def __init__(self, hidden_dim: int, num_heads: int, inner_dim: int, dropout: float, attn_dropout: float,
                 layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})")
        self.hidden_dim, self.num_heads = hidden_dim, num_heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.out = nn.Linear(hidden_dim, hidden_dim)
        self.norm1 = nn.LayerNorm(hidden_dim, eps=layer_norm_eps)
        self.ff1 = nn.Linear(hidden_dim, inner_dim)
        self.ff2 = nn.Linear(inner_dim, hidden_dim)
        self.norm2 = nn.LayerNorm(hidden_dim, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def attention(self, h: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:
        B, L, D = h.shape
        heads = self.num_heads
        if last_only:  # queries of the last position only; keys and values of every position
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(h[:, -1:], w[:D], b[:D]).view(B, 1, heads, D // heads).transpose(1, 2)
            k, v = F.linear(h, w[D:], b[D:]).view(B, L, 2, heads, D // heads).permute(2, 0, 3, 1, 4)
            mask = mask[:, :, -1:]
        else:
            q, k, v = self.qkv(h).view(B, L, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
        p = self.attn_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.out(a.transpose(1, 2).reshape(B, q.shape[2], D))

    def forward(self, h: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:
        """``h`` ``[B, L, D]``, ``mask`` ``[B, 1, L, L]`` boolean (see :func:`causal_padding_mask`) -> ``[B, L, D]``;
        with ``last_only``, the output of the last position only, ``[B, 1, D]`` (the same values, for a fraction of
        the work: the sequence's representation needs nothing else from the last block)."""
        x = h[:, -1:] if last_only else h
        x = self.norm1(x + self.dropout(self.attention(h, mask, last_only)))
        return self.norm2(x + self.dropout(self.ff2(F.gelu(self.ff1(x)))))
