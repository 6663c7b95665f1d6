"""Checkpoints: atomic writes, clean round trips, and errors that say what to do with a bad file."""

from types import SimpleNamespace

import pytest
import torch

from engine.errors import CheckpointError, EngineError
from engine.train.checkpoint import config_fingerprint, load_checkpoint, save_checkpoint


def state(epoch=3):
    torch.manual_seed(epoch)
    return {
        "model": {"weight": torch.randn(4, 3, dtype=torch.float64), "bias": torch.zeros(3)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]},
        "epoch": epoch,
        "best": {"ndcg@20": 0.125},
        "fingerprint": "abc",
    }


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]) and a[key].dtype == b[key].dtype
        elif isinstance(a[key], dict):
            assert_same(a[key], b[key])
        else:
            assert a[key] == b[key]


def test_save_load_roundtrip(tmp_path):
    path = tmp_path / "run" / "nested" / "last.pt"  # parents are created
    saved = state()
    save_checkpoint(saved, path)
    loaded = load_checkpoint(path)
    assert_same(saved, loaded)
    assert loaded["model"]["weight"].device.type == "cpu"
    assert_same(saved, load_checkpoint(str(path), map_location=torch.device("cpu")))


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(state(1), path)
    save_checkpoint(state(2), path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(path)["epoch"] == 2


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(state(1), path)
    before = path.read_bytes()

    def crash(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # Ctrl-C during the write

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(state(2), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(path)["epoch"] == 1


def _assert_corrupt_message(err: CheckpointError, path) -> None:
    msg = str(err)
    assert msg.startswith(f"{path}: ")
    assert "corrupt" in msg
    assert "delete it" in msg and "without --resume" in msg
    assert "\n" not in msg and "Traceback" not in msg
    assert err.__cause__ is None and err.__suppress_context__


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    _assert_corrupt_message(info.value, path)
    assert isinstance(info.value, EngineError)


@pytest.mark.parametrize("content", [b"", b"garbage, not a checkpoint\n", bytes(range(256)) * 8])
def test_garbage_checkpoint(tmp_path, content):
    path = tmp_path / "best.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    _assert_corrupt_message(info.value, path)


@pytest.mark.parametrize("obj", [{"epoch": 1, "optimizer": {}}, [1, 2, 3], torch.zeros(2)])
def test_file_without_model_state(tmp_path, obj):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: not an engine checkpoint (no model state)")
    assert "without --resume" in msg


def test_missing_checkpoint(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path)  # a directory is not a checkpoint
    assert not path.exists()


# -- fingerprint ---------------------------------------------------------------------------------------------------

RAW = {
    "name": "p",
    "task": "graph_cf",
    "seed": 1,
    "data": {"source": "synthetic_cf", "path": "d"},
    "model": {"encoder": {"name": "lightgcn", "embedding_dim": 64}},
    "train": {"epochs": 10, "lr": 0.001, "patience": 5, "device": "cpu", "batch_size": 1024},
    "tracking": {"enabled": True},
}


def fingerprint(**train_changes):
    raw = {**RAW, "train": {**RAW["train"], **train_changes}}
    return config_fingerprint(SimpleNamespace(raw=raw))


def test_fingerprint_ignores_budget_and_tracking():
    base = fingerprint()
    assert len(base) == 16 and int(base, 16) >= 0
    assert fingerprint(epochs=50, patience=None, device="cuda", eval_every=2, checkpoint_dir="x", num_threads=4) == base
    raw = {**RAW, "tracking": {"enabled": False}, "name": "renamed", "evaluate": {"ks": [5]}}
    assert config_fingerprint(SimpleNamespace(raw=raw)) == base


def test_fingerprint_changes_with_model_data_and_optimisation():
    base = fingerprint()
    assert fingerprint(lr=0.01) != base
    assert fingerprint(batch_size=512) != base
    for key, value in (("seed", 2), ("data", {"source": "synthetic_cf", "path": "e"}), ("task", "seqrec")):
        assert config_fingerprint(SimpleNamespace(raw={**RAW, key: value})) != base
    assert config_fingerprint(SimpleNamespace(raw={k: v for k, v in RAW.items() if k != "train"}))  # no train block
