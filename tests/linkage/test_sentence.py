"""The pretrained text encoder on a tiny local BERT written by the test (nothing downloaded): featurisation,
missing values, the trained projection, the on-disk cache, and a clear error for a path that is not a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import ConfigError

pytest.importorskip("sentence_transformers")

WORDS = ["john", "smith", "mary", "brown", "paris", "camera", "sony", "digital"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny-bert")
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(d)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=5 + len(WORDS), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16, max_position_embeddings=32)).save_pretrained(d)
    return d


def test_featurize_and_forward(tiny_model, tmp_path):
    from engine_linkage.sentence import SentenceEncoder

    enc = SentenceEncoder(dim=4, model=str(tiny_model), cache_dir=str(tmp_path / "cache"))
    x = enc.featurize(["John Smith", None, "mary brown", "John Smith"])
    assert x.shape == (4, 9) and x[:, -1].tolist() == [1, 0, 1, 1]
    assert np.allclose(np.linalg.norm(x[[0, 2], :8], axis=1), 1.0, atol=1e-5)  # normalised embeddings
    assert np.array_equal(x[0], x[3]) and not x[1, :8].any()
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    again = SentenceEncoder(dim=4, model=str(tiny_model), cache_dir=str(tmp_path / "cache"))
    assert np.array_equal(again.featurize(["John Smith", None, "mary brown", "John Smith"]), x)  # from the cache
    v, present = enc(torch.from_numpy(x))
    assert v.shape == (4, 4) and present.tolist() == [True, False, True, True]
    assert all(p.requires_grad for p in enc.parameters()) and sum(p.numel() for p in enc.parameters()) == 8 * 4 + 4


def test_not_a_model_folder(tmp_path):
    from engine_linkage.sentence import SentenceEncoder

    with pytest.raises(ConfigError, match="is not a sentence-transformers folder"):
        SentenceEncoder(model=str(tmp_path)).featurize(["x"])


def test_model_by_name_or_old_key(tmp_path):
    """``model:`` takes a packaged name or a folder; the old key ``model_path`` still validates into it; an unknown
    name is a ConfigError that lists the packaged models."""
    from engine_linkage.sentence import SentenceEncoder

    assert SentenceEncoder.Config(model_path="x").model == "x"
    assert SentenceEncoder.Config(model="all-mpnet-base-v2").model_dump()["model"] == "all-mpnet-base-v2"
    with pytest.raises(ConfigError, match="all-mpnet-base-v2"):
        SentenceEncoder(model=str(tmp_path / "missing")).featurize(["x"])


def test_exported_featuriser_leaves_the_training_cache_out():
    """The serving spec rebuilds the encoder without ``cache_dir``: a request never reads or writes the training
    cache (its values are embedded afresh)."""
    from engine.fields import featurizer_spec
    from engine_linkage.sentence import SentenceEncoder

    enc = SentenceEncoder(dim=4, model="some/folder", max_seq_length=32, cache_dir="out/cache")
    spec = featurizer_spec(enc)
    assert spec["name"] == "sentence" and "cache_dir" not in spec["options"]
    assert spec["options"]["model"] == "some/folder" and spec["options"]["max_seq_length"] == 32
