"""Field encoders for categorical and numeric values.

* ``categorical``: the normalised value hashed (CRC-32) into ``1..num_buckets-1``, one embedding per bucket; a
  missing value is absent.
* ``multi_categorical``: a set of tokens (genres, attribute ids, tags: ``"Action Comedy"``, ``"3|17|42"``), each
  token hashed like a category; the field vector is the mean of the tokens' embeddings. No token: absent.
* ``numeric``: the first number in the value, signed-log scaled (``sign(x) log(1 + |x|)``), standardised with the
  statistics of the training records (buffers, so they export), expanded into fixed sinusoidal features
  (:math:`\\sin(2^k z), \\cos(2^k z)`: the dot product of two encodings is a smooth function of their difference)
  and projected. Text that holds no number is missing.
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

from .char_ngram import bag_mean, hash_ngrams, normalize_text, padded_ids

__all__ = ["CategoricalEncoder", "MultiCategoricalEncoder", "NumericEncoder", "parse_number"]

_NUMBER = re.compile(r"[-+]?(?:\d+(?:[.,]\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def parse_number(value: str | None) -> float | None:
    """The first number in ``value`` (thousands separators removed: ``"$1,299.00"`` -> 1299.0); None if none."""
    if value is None:
        return None
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", str(value))
    m = _NUMBER.search(text)
    if m is None:
        return None
    try:
        return float(m.group().replace(",", "."))
    except ValueError:
        return None


class CategoricalEncoder(nn.Module, Component):
    """A hashed embedding of the whole (normalised) value."""

    name: ClassVar[str] = "categorical"
    input_kind: ClassVar[str] = "ids"

    class Config(ComponentConfig):
        num_buckets: int = Field(1 << 14, ge=2, description="hash buckets")

    def __init__(self, dim: int = 64, num_buckets: int = 1 << 14) -> None:
        super().__init__()
        self.dim, self.num_buckets = dim, num_buckets
        self.embedding = nn.Embedding(num_buckets, dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def featurize(self, values: Sequence[str | None]) -> np.ndarray:
        out = np.zeros((len(values), 1), dtype=np.int64)
        for i, v in enumerate(values):
            text = normalize_text(v)
            if text:
                out[i, 0] = zlib.crc32(text.encode("utf-8")) % (self.num_buckets - 1) + 1
        return out

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        return self.embedding(ids[:, 0]), ids[:, 0] > 0


class MultiCategoricalEncoder(nn.Module, Component):
    """The mean of hashed embeddings of a value's distinct tokens."""

    name: ClassVar[str] = "multi_categorical"
    input_kind: ClassVar[str] = "ids"

    class Config(ComponentConfig):
        num_buckets: int = Field(1 << 14, ge=2, description="hash buckets")
        separator: str | None = Field(None, description="token separator (regular expression); default: "
                                                        "whitespace, comma, semicolon or pipe")
        max_tokens: int = Field(64, ge=1, description="keep at most this many distinct tokens per value")

    def __init__(self, dim: int = 64, num_buckets: int = 1 << 14, separator: str | None = None,
                 max_tokens: int = 64) -> None:
        super().__init__()
        self.dim, self.num_buckets, self.separator, self.max_tokens = dim, num_buckets, separator, max_tokens
        self._split = re.compile(separator if separator is not None else r"[\s,;|]+")
        self.embedding = nn.Embedding(num_buckets, dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def get_config_dict(self) -> dict[str, Any]:
        return {"num_buckets": self.num_buckets, "separator": self.separator, "max_tokens": self.max_tokens}

    def tokens(self, value: str | None) -> list[str]:
        """The distinct normalised tokens of ``value``, in order of first appearance."""
        text = normalize_text(value)
        tokens = (t.strip() for t in self._split.split(text)) if text else ()
        return list(dict.fromkeys(t for t in tokens if t))[: self.max_tokens]

    def featurize(self, values: Sequence[str | None]) -> np.ndarray:
        return padded_ids([hash_ngrams(self.tokens(v), self.num_buckets) for v in values])

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        return bag_mean(self.embedding, ids)


class NumericEncoder(nn.Module, Component):
    """Signed-log, standardised, sinusoidal features of a number, projected."""

    name: ClassVar[str] = "numeric"
    input_kind: ClassVar[str] = "values"

    class Config(ComponentConfig):
        num_frequencies: int = Field(6, ge=1, description="sinusoid frequencies 2^0 .. 2^(n-1)")

    def __init__(self, dim: int = 64, num_frequencies: int = 6) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))
        self.register_buffer("freqs", 2.0 ** torch.arange(num_frequencies, dtype=torch.float32))
        self.proj = nn.Linear(2 * num_frequencies, dim)

    @staticmethod
    def transform(values: Sequence[str | None]) -> np.ndarray:
        """``float32 [N, 2]``: (signed-log value, present)."""
        out = np.zeros((len(values), 2), dtype=np.float32)
        for i, v in enumerate(values):
            x = parse_number(v)
            if x is not None and np.isfinite(x):
                out[i] = (np.sign(x) * np.log1p(abs(x)), 1.0)
        return out

    def fit(self, values: Sequence[str | None]) -> None:
        x = self.transform(values)
        present = x[:, 1] > 0
        if present.any():
            self.mean.fill_(float(x[present, 0].mean()))
            self.std.fill_(float(max(x[present, 0].std(), 1e-3)))

    def featurize(self, values: Sequence[str | None]) -> np.ndarray:
        return self.transform(values)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = ((x[:, :1] - self.mean) / self.std) * self.freqs
        return self.proj(torch.cat([torch.sin(z), torch.cos(z)], dim=1)), x[:, 1] > 0
