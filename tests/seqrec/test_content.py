"""``model.content`` and ``data.cold_items`` in the ``seqrec`` task, on tiny S3Rec-format files with an
``_item2attributes.json`` beside them: the training softmax and the serving table of the task, cold / warm metrics
against a naive per-user ranking, configuration errors, and one short training run with its ONNX export. (The
parts alone: the hold-out, the feature join, the excluding cross-entropy, SASRec's item input are in
test_content_parts.py.)"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.errors import ConfigError
from engine_seqrec.data import SequenceData
from engine_seqrec.losses import CrossEntropyLoss
from engine_seqrec.task import SeqRecTask
from naive_ranking import naive_ranking

NUM_ITEMS, NUM_USERS, DIM, MAX_LEN = 20, 24, 8, 8
NO_ROW = 20  #: item without a row in the attributes file (never eligible as a cold item)
KS, METRICS = [1, 3, 5], ["hr", "ndcg", "mrr"]


@pytest.fixture
def plugins():
    """The objectives, seqrec and linkage (the field encoders) plugins registered in memory."""
    from engine.plugins import plugin
    from engine_linkage import plugin as lmod
    from engine_objectives import plugin as omod
    from engine_seqrec import plugin as smod

    with plugin(omod, name="objectives"), plugin(smod, name="seqrec"), plugin(lmod, name="linkage"):
        yield


def sequences_of(data: SequenceData) -> list[list[int]]:
    return [data.items[s:e].tolist() for s, e in zip(data.indptr[:-1].tolist(), data.indptr[1:].tolist())]


def make_data(seqs, num_items, user_ids=None, num_dropped=0) -> SequenceData:
    indptr = np.cumsum([0, *map(len, seqs)])
    return SequenceData(torch.tensor(indptr), torch.tensor([i for s in seqs for i in s]), num_items,
                        user_ids=None if user_ids is None else np.asarray(user_ids), num_dropped=num_dropped)


def naive_hold_out(seqs, user_ids, cold) -> tuple[list[list[int]], list[int], int]:
    """Remove the cold items from every training prefix (all but the last two items); drop sequences left with
    fewer than 3 items."""
    out, users, dropped = [], [], 0
    for u, s in zip(user_ids, seqs):
        kept = [i for i in s[:-2] if i not in cold] + s[-2:]
        if len(kept) < 3:
            dropped += 1
            continue
        out.append(kept)
        users.append(u)
    return out, users, dropped


# -- the task --------------------------------------------------------------------------------------------------------


def make_sequences(seed=0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, NUM_ITEMS, size=int(rng.integers(4, 11))).tolist() for _ in range(NUM_USERS)]
    seqs[0] = list(range(1, 13))  # longer than max_len
    seqs[3][-1] = seqs[4][-2] = NO_ROW  # only a target: neither warm nor cold (it has no content to be drawn)
    return seqs


def write_data(directory, seqs, attributes=True):
    directory.mkdir(exist_ok=True)
    path = directory / "X.txt"
    path.write_text("".join(f"{u + 1} {' '.join(map(str, s))}\n" for u, s in enumerate(seqs)))
    if attributes:
        attrs = {str(i): [i % 4, 10 + i % 3, 20 + i % 5] for i in range(1, NUM_ITEMS) if i != NO_ROW}
        attrs["99"] = [1]  # not an item: skipped
        (directory / "X_item2attributes.json").write_text(json.dumps(attrs))
    return path


def make_doc(tmp_path, content=None, data=None, model=None, **train) -> dict:
    return {
        "name": "unit",
        "task": "seqrec",
        "seed": 5,
        "data": {"source": "s3rec_txt", "path": str(tmp_path / "data" / "X.txt"), "item_features": {},
                 "cold_items": {"ratio": 0.3, "seed": 1}, **(data or {})},
        "model": {"encoder": {"name": "sasrec", "hidden_dim": DIM, "num_layers": 1, "num_heads": 2, "inner_dim": 16,
                              "dropout": 0.0, "attn_dropout": 0.0}, "max_len": MAX_LEN,
                  **({"content": content} if content is not None else {}), **(model or {})},
        "train": {"batch_size": 8, "epochs": 2, "patience": None, "monitor": "ndcg@5",
                  "checkpoint_dir": str(tmp_path / "ck"), **train},
        "evaluate": {"ks": KS, "metrics": METRICS, "chunk_size": 5},
        "tracking": {"enabled": False},
    }


def make_task(tmp_path, content=None, data=None, model=None, attributes=True, **train):
    from engine.config import load_pipeline
    from engine.run import prepare

    seqs = make_sequences()
    write_data(tmp_path / "data", seqs, attributes)
    task, net = prepare(load_pipeline(make_doc(tmp_path, {} if content is None else content, data, model, **train)))
    assert isinstance(task, SeqRecTask)
    return task, net, seqs


def reference_positions(net, batch):
    """``(content rows, item table, hidden states, targets)`` in float64, by hand: the content added to a copy of
    the encoder's item embeddings (padding and mask rows zero), the batch encoded, the positions with a target."""
    content = net.content().detach().double()
    item_input = torch.cat([torch.zeros(1, DIM, dtype=torch.float64), content[1:],
                            torch.zeros(1, DIM, dtype=torch.float64)])
    ref = copy.deepcopy(net.encoder).double()
    with torch.no_grad():
        ref.item_embedding.weight += item_input
        hidden = ref(batch.inputs)
    table = ref.item_embeddings().detach()
    where = batch.targets > 0
    return content, table, hidden[where], batch.targets[where]


def naive_warm(task) -> set[int]:
    return {i for s in sequences_of(task.data) for i in s[:-2]}


def naive_split_ranking(scores, seqs, split, candidates) -> dict[str, float] | None:
    """Per user: rank the candidates that are not padding or in the history against the split's target (the
    shared naive reference); users whose target is no candidate are skipped; hr / ndcg / mrr."""
    targets, histories = {}, {}
    for u, s in enumerate(seqs):
        histories[u], targets[u] = (s[:-2], s[-2]) if split == "valid" else (s[:-1], s[-1])
    out = naive_ranking(scores, {u: [t] for u, t in targets.items()}, histories,
                        {int(c) for c in candidates} - {0}, KS)
    return None if out is None else {k: v for k, v in out.items() if k.split("@")[0] in METRICS}


def check_metrics_against_naive(task, net):
    seqs = sequences_of(task.data)
    warm = sorted(naive_warm(task))
    cold = task.cold.test.tolist()
    for split in ("valid", "test"):
        net.eval()
        with torch.no_grad():
            scores = task.score_function(net, split)(torch.arange(task.data.num_users)).double().numpy()
        net.train()
        got = task.evaluate(net, split)
        want = dict(naive_split_ranking(scores, seqs, split, range(NUM_ITEMS + 1)))
        for prefix, items in (("warm_", warm), ("cold_", cold)):
            view = naive_split_ranking(scores, seqs, split, items)
            assert view is not None, (split, prefix)  # the data gives users with warm and with cold targets
            want.update({prefix + k: v for k, v in view.items()})
        assert set(got) == set(want), split
        assert {k for k in got if k.startswith("cold_")} == {f"cold_{m}@{k}" for m in METRICS for k in KS}
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-9), (split, key)
        assert net.training


def test_task_holds_out_cold_items(tmp_path, plugins):
    task, net, seqs = make_task(tmp_path)
    cold = set(task.cold.test.tolist())
    has_content = {i for i in range(1, NUM_ITEMS + 1) if i != NO_ROW}
    pool = {i for s in seqs for i in s} & has_content
    assert cold <= pool and len(cold) == round(0.3 * len(pool)) and NO_ROW not in cold
    want, _, dropped = naive_hold_out(seqs, list(range(1, NUM_USERS + 1)), cold)
    assert sequences_of(task.data) == want and task.data.num_dropped == dropped
    assert not cold & set(task.data.history("train")[1].tolist())
    assert torch.nonzero(task.warm).flatten().tolist() == sorted(naive_warm(task))
    # some items are neither warm nor cold (targets only): the data exercises that case
    assert set(range(1, NUM_ITEMS + 1)) - naive_warm(task) - cold
    summary = task.data_summary()
    assert summary["cold_items"] == len(cold) and summary["item_features.fields"] == "attributes"
    assert summary["item_features.unknown_rows_skipped"] == 1
    assert summary["item_features.items_without_row"] == 2  # padding row 0 and item 20
    assert net.content().shape == (NUM_ITEMS + 1, DIM)


def test_training_softmax_leaves_out_every_non_warm_item(tmp_path, plugins):
    task, net, _ = make_task(tmp_path, {"fusion": "mean", "align": None, "rec_weight": 0.0})
    warm = naive_warm(task)
    non_warm = [i for i in range(1, NUM_ITEMS + 1) if i not in warm]
    assert net.loss.exclude.tolist() == [i not in warm for i in range(1, NUM_ITEMS + 1)]
    assert set(task.cold.test.tolist()) <= set(non_warm)
    batch = next(iter(task.train_batches(1, torch.Generator().manual_seed(0))))
    assert not set(batch.targets.unique().tolist()) & set(non_warm)
    out = task.training_step(net, batch)
    # the same loss by hand: hidden states with the content added to the item embeddings, softmax over warm items
    content, table, h, t = reference_positions(net, batch)
    cands = sorted(warm)
    want = 0.0
    for r in range(h.shape[0]):
        logits = torch.stack([h[r] @ table[i] for i in cands])
        want += float(torch.logsumexp(logits, 0) - h[r] @ table[t[r]])
    assert out.parts["rec/ce"].item() == pytest.approx(want / h.shape[0], rel=1e-5)
    # probabilities of non-warm items are exactly zero; their embedding rows get no gradient
    probs = torch.softmax(net.loss.get_logits(h.float(), table.float()), dim=1)
    assert probs[:, [i - 1 for i in non_warm]].abs().max() == 0
    out.loss.backward()
    grad = net.encoder.item_embedding.weight.grad
    assert grad[non_warm].abs().max() == 0 and grad[sorted(warm)].abs().sum(1).gt(0).any()


def test_content_terms_use_the_content_view(tmp_path, plugins):
    tau, align_w, rec_w = 0.5, 0.3, 0.7
    task, net, _ = make_task(tmp_path, {"fusion": "mean", "rec_weight": rec_w,
                                        "align": {"name": "infonce", "temperature": tau, "weight": align_w}})
    batch = next(iter(task.train_batches(1, torch.Generator().manual_seed(0))))
    out = task.training_step(net, batch)
    content, table, h, t = reference_positions(net, batch)
    warm = sorted(naive_warm(task))
    # content/rec: the same softmax over warm items, scored against the content rows alone
    rec = sum(float(torch.logsumexp(torch.stack([h[r] @ content[i] for i in warm]), 0) - h[r] @ content[t[r]])
              for r in range(h.shape[0])) / h.shape[0]
    # content/align: InfoNCE between the table rows of the batch's targets and their content (cosine, row r vs all)
    ii = sorted(set(t.tolist()))
    a, b = F.normalize(table[ii], dim=1), F.normalize(content[ii], dim=1)
    align = sum(float(torch.logsumexp(a[r] @ b.T / tau, 0) - a[r] @ b[r] / tau) for r in range(len(ii))) / len(ii)
    assert out.parts["content/rec"].item() == pytest.approx(rec_w * rec, rel=1e-5)
    assert out.parts["content/align"].item() == pytest.approx(align_w * align, rel=1e-5)
    assert out.loss.item() == pytest.approx(sum(v.item() for v in out.parts.values()), rel=1e-5)


def test_serving_table_gives_non_warm_items_their_content_view(tmp_path, plugins):
    task, net, _ = make_task(tmp_path, {"fusion": "mean"})
    with torch.no_grad():
        tower = task._tower(net)
        content = net.content()
    warm = sorted(naive_warm(task))
    non_warm = [i for i in range(1, NUM_ITEMS + 1) if i not in warm]
    serving = tower.serving_table
    assert serving.shape == (NUM_ITEMS + 1, DIM)
    assert torch.equal(serving[non_warm], content[non_warm])
    assert torch.equal(serving[task.cold.test], content[task.cold.test])
    assert torch.allclose(serving[warm], net.encoder.item_embedding.weight.detach()[warm] + content[warm])
    assert serving[0].abs().max() == 0  # padding


def test_evaluate_cold_and_warm_against_a_naive_ranking(tmp_path, plugins):
    task, net, _ = make_task(tmp_path)
    check_metrics_against_naive(task, net)


def test_content_input_false_with_gru4rec(tmp_path, plugins):
    gru = {"encoder": {"name": "gru4rec", "hidden_dim": DIM}}
    with pytest.raises(ConfigError, match=r"model\.content\.input: encoder 'gru4rec' takes no item input"):
        make_task(tmp_path, {}, model=gru)
    task, net, _ = make_task(tmp_path, {"input": False}, model=gru)
    with torch.no_grad():
        tower = task._tower(net)
        content = net.content()
    warm = sorted(naive_warm(task))
    cold = task.cold.test
    assert torch.equal(tower.serving_table[warm], net.encoder.item_embeddings()[warm])
    assert torch.equal(tower.serving_table[cold], content[cold])


def test_config_errors(tmp_path, plugins):
    with pytest.raises(ConfigError, match=r"model\.loss: 'bce' samples negatives .* use ce with data\.cold_items"):
        make_task(tmp_path, model={"loss": "bce"})
    task, _, _ = make_task(tmp_path, data={"cold_items": None}, model={"loss": "bce"})  # fine without cold items
    assert task.cold is None
    with pytest.raises(ConfigError, match=r"model\.content: needs data\.item_features"):
        make_task(tmp_path, {}, data={"item_features": None, "cold_items": None}, attributes=False)
    with pytest.raises(ConfigError, match=r"data\.cold_items: needs data\.item_features"):
        make_task(tmp_path, None, data={"item_features": None}, attributes=False)


def test_without_cold_items_metrics_have_no_prefix(tmp_path, plugins):
    task, net, _ = make_task(tmp_path, data={"cold_items": None})
    assert task.cold is None and isinstance(net.loss, CrossEntropyLoss) and net.loss.exclude is None
    metrics = task.evaluate(net, "test")
    assert set(metrics) == {f"{m}@{k}" for m in METRICS for k in KS}


# -- one short training run and its export ---------------------------------------------------------------------------


def test_short_run_and_export(tmp_path, plugins):
    import onnxruntime as ort

    from engine.config import load_pipeline
    from engine.tracking import Tracker
    from engine.train.trainer import Trainer

    content = {"fusion": "attention", "split": {"orth_weight": 0.1}}
    task, net, _ = make_task(tmp_path, content, lr=0.01)
    before = net.content.head.weight.detach().clone()
    cfg = load_pipeline(make_doc(tmp_path, content, lr=0.01))
    result = Trainer(task, cfg, Tracker(), tmp_path / "ck" / "unit", torch.device("cpu"), progress=False).fit(net)
    assert result.epochs_run == 2
    assert not torch.allclose(net.content.head.weight.detach(), before)  # the content encoder trained
    losses = {k: v for h in result.history for k, v in h.items() if k.startswith("loss/")}
    assert any(k.startswith("loss/content") for k in losses) and all(math.isfinite(v) for v in losses.values())
    check_metrics_against_naive(task, net)  # the trained model's metrics are its served scores, ranked naively

    directory = tmp_path / "export"
    directory.mkdir()
    report = task.export_onnx(net, str(directory))
    assert report["max_abs_diff"] < 1e-4
    assert report["content_encoder"]["max_abs_diff"] < 1e-4
    assert (directory / "content_encoder.onnx").is_file() and (directory / "content_encoder.json").is_file()
    net.eval()
    with torch.no_grad():
        tower = task._tower(net)
        content_rows = net.content()
        seqs = task.data.padded_history("test", MAX_LEN)
        want = tower.encode(seqs)
    table = np.load(report["item_embeddings"])
    assert table.shape == (NUM_ITEMS + 1, DIM) and np.allclose(table, tower.serving_table.numpy())
    session = ort.InferenceSession(report["path"], providers=["CPUExecutionProvider"])
    got = session.run(None, {"item_seq": seqs.numpy()})[0]
    assert np.abs(got - want.numpy()).max() < 1e-4
    # the content encoder embeds items from their featurised fields, as model.content() does
    session = ort.InferenceSession(str(directory / "content_encoder.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: getattr(net.content, i.name).numpy() for i in session.get_inputs()}
    rows = session.run(None, feeds)[0]
    assert rows.shape == (NUM_ITEMS + 1, DIM) and np.abs(rows - content_rows.numpy()).max() < 1e-4
    cold = task.cold.test
    assert np.abs(table[cold] - rows[cold]).max() < 1e-4  # cold items are served from the content encoder


@pytest.mark.parametrize("detach", [False, True])
def test_detach_keeps_the_content_terms_off_the_sequence_encoder(tmp_path, plugins, detach):
    """With ``detach`` (and no content input) the content terms' gradient reaches the content tower only."""
    task, net, _ = make_task(tmp_path, {"fusion": "mean", "input": False, "detach": detach})
    batch = next(iter(task.train_batches(1, torch.Generator().manual_seed(0))))
    out = task.training_step(net, batch)
    (out.parts["content/rec"] + out.parts["content/align"]).backward()
    collaborative = [p for n, p in net.named_parameters() if not n.startswith("content")]
    reached = sum(float(p.grad.abs().sum()) for p in collaborative if p.grad is not None)
    assert (reached == 0.0) == detach
    assert net.content.head.weight.grad.abs().sum() > 0
