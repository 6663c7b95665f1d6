"""The ``linkage`` task end to end on tiny generated tables: CLI runs with numbers asserted, threshold chosen on
valid, blocking figures, matches parquet, clusters, ONNX export with parity, and config errors."""

from __future__ import annotations

import json
import random

import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from engine.cli import cli

FIRST = ["john", "mary", "peter", "susan", "robert", "linda", "james", "karen", "david", "nancy", "paul", "emma",
         "steven", "laura", "kevin", "alice", "brian", "chloe", "frank", "grace", "henry", "irene", "oscar", "ruth"]
LAST = ["smith", "brown", "taylor", "wilson", "clarke", "walker", "wright", "hughes", "turner", "morgan", "cooper",
        "bailey", "parker", "harris", "murphy", "kelly", "foster", "graham"]
CITY = ["paris", "lyon", "nice", "lille", "nantes", "rennes", "dijon", "brest"]


def typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word))
    return word[:i] + word[i + 1:] if len(word) > 3 and rng.random() < 0.5 else word[:i] + "x" + word[i + 1:]


def make_entities(n: int, seed: int = 0):
    rng = random.Random(seed)
    names = rng.sample([(f, l) for f in FIRST for l in LAST], n)
    return [(f, l, rng.choice(CITY), str(rng.randint(1940, 2000))) for f, l in names], rng


def write_deepmatcher(d, n=60):
    """tableA / tableB with a typo'd copy of each entity on the right; pairs: the match and 2 near misses each."""
    d.mkdir(parents=True, exist_ok=True)
    ents, rng = make_entities(n)
    a = pl.DataFrame({"id": [f"a{i}" for i in range(n)], "name": [f"{e[0]} {e[1]}" for e in ents],
                      "city": [e[2] for e in ents], "year": [e[3] if i % 7 else None for i, e in enumerate(ents)]})
    b = pl.DataFrame({"id": [f"b{i}" for i in range(n)], "name": [f"{typo(e[0], rng)} {e[1]}" for e in ents],
                      "city": [e[2] for e in ents], "year": [e[3] for e in ents]})
    a.write_csv(d / "tableA.csv")
    b.write_csv(d / "tableB.csv")
    order = list(range(n))
    rng.shuffle(order)
    cuts = {"train": order[: n // 2], "valid": order[n // 2: 3 * n // 4], "test": order[3 * n // 4:]}
    for split, ids in cuts.items():
        rows = []
        for i in ids:
            rows.append((1, i, i))
            for j in rng.sample([j for j in range(n) if j != i], 2):
                rows.append((0, i, j))
        pl.DataFrame({"label": [r[0] for r in rows], "left_id": [f"a{r[1]}" for r in rows],
                      "right_id": [f"b{r[2]}" for r in rows]}).write_csv(d / f"{split}.csv")
    return d


def write_febrl_dedup(d, n=60):
    d.mkdir(parents=True, exist_ok=True)
    ents, rng = make_entities(n, seed=1)
    rows, links = [], []
    for i, (f, l, c, y) in enumerate(ents):
        rows.append((f"rec-{i}-org", f, l, c, y))
        for k in range(i % 3):  # 0, 1 or 2 duplicates
            rows.append((f"rec-{i}-dup-{k}", typo(f, rng), l, c, y))
            links.append((f"rec-{i}-org", f"rec-{i}-dup-{k}"))
        if i % 3 == 2:
            links.append((f"rec-{i}-dup-0", f"rec-{i}-dup-1"))
    rng.shuffle(rows)
    text = "rec_id, given_name, surname, suburb, date_of_birth\n" + "".join(", ".join(r) + "\n" for r in rows)
    (d / "dataset3.csv").write_text(text)
    (d / "dataset3_true_links.csv").write_text("rec_id_1,rec_id_2\n" + "".join(f"{a},{b}\n" for a, b in links))
    return d


def pipeline(tmp_path, data: dict, model: dict | None = None, **train) -> str:
    doc = {
        "name": "tiny-linkage", "task": "linkage", "seed": 3, "data": data,
        "model": {"dim": 16, "encoders": {"text": {"name": "char_ngram", "num_buckets": 4096, "max_ngrams": 32}},
                  "blocking_k": 3, "matches_out": str(tmp_path / "out" / "matches.parquet"), **(model or {})},
        "train": {"epochs": 6, "batch_size": 16, "lr": 0.01, "monitor": "f1", "patience": 6,
                  "checkpoint_dir": str(tmp_path / "ck"), **train},
        "evaluate": {"geometry": False},
        "tracking": {"enabled": False},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def invoke(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_deepmatcher_run_export_and_matches(tmp_path, linkage_plugins):
    d = write_deepmatcher(tmp_path / "dm")
    p = pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d),
                            "fields": {"name": "text", "city": "categorical", "year": "numeric"}})
    invoke("run", p, "--metrics-out", tmp_path / "m.json")
    m = json.loads((tmp_path / "m.json").read_text())
    for key in ("f1", "precision", "recall", "threshold", "pair_completeness", "reduction_ratio"):
        assert key in m
    assert m["f1"] >= 0.85, m
    assert m["pair_completeness"] >= 0.9
    assert m["num_candidates"] == 60 * 3 and m["reduction_ratio"] == pytest.approx(1 - 3 / 60)
    matches = pl.read_parquet(tmp_path / "out" / "matches.parquet")
    assert matches.columns == ["left_id", "right_id", "score", "cluster"]
    assert (matches["score"] >= m["threshold"]).all()
    found = (matches["left_id"].str.slice(1) == matches["right_id"].str.slice(1)).sum()
    assert found >= 0.8 * 60  # the full-table linkage finds most of the 60 true matches

    # evaluate the best checkpoint again: the same test figures
    invoke("evaluate", p, "--metrics-out", tmp_path / "e.json")
    again = json.loads((tmp_path / "e.json").read_text())
    for key in ("f1", "precision", "recall", "threshold", "pair_completeness"):
        assert again[key] == pytest.approx(m[key], abs=1e-9), key

    # ONNX: the record encoder, parity with torch
    invoke("export", p, "-o", tmp_path / "onnx")
    report = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert report["max_abs_diff"] < 1e-4 and (tmp_path / "onnx" / "record_encoder.onnx").is_file()
    assert set(report["inputs"]) == {"ids", "values"}
    schema = json.loads((tmp_path / "onnx" / "record_schema.json").read_text())
    assert [f["name"] for f in schema["fields"]] == ["name", "city", "year"]
    assert report["threshold"] == pytest.approx(m["threshold"])


def test_febrl_dedup_run_with_clusters_and_cosine_scores(tmp_path, linkage_plugins):
    d = write_febrl_dedup(tmp_path / "febrl")
    p = pipeline(tmp_path, {"source": "febrl", "path": str(d), "dataset": "3", "split": [0.5, 0.25, 0.25]},
                 model={"rerank": None, "fusion": "mean"})
    invoke("run", p, "--metrics-out", tmp_path / "m.json")
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["f1"] >= 0.7, m
    assert 0 < m["pair_completeness"] <= 1 and m["reduction_ratio"] > 0.5
    assert m["cluster_f1"] >= 0.6
    matches = pl.read_parquet(tmp_path / "out" / "matches.parquet")
    assert matches.height == m["num_matches"]
    assert (matches["left_id"] != matches["right_id"]).all()  # dedup: no self match

    # every field here is id-typed: the exported graph has the single input `ids`
    invoke("export", p, "-o", tmp_path / "onnx")
    report = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert set(report["inputs"]) == {"ids"} and report["max_abs_diff"] < 1e-4


def test_threshold_is_chosen_on_valid_and_applied_to_test(tmp_path, linkage_plugins):
    from engine.config import load_pipeline
    from engine.run import prepare
    from engine_linkage.metrics import best_threshold, classify

    d = write_deepmatcher(tmp_path / "dm", n=40)
    task, model = prepare(load_pipeline(pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d)})))
    m = task.evaluate(model, "test")  # untrained weights are enough to check the protocol
    v = task.data.pairs["valid"]
    t, _ = best_threshold(task.score_pairs(model, v.left, v.right), v.label)
    assert task.threshold == pytest.approx(t) and m["threshold"] == pytest.approx(t)
    te = task.data.pairs["test"]
    expected = classify(task.score_pairs(model, te.left, te.right), te.label, t)
    assert m["f1"] == pytest.approx(expected["f1"]) and m["precision"] == pytest.approx(expected["precision"])


def test_bad_data_is_one_line_and_nothing_written(tmp_path, linkage_plugins):
    d = write_deepmatcher(tmp_path / "dm", n=20)
    (d / "tableB.csv").write_text("id,name,city,year\nb1,x,y,1\nb1,z,w,2\n")
    p = pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d)})
    result = invoke("run", p, "--metrics-out", tmp_path / "m.json", ok=False)
    assert result.exit_code == 2
    assert "tableB.csv: column 'id': duplicate id 'b1'" in result.output
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "ck").exists()


def test_unknown_encoder_is_a_config_error(tmp_path, linkage_plugins):
    d = write_deepmatcher(tmp_path / "dm", n=20)
    p = pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d)},
                 model={"encoders": {"text": {"name": "char_ngrm"}}})
    result = invoke("run", p, ok=False)
    assert result.exit_code == 2 and "Did you mean 'char_ngram'?" in result.output


def test_a_field_encoded_by_two_encoders_and_per_field_encoders(tmp_path, linkage_plugins):
    from engine.config import load_pipeline
    from engine.run import prepare

    d = write_deepmatcher(tmp_path / "dm", n=20)
    encoders = {"text": [{"name": "char_ngram", "num_buckets": 512}, {"name": "char_ngram", "num_buckets": 256,
                                                                       "ngram_sizes": [2]}],
                "city": {"name": "categorical", "num_buckets": 64}}
    fields = {"name": "text", "city": "text", "year": "text"}  # all text, so `city` is taken by its own name
    task, model = prepare(load_pipeline(pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d),
                                                            "fields": fields}, model={"encoders": encoders})))
    assert [(s.name, s.encoder) for s in task.slots] == [("name", "text#0"), ("name", "text#1"), ("city", "city"),
                                                         ("year", "text#0"), ("year", "text#1")]
    assert [s.name for s in task.jaccard_slots] == ["name", "name", "year", "year"]  # not the categorical field
    ids, vals = task.features["left"]
    assert ids.shape[1] == sum(s.width for s in task.slots) and vals.shape[1] == 0
    out = model.encoder(ids[:3], vals[:3])
    assert out.shape == (3, 16)


def test_monitor_must_be_a_linkage_metric(tmp_path, linkage_plugins):
    d = write_deepmatcher(tmp_path / "dm", n=20)
    p = pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d)}, monitor="ndcg@20")
    result = invoke("run", p, ok=False)
    assert result.exit_code == 2 and "train.monitor: 'ndcg@20' is not a linkage validation metric" in result.output
    assert not (tmp_path / "ck").exists()


def test_whole_record_field_joins_the_values(tmp_path, linkage_plugins):
    from engine.config import load_pipeline
    from engine.run import prepare

    d = write_deepmatcher(tmp_path / "dm", n=20)
    task, model = prepare(load_pipeline(pipeline(tmp_path, {"source": "deepmatcher_csv", "path": str(d)},
                                                 model={"whole_record": True})))
    assert [s.name for s in task.slots] == ["name", "city", "year", "_record"]
    t = task.data.left
    row = 7  # year is missing on every 7th left record
    assert t.values("year")[row] is None
    assert task.values(t, "_record")[row] == f"{t.values('name')[row]} {t.values('city')[row]}"
    ids, vals = task.features["left"]
    assert model.encoder(ids[:2], vals[:2]).shape == (2, 16)
