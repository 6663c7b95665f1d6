"""A character n-gram field encoder trained from scratch: hashed n-grams, a mean-pooled embedding bag, a projection.

Featurisation (outside the graph, deterministic across processes): the value is lower-cased, whitespace collapsed,
cut into its words when ``words`` is set, then wrapped in ``#`` and cut into its character n-grams (``n`` in
``ngram_sizes``); each distinct n-gram is hashed with CRC-32 into ``1..num_buckets-1`` (0 is padding). A field becomes an
``int64 [N, L]`` matrix, right-padded with 0, at most ``max_ngrams`` ids per value.

Encoding (the graph): :math:`h = W \\cdot \\frac{1}{|S|}\\sum_{g \\in S} E_g`, the mean of the embeddings of the
value's n-gram set (an ``EmbeddingBag`` in mean mode written as a masked mean over the padded ids, so it exports to
ONNX), then a linear projection without bias. A value with no n-gram (missing) is reported absent.

Reference: the hashed subword bags of fastText (Bojanowski et al., `Enriching Word Vectors with Subword Information
<https://arxiv.org/abs/1607.04606>`_, TACL 2017).
"""

from __future__ import annotations

import re
import zlib
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig

__all__ = ["CharNgramEncoder", "char_ngrams", "hash_ngrams"]

_SPACE = re.compile(r"\s+")


def normalize_text(value: str | None, lowercase: bool = True) -> str:
    if value is None:
        return ""
    value = _SPACE.sub(" ", str(value)).strip()
    return value.lower() if lowercase else value


def char_ngrams(text: str, sizes: Sequence[int] = (3,), words: bool = False) -> list[str]:
    """The distinct words of ``text`` (prefixed ``w:``, when ``words``) then n-grams of ``#text#``, in order of first
    appearance (words first: a cap on the count keeps the most discriminative tokens, model numbers...)."""
    if not text:
        return []
    padded = f"#{text}#"
    out: dict[str, None] = {}
    if words:
        for w in text.split(" "):
            out[f"w:{w}"] = None
    for n in sizes:
        if len(padded) <= n:
            out[padded] = None
        for i in range(len(padded) - n + 1):
            out[padded[i:i + n]] = None
    return list(out)


def hash_ngrams(grams: Sequence[str], num_buckets: int) -> list[int]:
    """CRC-32 of each n-gram into ``1..num_buckets-1`` (stable across processes, unlike ``hash``)."""
    return [zlib.crc32(g.encode("utf-8")) % (num_buckets - 1) + 1 for g in grams]


def padded_ids(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """``int64 [N, L]``: each row's ids, right-padded with 0 (``L`` the longest row, at least 1)."""
    out = np.zeros((len(rows), max(1, max((len(r) for r in rows), default=1))), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def bag_mean(embedding: nn.Embedding, ids: Tensor) -> tuple[Tensor, Tensor]:
    """The mean embedding of each row's non-zero ids ``[B, L]`` -> (``[B, D]``, present ``[B]`` bool); written as a
    masked mean rather than an ``EmbeddingBag`` so that it exports to ONNX."""
    mask = (ids > 0).unsqueeze(-1).to(embedding.weight.dtype)
    count = mask.sum(1)
    return (embedding(ids) * mask).sum(1) / count.clamp(min=1.0), count.squeeze(-1) > 0


class CharNgramEncoder(nn.Module, Component):
    """Hashed character n-grams -> mean embedding -> linear projection; for CPU-scale linkage."""

    name: ClassVar[str] = "char_ngram"
    input_kind: ClassVar[str] = "ids"

    class Config(ComponentConfig):
        num_buckets: int = Field(1 << 17, ge=2, description="hash buckets (rows of the embedding table)")
        ngram_sizes: list[int] = Field(default_factory=lambda: [3], description="character n-gram lengths")
        words: bool = Field(True, description="also hash whole words")
        max_ngrams: int = Field(256, ge=1, description="keep at most this many distinct n-grams per value")
        lowercase: bool = True
        projection: bool = Field(True, description="a linear layer after the mean")

    def __init__(self, dim: int = 64, num_buckets: int = 1 << 17, ngram_sizes: Sequence[int] = (3,),
                 words: bool = True, max_ngrams: int = 256, lowercase: bool = True, projection: bool = True) -> None:
        super().__init__()
        if any(n < 1 for n in ngram_sizes) or not ngram_sizes:
            raise ValueError(f"ngram_sizes must be positive lengths (got {list(ngram_sizes)})")
        self.dim, self.num_buckets, self.ngram_sizes = dim, num_buckets, tuple(ngram_sizes)
        self.words, self.max_ngrams, self.lowercase = words, max_ngrams, lowercase
        self.embedding = nn.Embedding(num_buckets, dim, padding_idx=0)
        self.proj = nn.Linear(dim, dim, bias=False) if projection else nn.Identity()  # a bias would dominate
        # the mean of many random n-gram vectors (its norm shrinks as 1/sqrt(|S|)) and make every value alike
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        if isinstance(self.proj, nn.Linear):
            self.proj.reset_parameters()

    def get_config_dict(self) -> dict[str, Any]:
        return {"num_buckets": self.num_buckets, "ngram_sizes": list(self.ngram_sizes), "words": self.words,
                "max_ngrams": self.max_ngrams, "lowercase": self.lowercase}

    def featurize(self, values: Sequence[str | None]) -> np.ndarray:
        """``int64 [N, L]``: the hashed n-gram ids of each value, 0-padded (``L`` the longest, capped)."""
        return padded_ids([hash_ngrams(char_ngrams(normalize_text(v, self.lowercase), self.ngram_sizes, self.words)
                                       [: self.max_ngrams], self.num_buckets) for v in values])

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """``ids [B, L]`` -> (vectors ``[B, D]``, present ``[B]`` bool)."""
        mean, present = bag_mean(self.embedding, ids)
        return self.proj(mean), present

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_buckets={self.num_buckets}, ngram_sizes={list(self.ngram_sizes)}, words={self.words}"
