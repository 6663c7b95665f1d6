"""A cross-encoder re-ranker: a pretrained transformer reads both records of a pair at once and scores the match.

Ditto (Li et al., VLDB 2021, https://arxiv.org/abs/2004.00584) and ClinLinker's retrieve-then-rerank fine-tune a
transformer on serialised pairs; a bi-encoder cannot compare tokens across the two records, a cross-encoder does.
Here the bi-encoder still blocks (candidates from the ANN index) and the cross-encoder scores the candidates.

Each record is serialised as ``field: value | field: value ...`` (missing values left out, fields in schema order);
the pair is the tokenizer's sentence pair ``[CLS] left [SEP] right [SEP]``, truncated to ``max_length`` tokens
(longest side first). The model (``AutoModelForSequenceClassification`` with one logit; its classification head is
new) is a packaged model's name (``all-MiniLM-L6-v2``, the default, or ``all-mpnet-base-v2``: see
:mod:`engine_linkage.pretrained`) or any local Hugging Face encoder folder. Nothing is downloaded
(``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import os
from typing import Sequence

from pydantic import AliasChoices, Field
from torch import Tensor, nn

from engine.components import ComponentConfig
from engine.errors import ConfigError

from .pretrained import resolve_model

__all__ = ["CrossEncoder", "CrossEncoderConfig", "cross_fields", "serialize_records", "tokenize_pairs",
           "INPUT_NAMES"]

#: the tokenizer outputs the exported graph takes, in order
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class CrossEncoderConfig(ComponentConfig):
    model: str | None = Field(None, validation_alias=AliasChoices("model", "model_path"),
                              description="a packaged model (all-MiniLM-L6-v2, all-mpnet-base-v2: extras minilm, mpnet) "
                                          "or a local Hugging Face encoder folder; default: all-MiniLM-L6-v2 "
                                          "(`model_path` is accepted as the old name)")
    max_length: int = Field(128, ge=8, description="tokens per pair (both records)")
    lr: float = Field(3e-5, gt=0, description="learning rate of the cross-encoder (its own optimiser)")
    weight_decay: float = Field(0.0, ge=0, description="weight decay of its optimiser (train.optimizer: with "
                                                        "'adam' an L2 term, which pulls the pretrained weights to 0)")
    batch_size: int = Field(16, ge=1, description="pairs per cross-encoder update")
    epochs: int = Field(3, ge=1, description="it is trained in the first `epochs` epochs, then frozen")
    fields: list[str] | None = Field(None, description="fields serialised (default: every non-image field)")
    hard_negatives: int = Field(0, ge=0, description="negatives per train record mined from the blocking index each "
                                                     "epoch, as model.rerank's (shared with it: the larger count)")


def serialize_records(columns: dict[str, list[str | None]]) -> list[str]:
    """``{field: values}`` -> one ``field: value | ...`` string per record (missing values left out)."""
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    return [" | ".join(f"{f}: {columns[f][i]}" for f in names if columns[f][i] is not None) for i in range(n)]


def cross_fields(schema: dict[str, str], chosen: list[str] | None) -> list[str]:
    """The fields serialised: ``chosen`` (``model.cross_encoder.fields``), or every non-image field of ``schema``
    (``{field: modality}``)."""
    usable = [f for f, kind in schema.items() if kind != "image"]
    names = list(chosen) if chosen is not None else usable
    unknown = [f for f in names if f not in usable]
    if unknown or not names:
        raise ConfigError(f"model.cross_encoder.fields: {unknown or names} not serialisable; the schema's "
                          f"non-image fields are {', '.join(usable) or 'none'}")
    return names


def tokenize_pairs(tokenizer, left: Sequence[str], right: Sequence[str], max_length: int,
                   tensors: str = "pt") -> dict:
    """The graph's inputs (:data:`INPUT_NAMES`) for pairs ``(left[i], right[i])``: sentence pairs truncated to
    ``max_length`` tokens, longest side first, padded; ``tensors`` ``"pt"`` (training) or ``"np"`` (serving)."""
    batch = tokenizer(list(left), list(right), truncation="longest_first", max_length=max_length, padding=True,
                      return_tensors=tensors)
    if "token_type_ids" not in batch:  # tokenizers of models without segment embeddings
        batch["token_type_ids"] = batch["input_ids"] * 0
    return {k: batch[k] for k in INPUT_NAMES}


class CrossEncoder(nn.Module):
    """``(left texts, right texts) -> match logits [B]`` (see the module docstring)."""

    def __init__(self, model: str | None = None, max_length: int = 128) -> None:
        super().__init__()
        path = resolve_model(model, where="model.cross_encoder.model")
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.cross_encoder.model: {str(path)!r} is not a Hugging Face model folder "
                              "(no config.json)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # "classifier weights newly initialised" is expected here
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1,
                                                                            local_files_only=True)
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        self.path, self.max_length = path, max_length

    def tokenize(self, left: Sequence[str], right: Sequence[str]) -> dict[str, Tensor]:
        return tokenize_pairs(self.tokenizer, left, right, self.max_length)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).logits[:, 0]

    def score(self, left: Sequence[str], right: Sequence[str]) -> Tensor:
        device = next(self.parameters()).device
        return self(**{k: v.to(device) for k, v in self.tokenize(left, right).items()})
