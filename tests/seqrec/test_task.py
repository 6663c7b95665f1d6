"""The ``seqrec`` task against naive references: registration, epoch batches, the loss on every / the last position,
the contrastive views, ONNX export, and one end-to-end run (evaluation: test_evaluate.py; MCLRec:
test_mclrec.py)."""

from __future__ import annotations

import collections
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner
from pydantic import Field

from engine.components import Component, ComponentConfig
from engine.errors import ConfigError
from engine.hookspecs import hookimpl
from engine_seqrec.task import SeqRecTask
from engine_seqrec.views import SameTargetIndex

NUM_ITEMS = 20


def make_sequences(num_users=12, seed=0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, NUM_ITEMS + 1, size=int(rng.integers(4, 14))).tolist() for _ in range(num_users)]
    seqs[0] = [3, 9, 4]  # a one-item training prefix: no training example, still evaluated
    seqs[1] = list(range(1, 14))  # longer than max_len 8 below
    seqs[2][-3:] = [20, 2, 20]  # item 20 in the history and as the test target
    return seqs


def write_txt(path, seqs):
    path.write_text("".join(f"{u + 1} {' '.join(map(str, s))}\n" for u, s in enumerate(seqs)))
    return path


def pipeline_doc(tmp_path, seqs, model=None, **train) -> dict:
    return {
        "name": "unit",
        "task": "seqrec",
        "seed": 5,
        "data": {"source": "s3rec_txt", "path": str(write_txt(tmp_path / "seqs.txt", seqs))},
        "model": {"encoder": {"name": "sasrec", "hidden_dim": 8, "num_layers": 1, "num_heads": 2, "inner_dim": 16,
                              "dropout": 0.0, "attn_dropout": 0.0}, "max_len": 8, **(model or {})},
        "train": {"batch_size": 5, "checkpoint_dir": str(tmp_path / "ck"), **train},
        "evaluate": {"ks": [1, 3, 5], "metrics": ["hr", "ndcg"], "chunk_size": 4},
        "tracking": {"enabled": False},
    }


def make_task(tmp_path, model=None, seqs=None, **train):
    from engine.config import load_pipeline
    from engine.run import prepare

    seqs = seqs or make_sequences()
    task, net = prepare(load_pipeline(pipeline_doc(tmp_path, seqs, model, **train)))
    assert isinstance(task, SeqRecTask)
    return task, net, seqs


class TailDrop(Component):
    """A test augmenter: drop the oldest item (when two or more remain)."""

    name = "tail_drop_test"
    view_kind = "sequence"

    class Config(ComponentConfig):
        pass

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items
        self.fitted = None

    def fit(self, train_sequences, num_items):
        self.fitted = (len(train_sequences), num_items)

    def __call__(self, seqs, lengths, generator):
        L = seqs.shape[1]
        drop = lengths >= 2
        cols = torch.arange(L).unsqueeze(0)
        out = seqs.masked_fill(drop.unsqueeze(1) & (cols == (L - lengths).unsqueeze(1)), 0)
        return out, lengths - drop.long()


class MaskAll(Component):
    """A test augmenter: every item becomes the mask token."""

    name = "mask_all_test"
    view_kind = "sequence"

    class Config(ComponentConfig):
        token_offset: int = Field(1)

    def __init__(self, num_items: int, token_offset: int = 1) -> None:
        self.token = num_items + token_offset

    def __call__(self, seqs, lengths, generator):
        return torch.where(seqs > 0, self.token, 0), lengths


class TestAugmenters:
    @hookimpl
    def register_augmenters(self, register):
        register(TailDrop)
        register(MaskAll)


@pytest.fixture
def test_augmenters(seqrec_plugins):
    from engine.plugins import plugin

    with plugin(TestAugmenters(), name="test-augmenters"):
        yield


def train_prefix(seq):
    return seq[:-2]


# -- registration ---------------------------------------------------------------------------------------------------


def test_plugin_registers_the_family(seqrec_plugins):
    from engine.plugins import get_registry

    registry = get_registry()
    assert registry.get("task", "seqrec").cls is SeqRecTask
    for kind, name in [("encoder", "sasrec"), ("encoder", "gru4rec"), ("data_source", "s3rec_txt"),
                       ("data_source", "interaction_sequences"), ("task", "seqrec")]:
        assert registry.get(kind, name).plugin == "seqrec"


def test_config_errors_name_the_yaml_path(tmp_path, seqrec_plugins):
    from engine.config import load_pipeline

    doc = pipeline_doc(tmp_path, make_sequences(), {"contrast": {"views": "augment"}})
    with pytest.raises(ConfigError, match="needs at least one augmenter"):
        load_pipeline(doc)
    doc = pipeline_doc(tmp_path, make_sequences(), {"loss": "softmax"})
    with pytest.raises(ConfigError, match="model.loss"):
        load_pipeline(doc)
    doc = pipeline_doc(tmp_path, make_sequences(), {"encoder": {"name": "sasrec", "dropout": 1.5}})
    with pytest.raises(ConfigError, match="model.encoder.dropout"):
        load_pipeline(doc)


# -- epoch batches --------------------------------------------------------------------------------------------------


def test_batches_cover_each_user_once_per_epoch(tmp_path, seqrec_plugins):
    task, _, seqs = make_task(tmp_path)
    trainable = [u for u, s in enumerate(seqs) if len(train_prefix(s)) >= 2]
    assert len(trainable) == len(seqs) - 1 and task.num_batches() == math.ceil(len(trainable) / 5)
    batches = list(task.train_batches(1, torch.Generator().manual_seed(3)))
    assert len(batches) == task.num_batches()
    seen = collections.Counter()
    for b in batches:
        assert b.inputs.shape == b.targets.shape == (b.inputs.shape[0], 8) and b.negatives is None
        for row in range(b.inputs.shape[0]):
            inputs = [x for x in b.inputs[row].tolist() if x]
            targets = [x for x in b.targets[row].tolist() if x]
            u = int(task.examples.users[b.index[row]])
            prefix = train_prefix(seqs[u])
            assert inputs == prefix[:-1][-8:] and targets == prefix[1:][-8:]  # shifted by one, most recent 8
            assert int(b.lengths[row]) == len(inputs)
            seen[u] += 1
    assert seen == {u: 1 for u in trainable}
    again = list(task.train_batches(1, torch.Generator().manual_seed(3)))
    assert all(torch.equal(x.inputs, y.inputs) for x, y in zip(batches, again))
    other = list(task.train_batches(1, torch.Generator().manual_seed(4)))
    assert not all(torch.equal(x.index, y.index) for x, y in zip(batches, other))


def test_prefix_augmentation_gives_every_prefix(tmp_path, seqrec_plugins):
    task, _, seqs = make_task(tmp_path, {"prefix_augmentation": True, "train_positions": "last", "loss": "bce",
                                         "num_negatives": 2})
    got = collections.Counter()
    for b in task.train_batches(1, torch.Generator().manual_seed(0)):
        assert b.negatives.shape == (*b.inputs.shape, 2)
        assert not (b.negatives == b.targets.unsqueeze(-1)).any()
        for row in range(b.inputs.shape[0]):
            got[(tuple(x for x in b.inputs[row].tolist() if x), int(b.targets[row, -1]))] += 1
    want = collections.Counter()
    for s in seqs:
        p = train_prefix(s)
        for end in range(1, len(p)):
            want[(tuple(p[:end][-8:]), p[end])] += 1
    assert got == want


# -- the loss -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("positions", ["all", "last"])
def test_ce_loss_on_positions_matches_a_loop(tmp_path, seqrec_plugins, positions):
    task, net, _ = make_task(tmp_path, {"train_positions": positions})
    batch = next(iter(task.train_batches(1, torch.Generator().manual_seed(0))))
    out = task.training_step(net, batch)
    table = net.encoder.item_embeddings().detach().double()
    terms = []
    for row in range(batch.inputs.shape[0]):
        n = int(batch.lengths[row])
        seq = batch.inputs[row : row + 1, -n:]  # the row alone, unpadded
        hidden = net.encoder(seq)[0].detach().double()
        cols = range(n) if positions == "all" else [n - 1]
        for t in cols:
            target = int(batch.targets[row, 8 - n + t])
            terms.append(-F.log_softmax(hidden[t] @ table[1:].T, 0)[target - 1])
    assert out.loss.item() == pytest.approx(float(sum(terms) / len(terms)), rel=1e-5)
    assert set(out.parts) == {"rec/ce"}


# -- contrastive views ------------------------------------------------------------------------------------------------


def test_augment_views_use_the_registered_augmenters(tmp_path, test_augmenters):
    model = {"contrast": {"views": "augment", "objective": {"name": "infonce", "weight": 0.5},
                          "augmenters": ["tail_drop_test", {"name": "mask_all_test"}]}}
    task, net, seqs = make_task(tmp_path, model)
    tail = next(a for a in task.augmenters if isinstance(a, TailDrop))
    assert tail.fitted == (len(seqs), NUM_ITEMS)  # fit() on the training prefixes, once
    batch = next(iter(task.train_batches(1, torch.Generator().manual_seed(0))))
    assert len(batch.views) == 2
    for view in batch.views:
        assert view.shape == batch.inputs.shape
        for row in range(view.shape[0]):
            v, x = view[row].tolist(), batch.inputs[row].tolist()
            masked = [NUM_ITEMS + 1 if i else 0 for i in x]
            dropped = [0 if c == x.index(next(i for i in x if i)) and sum(map(bool, x)) >= 2 else i
                       for c, i in enumerate(x)]
            assert v in (masked, dropped)
    out = task.training_step(net, batch)
    assert set(out.parts) == {"rec/ce", "contrast"} and math.isfinite(out.parts["contrast"].item())
    assert out.loss.item() == pytest.approx(out.parts["rec/ce"].item() + 0.5 * out.parts["contrast"].item())
    out.loss.backward()
    assert net.encoder.item_embedding.weight.grad[NUM_ITEMS + 1].abs().sum() > 0  # the mask token is trained


def test_dropout_views_differ_only_by_dropout(tmp_path, seqrec_plugins):
    encoder = {"name": "sasrec", "hidden_dim": 8, "num_layers": 1, "num_heads": 2, "dropout": 0.3}
    task, net, _ = make_task(tmp_path, {"encoder": encoder, "contrast": {"views": "dropout"}})
    batch = next(iter(task.train_batches(1, torch.Generator().manual_seed(0))))
    assert batch.views == ()
    net.train()
    assert task.training_step(net, batch).parts["contrast"].item() > 0
    net.encoder.eval()  # without dropout the two views coincide: InfoNCE of identical pairs is its floor
    anchor = net.encoder.encode(batch.inputs)
    same = net.contrast(anchor, net.encoder.encode(batch.inputs)).loss.item()
    assert task.training_step(net, batch).parts["contrast"].item() == pytest.approx(same, rel=1e-6)


def test_supervised_positives_share_the_next_item(tmp_path, seqrec_plugins):
    seqs = [[1, 2, 3, 4, 5, 6], [7, 2, 3, 9, 9, 9], [8, 3, 1, 1], [5, 6, 11, 12, 13]]
    task, net, _ = make_task(tmp_path, {"contrast": {"views": "supervised"}}, seqs=seqs)
    index = task.same_target
    assert isinstance(index, SameTargetIndex)
    # prefixes of the training prefixes [1,2,3,4] [7,2,3,9] [8,3] [5,6,11]: next items 2,3,4 | 2,3,9 | 3 | 6,11
    assert len(index) == 9 and index.next_item.tolist() == sorted([2, 3, 4, 2, 3, 9, 3, 6, 11])
    gen = torch.Generator().manual_seed(0)
    ends = task.examples.ends  # one example per user: its last target is 4, 9, 3, 11
    assert task.examples.next_items(torch.arange(4)).tolist() == [4, 9, 3, 11]
    for _ in range(20):
        pick, found = index.sample(ends, gen)
        assert found.tolist() == [False, False, True, False]
        partner = index.sequences(pick[2:3], 8)[0].tolist()
        assert partner in ([0] * 6 + [1, 2], [0] * 6 + [7, 2])  # [1,2]->3 or [7,2]->3, never itself ([8]->3)
    batch = next(iter(task.train_batches(1, gen)))
    (positives,) = batch.views
    for row in range(batch.inputs.shape[0]):
        u = int(task.examples.users[batch.index[row]])
        if u != 2:  # no partner: the positive is the sequence itself (encoded again: a dropout view)
            assert torch.equal(positives[row], batch.inputs[row])
    assert math.isfinite(task.training_step(net, batch).parts["contrast"].item())


# -- outputs --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["sasrec", "gru4rec"])
def test_export_onnx_parity_and_item_table(tmp_path, seqrec_plugins, encoder):
    task, net, _ = make_task(tmp_path, {"encoder": {"name": encoder}})
    report = task.export_onnx(net, str(tmp_path / "export"))
    assert report["max_abs_diff"] < 1e-4 and report["outputs"] == ["seq_repr"]
    table = np.load(report["item_embeddings"])
    assert table.shape == (NUM_ITEMS + 1, report["dim"]) and table.dtype == np.float32
    assert np.allclose(table, net.encoder.item_embeddings().detach().numpy())
    import onnxruntime as ort

    session = ort.InferenceSession(report["path"], providers=["CPUExecutionProvider"])
    seqs = task.data.padded_history("test", 8)
    got = session.run(None, {"item_seq": seqs.numpy()})[0]
    net.eval()
    with torch.no_grad():
        assert np.abs(got - net.encoder.encode(seqs).numpy()).max() < 1e-4


def test_log_artifacts_logs_geometry(tmp_path, seqrec_plugins):
    class Recorder:
        run_id = None

        def __init__(self):
            self.metrics = {}

        def log_metrics(self, metrics, step=None):
            self.metrics.update(metrics)

    task, net, _ = make_task(tmp_path)
    rec = Recorder()
    task.log_artifacts(net, rec)
    assert set(rec.metrics) == {"geometry/alignment", "geometry/uniformity_items", "geometry/uniformity_sequences"}
    assert all(math.isfinite(v) for v in rec.metrics.values())
    assert 0 <= rec.metrics["geometry/alignment"] <= 4


# -- end to end -----------------------------------------------------------------------------------------------------


def test_engine_run_learns_a_successor_pattern(tmp_path, seqrec_plugins):
    """Item i is followed by i + 1 (wrapping): the next item is a function of the last one, so HR@10 should be
    near 1, against about 10 / 95 for a random ranking."""
    from engine.cli import cli

    rng = np.random.default_rng(0)
    n_items = 100
    seqs = []
    for _ in range(300):
        start, length = int(rng.integers(0, n_items)), int(rng.integers(4, 10))
        seqs.append([(start + t) % n_items + 1 for t in range(length)])
    doc = pipeline_doc(tmp_path, seqs, {"encoder": {"name": "sasrec", "hidden_dim": 16, "num_layers": 1,
                                                    "num_heads": 1, "dropout": 0.1, "attn_dropout": 0.1}},
                       epochs=6, batch_size=32, lr=0.01, monitor="ndcg@10", patience=None)
    doc["evaluate"] = {"ks": [10], "metrics": ["hr", "ndcg"]}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(cli, ["run", str(path), "--metrics-out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, (result.output, result.exception)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["epochs"] == 6
    assert metrics["hr@10"] > 0.9, metrics  # random: ~0.11
    assert metrics["ndcg@10"] > 0.6, metrics
    result = CliRunner().invoke(cli, ["export", str(path), "-o", str(tmp_path / "onnx")])
    assert result.exit_code == 0, (result.output, result.exception)
    report = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert report["max_abs_diff"] < 1e-4 and report["num_items"] == n_items

