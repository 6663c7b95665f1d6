"""A tiny BERT (one layer, width 16) and its tokenizer written to a folder, so that tests of pretrained-transformer
code run offline and fast."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def write_tiny_bert(directory: Path, words: Sequence[str]) -> Path:
    """A ``BertModel`` (seed 0) and a WordPiece tokenizer over ``words`` (plus the special tokens) in
    ``directory``; returns it."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))]
    BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}).save_pretrained(directory)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokens), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(directory)
    return directory
