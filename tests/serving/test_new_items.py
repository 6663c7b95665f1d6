"""``engine score --new-items`` / ``ExportedModel.add_items``: items the model never saw, embedded by the export's
content encoder and ranked with the rest.

The reference: a model with ``data.cold_items`` ranks its held-out items by their content view, so an item given
under a new id with the same features as a cold item must get exactly that cold item's score for every user (graph
and sequential families). Plus the documented handling: ids already in the catalogue are skipped (counted); a
missing field, a duplicated id, an id of the wrong type and a model without content encoder are clear errors.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from engine.errors import DataError
from engine_serving import ExportedModel
from engine_serving.errors import ModelError

NUM_USERS, NUM_ITEMS = 60, 40
NEW = 1000  #: new item ids are NEW + the id of their cold twin


@pytest.fixture(scope="module")
def plugins():
    from engine.plugins import plugin
    from engine_graphcl import plugin as gmod
    from engine_linkage import plugin as lmod
    from engine_objectives import plugin as omod
    from engine_seqrec import plugin as smod

    with plugin(omod, name="objectives"), plugin(gmod, name="graphcl"), plugin(smod, name="seqrec"), \
            plugin(lmod, name="linkage"):
        yield


def _invoke(*args, code=0):
    from engine.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def _cold_items(pipeline: pathlib.Path) -> np.ndarray:
    from engine.config import load_pipeline
    from engine.run import prepare

    task, _ = prepare(load_pipeline(str(pipeline)))
    return np.asarray(task.cold.test)


def _train_and_export(root: pathlib.Path, doc: dict) -> tuple[pathlib.Path, np.ndarray]:
    pipeline = root / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(doc, sort_keys=False))
    _invoke("run", pipeline)
    _invoke("export", pipeline, "-o", root / "export")
    return root / "export", _cold_items(pipeline)


def _write_interactions(data: pathlib.Path) -> None:
    """LightGCN-format train / valid / test files: per user 8 / 2 / 2 items of a shifted random permutation."""
    rng = np.random.default_rng(0)
    for name, (lo, hi) in {"train": (0, 8), "valid": (8, 10), "test": (10, 12)}.items():
        lines = [f"{u} {' '.join(map(str, np.roll(rng.permutation(NUM_ITEMS), u)[lo:hi]))}" for u in range(NUM_USERS)]
        (data / f"{name}.txt").write_text("\n".join(lines) + "\n")


TRAIN = {"epochs": 2, "batch_size": 32, "lr": 0.02, "patience": None, "eval_every": 1, "num_threads": 1}


@pytest.fixture(scope="module")
def graph_export(tmp_path_factory, plugins):
    """LightGCN with item content (a RecBole .item table: title, genre, year) and 25% cold items, 2 epochs."""
    root = tmp_path_factory.mktemp("graph-new-items")
    data = root / "data"
    data.mkdir()
    _write_interactions(data)
    rows = ["item_id:token\ttitle:token_seq\tgenre:token\tyear:float"]
    rows += [f"{i}\tword{i % 5} other{i % 3}\tg{i % 4}\t{1980 + i}" for i in range(NUM_ITEMS)]
    (data / "items.item").write_text("\n".join(rows) + "\n")
    doc = {"name": "graph-new-items", "task": "graph_cf", "seed": 5,
           "data": {"source": "lightgcn_txt", "path": str(data), "valid": "valid.txt", "item_features": {},
                    "cold_items": {"ratio": 0.25, "seed": 1}},
           "model": {"encoder": {"name": "lightgcn", "embedding_dim": 8, "num_layers": 2},
                     "content": {"fusion": "attention", "split": {"orth_weight": 0.1}}},
           "train": {**TRAIN, "checkpoint_dir": str(root / "checkpoints"), "monitor": "ndcg@5"},
           "evaluate": {"ks": [5]}, "tracking": {"enabled": False}}
    directory, cold = _train_and_export(root, doc)
    return directory, cold, data / "items.item"


@pytest.fixture(scope="module")
def sequence_export(tmp_path_factory, plugins):
    """SASRec (CE) with S3Rec item attributes and 20% cold items, 2 epochs."""
    root = tmp_path_factory.mktemp("seq-new-items")
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    seqs = [[(s + t) % NUM_ITEMS + 1 for t in range(int(rng.integers(5, 12)))]
            for s in rng.integers(0, NUM_ITEMS, NUM_USERS)]
    (data / "Toy.txt").write_text("".join(f"{u + 1} {' '.join(map(str, s))}\n" for u, s in enumerate(seqs)))
    attributes = {str(i): [i % 7, 10 + i % 3] for i in range(1, NUM_ITEMS + 1)}
    (data / "Toy_item2attributes.json").write_text(json.dumps(attributes))
    doc = {"name": "seq-new-items", "task": "seqrec", "seed": 5,
           "data": {"source": "s3rec_txt", "path": str(data / "Toy.txt"),
                    "item_features": {"fields": {"attributes": "multi_categorical"}},
                    "cold_items": {"ratio": 0.2, "seed": 2}},
           "model": {"encoder": {"name": "sasrec", "hidden_dim": 8, "num_layers": 1, "num_heads": 1, "inner_dim": 16},
                     "max_len": 10, "loss": "ce", "content": {"fusion": "mean"}},
           "train": {**TRAIN, "checkpoint_dir": str(root / "checkpoints"), "monitor": "ndcg@5"},
           "evaluate": {"ks": [5], "metrics": ["hr", "ndcg"]}, "tracking": {"enabled": False}}
    directory, cold = _train_and_export(root, doc)
    return directory, cold, attributes


def _twin_table(path: pathlib.Path, source: pathlib.Path, cold: np.ndarray) -> pl.DataFrame:
    """The cold items' rows of a RecBole .item table under new ids, written as parquet (another format)."""
    lines = source.read_text().splitlines()
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    table = pl.DataFrame([{"item": NEW + int(r["item_id"]), "title": r["title"], "genre": r["genre"],
                           "year": float(r["year"])} for r in rows if int(r["item_id"]) in set(cold.tolist())])
    table.write_parquet(path)
    return table


def test_graph_new_items_score_like_their_cold_twins(graph_export, tmp_path, plugins):
    directory, cold, items = graph_export
    assert cold.size > 0
    _twin_table(tmp_path / "new.parquet", items, cold)
    model = ExportedModel(directory)
    before = model.scores(np.arange(NUM_USERS))
    added = model.add_items(tmp_path / "new.parquet")
    assert added == {"new_items": cold.size, "new_items_skipped": 0}
    assert model.num_items == NUM_ITEMS + cold.size
    new_ids = model.item_ids.to_list()[NUM_ITEMS:]
    assert new_ids == [NEW + c for c in sorted(cold.tolist())]
    twins = np.asarray([i - NEW for i in new_ids])
    after = model.scores(np.arange(NUM_USERS))
    assert np.array_equal(after[:, :NUM_ITEMS], before)  # the catalogue's own columns are unchanged
    assert np.abs(after[:, NUM_ITEMS:] - before[:, twins]).max() < 1e-4


def test_graph_new_items_through_engine_score(graph_export, tmp_path, plugins):
    directory, cold, items = graph_export
    _twin_table(tmp_path / "new.parquet", items, cold)
    pl.DataFrame({"user": list(range(NUM_USERS))}).write_csv(tmp_path / "users.csv")
    out = _invoke("score", "--model", directory, "--input", tmp_path / "users.csv", "--output", tmp_path / "out",
                  "--top-k", NUM_ITEMS, "--new-items", tmp_path / "new.parquet")
    report = json.loads(out.stdout)
    got = pl.read_parquet(tmp_path / "out" / "*.parquet")
    assert report["new_items"] == cold.size and report["output_rows"] == got.height
    # every user gets every unseen item up to k = 40: the new ones included, the seen ones excluded
    seen = np.diff(np.load(directory / "seen_indptr.npy"))
    counts = got.group_by("user").len().sort("user")["len"].to_numpy()
    assert np.array_equal(counts, np.minimum(NUM_ITEMS, NUM_ITEMS + cold.size - seen))
    new = got.filter(pl.col("item") >= NEW)
    assert new.height > 0  # new items are recommended
    # a new item's score is its twin's, for the same user (the twin itself is ranked whenever it is unseen)
    twin = got.join(new.with_columns(pl.col("item") - NEW), on=["user", "item"], suffix="_new")
    assert twin.height > 0 and np.abs(twin["score"] - twin["score_new"]).max() < 1e-4
    # the same job over faiss gives the same new items
    out = _invoke("score", "--model", directory, "--input", tmp_path / "users.csv", "--output", tmp_path / "faiss",
                  "--top-k", NUM_ITEMS, "--new-items", tmp_path / "new.parquet", "--index", "faiss")
    via = pl.read_parquet(tmp_path / "faiss" / "*.parquet").filter(pl.col("item") >= NEW)
    assert set(zip(via["user"], via["item"])) == set(zip(new["user"], new["item"]))


def test_graph_new_items_through_the_app_from_the_environment(graph_export, tmp_path, plugins, monkeypatch):
    """``ENGINE_SERVE_NEW_ITEMS`` (``engine serve --new-items`` for ``uvicorn ... --factory``): /recommend ranks the
    new items as ``engine score --new-items`` does."""
    from fastapi.testclient import TestClient

    from engine_serving.app import create_app

    directory, cold, items = graph_export
    _twin_table(tmp_path / "new.parquet", items, cold)
    pl.DataFrame({"user": [3, 17]}).write_csv(tmp_path / "users.csv")
    _invoke("score", "--model", directory, "--input", tmp_path / "users.csv", "--output", tmp_path / "out",
            "--top-k", 10, "--new-items", tmp_path / "new.parquet")
    want = pl.read_parquet(tmp_path / "out" / "*.parquet")
    for name, value in {"ENGINE_SERVE_MODEL": str(directory), "ENGINE_SERVE_THREADS": "1",
                        "ENGINE_SERVE_NEW_ITEMS": str(tmp_path / "new.parquet")}.items():
        monkeypatch.setenv(name, value)
    with TestClient(create_app()) as client:
        assert client.get("/health").json()["num_items"] == NUM_ITEMS + cold.size
        for user in (3, 17):
            body = client.post("/recommend", json={"user": user, "k": 10}).json()
            mine = want.filter(pl.col("user") == user).sort("rank")
            # a new item and its cold twin score alike (1e-4): either may come first
            assert all(a == b or abs(a - b) == NEW for a, b in zip(body["items"], mine["item"].to_list()))
            assert any(i >= NEW for i in body["items"])
            np.testing.assert_allclose(body["scores"], mine["score"].to_numpy(), atol=1e-4)


def test_sequence_new_items_score_like_their_cold_twins(sequence_export, tmp_path, plugins):
    directory, cold, attributes = sequence_export
    assert cold.size > 0
    model = ExportedModel(directory)
    catalogue = model.item_ids.to_list()  # score column j -> original id (column 0: padding)
    column = {str(v): j for j, v in enumerate(catalogue) if v is not None}
    # an S3Rec item2attributes.json of new ids (another format the item features read)
    originals = [str(catalogue[c]) for c in cold.tolist()]
    new_file = tmp_path / "new_item2attributes.json"
    new_file.write_text(json.dumps({str(NEW + int(o)): attributes[o] for o in originals}))
    before = model.scores(np.arange(model.num_users))
    added = model.add_items(new_file)
    assert added["new_items"] == cold.size
    cols = np.asarray([column[str(int(i) - NEW)] for i in model.item_ids.to_list()[len(catalogue):]])
    assert sorted(cols.tolist()) == sorted(cold.tolist())
    after = model.scores(np.arange(model.num_users))
    assert np.array_equal(after[:, :len(catalogue)], before)
    assert np.abs(after[:, len(catalogue):] - before[:, cols]).max() < 1e-4


def test_known_ids_are_skipped_and_counted(graph_export, tmp_path, plugins):
    directory, cold, items = graph_export
    table = _twin_table(tmp_path / "new.parquet", items, cold)
    both = pl.concat([table, table.head(3).with_columns(pl.col("item") - NEW)])  # 3 ids of the catalogue
    both.write_csv(tmp_path / "both.csv")
    model = ExportedModel(directory)
    assert model.add_items(tmp_path / "both.csv") == {"new_items": cold.size, "new_items_skipped": 3}


def test_missing_values_are_normal(graph_export, tmp_path, plugins):
    directory, cold, items = graph_export
    pl.DataFrame({"item": [NEW, NEW + 1], "title": ["word1 other2", None], "genre": [None, None],
                  "year": [None, 1999.0]}).write_parquet(tmp_path / "sparse.parquet")
    model = ExportedModel(directory)
    assert model.add_items(tmp_path / "sparse.parquet")["new_items"] == 2
    assert np.isfinite(model.scores(np.arange(5))).all()


@pytest.mark.parametrize("frame, message", [
    ({"item": [NEW], "title": ["a"], "genre": ["g1"]}, "missing field(s) 'year'"),
    ({"item": [NEW, NEW], "title": ["a", "b"], "genre": ["g1", "g2"], "year": [1.0, 2.0]}, "duplicated item id"),
    ({"item": ["new-a"], "title": ["a"], "genre": ["g1"], "year": [1.0]}, "not of the model's item id type"),
    ({"item": [None, NEW], "title": ["a", "b"], "genre": ["g1", "g2"], "year": [1.0, 2.0]}, "without an id"),
])
def test_bad_new_item_tables(graph_export, tmp_path, plugins, frame, message):
    directory, _, _ = graph_export
    pl.DataFrame(frame).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ExportedModel(directory).add_items(tmp_path / "bad.parquet")
    pl.DataFrame({"user": [0]}).write_csv(tmp_path / "users.csv")
    out = _invoke("score", "--model", directory, "--input", tmp_path / "users.csv", "--output", tmp_path / "out",
                  "--new-items", tmp_path / "bad.parquet", code=2)
    assert message.split("(")[0] in out.output and not (tmp_path / "out").exists()


def test_a_model_without_content_has_no_new_items(graph_export, tmp_path, plugins):
    import shutil

    directory = shutil.copytree(graph_export[0], tmp_path / "export")
    for name in ("content_encoder.onnx", "content_encoder.json"):  # what an export without model.content lacks
        (directory / name).unlink()
    pl.DataFrame({"item": [NEW], "title": ["a"]}).write_parquet(tmp_path / "new.parquet")
    with pytest.raises(ModelError, match="no item content encoder"):
        ExportedModel(directory).add_items(tmp_path / "new.parquet")


@pytest.fixture(scope="module")
def poster_export(tmp_path_factory, plugins):
    """LightGCN with an image field (a poster per item, 16x16 PNGs; one corrupt, one missing) and 25% cold items."""
    from PIL import Image

    root = tmp_path_factory.mktemp("poster-new-items")
    data = root / "data"
    (data / "posters").mkdir(parents=True)
    _write_interactions(data)
    for i in range(NUM_ITEMS):
        pixels = np.zeros((16, 16), np.uint8)
        pixels[:, (i % 4) * 4:(i % 4) * 4 + 4] = 255  # one stripe per "genre"
        Image.fromarray(pixels).save(data / "posters" / f"{i}.png")
    (data / "posters" / "3.png").write_bytes(b"not a png")  # corrupt: absent, counted
    (data / "posters" / "5.png").unlink()  # missing: absent, counted
    rows = ["item,poster,genre"] + [f"{i},posters/{i}.png,g{i % 4}" for i in range(NUM_ITEMS)]
    (data / "items.csv").write_text("\n".join(rows) + "\n")
    doc = {"name": "poster-new-items", "task": "graph_cf", "seed": 5,
           "data": {"source": "lightgcn_txt", "path": str(data), "valid": "valid.txt",
                    "item_features": {"path": str(data / "items.csv"),
                                      "fields": {"poster": "image", "genre": "categorical"}},
                    "cold_items": {"ratio": 0.25, "seed": 1}},
           "model": {"encoder": {"name": "lightgcn", "embedding_dim": 8, "num_layers": 2},
                     "content": {"fusion": "mean", "input": False,
                                 "encoders": {"image": {"name": "image", "height": 8, "width": 8,
                                                        "filters": [4, 8]}}}},
           "train": {**TRAIN, "epochs": 1, "checkpoint_dir": str(root / "checkpoints"), "monitor": "ndcg@5"},
           "evaluate": {"ks": [5]}, "tracking": {"enabled": False}}
    directory, cold = _train_and_export(root, doc)
    return directory, cold, data


def test_image_content_exports_and_ranks_new_items(poster_export, tmp_path, plugins):
    """An image field in the item content: trained, exported (the image encoder inside content_encoder.onnx), and
    new items given with poster paths relative to their own table score as their cold twins."""
    import shutil

    directory, cold, data = poster_export
    spec = json.loads((directory / "content_encoder.json").read_text())
    assert {s["modality"] for s in spec["slots"]} == {"image", "categorical"}
    assert json.loads((directory / "export.json").read_text())["content_encoder"]["max_abs_diff"] < 1e-4
    (tmp_path / "pics").mkdir()
    for c in cold.tolist():
        if (data / "posters" / f"{c}.png").exists():
            shutil.copy(data / "posters" / f"{c}.png", tmp_path / "pics" / f"{c}.png")
    pl.DataFrame({"item": [NEW + c for c in cold.tolist()], "poster": [f"pics/{c}.png" for c in cold.tolist()],
                  "genre": [f"g{c % 4}" for c in cold.tolist()]}).write_parquet(tmp_path / "new.parquet")
    model = ExportedModel(directory)
    before = model.scores(np.arange(NUM_USERS))
    assert model.add_items(tmp_path / "new.parquet")["new_items"] == cold.size
    twins = np.asarray([i - NEW for i in model.item_ids.to_list()[NUM_ITEMS:]])
    after = model.scores(np.arange(NUM_USERS))
    assert np.abs(after[:, NUM_ITEMS:] - before[:, twins]).max() < 1e-4


def test_new_items_and_faiss_on_ray_equal_the_local_job(graph_export, tmp_path, plugins, monkeypatch):
    """``--backend ray`` workers rebuild the driver's model: new items added and the faiss index, part for part."""
    pytest.importorskip("ray", reason="the `ray` extra is not installed")
    from engine.plugins import load_plugins

    directory, cold, items = graph_export
    _twin_table(tmp_path / "new.parquet", items, cold)
    pl.DataFrame({"user": list(range(NUM_USERS))}).write_csv(tmp_path / "users.csv")
    load_plugins()  # this process keeps its in-memory plugins; the Ray workers load the installed ones
    monkeypatch.setenv("ENGINE_LOAD_PLUGINS", "objectives,graphcl,seqrec,linkage")
    for name, extra in (("exact", []), ("faiss", ["--index", "faiss"])):
        args = ["score", "--model", directory, "--input", tmp_path / "users.csv", "--top-k", 12, "--chunk-size", 15,
                "--new-items", tmp_path / "new.parquet", *extra]
        _invoke(*args, "--output", tmp_path / f"local-{name}")
        report = json.loads(_invoke(*args, "--output", tmp_path / f"ray-{name}", "--backend", "ray", "--workers", 2,
                                    "--threads", 1).stdout)
        assert report["backend"] == "ray" and report["new_items"] == cold.size and report["parts"] == 4
        for part in sorted((tmp_path / f"local-{name}").glob("part-*.parquet")):
            assert pl.read_parquet(part).equals(pl.read_parquet(tmp_path / f"ray-{name}" / part.name)), part
