"""Linkage exports in scoring and serving: featurisation rebuilt from the registry equals training's, onnxruntime
equals PyTorch (record encoder and pair scorer), ``engine score`` on records equals a naive PyTorch reference (top-k
by cosine, re-scored, thresholded) and the task's own test matches, ``POST /match`` equals the job."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from click.testing import CliRunner

from engine.cli import cli


def read_parts(directory) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in sorted(directory.glob("part-*.parquet"))])


def tables(trained):
    d = trained.export.parent / "dm"
    return d / "tableA.csv", d / "tableB.csv"


def naive_matches(trained, k: int, matches_only: bool) -> dict[str, list[tuple[str, float]]]:
    """Per left record of tableA: its k right records of highest cosine (PyTorch, float64 sort), each scored by
    ``task.score_pairs`` (the classifier's probability, or the cosine), ordered by score, thresholded."""
    task, model = trained.task, trained.model
    with torch.no_grad():
        u = model.encoder(*task.features["left"]).double()
        v = model.encoder(*task.features["right"]).double()
    threshold = json.loads((trained.export / "export.json").read_text())["serving"]["threshold"]
    out = {}
    for i, row in enumerate(u @ v.T):
        cand = [int(j) for j in torch.argsort(row, descending=True, stable=True)[:k]]
        scores = task.score_pairs(model, np.full(len(cand), i), np.asarray(cand))
        ranked = sorted(zip(cand, scores), key=lambda t: -t[1])
        out[task.data.left.ids[i]] = [(task.data.right.ids[j], float(s)) for j, s in ranked
                                      if not matches_only or s >= threshold]
    return out


def assert_same_matches(got: pl.DataFrame, want: dict, threshold: float | None = None):
    """Same candidates per left record, scores within 1e-5, best first; with ``threshold``, a pair within 1e-5 of
    it may be on either side (float32 onnxruntime vs PyTorch)."""
    assert got.columns == ["left_id", "right_id", "score"] and got["score"].dtype == pl.Float32
    for left, expected in want.items():
        rows = got.filter(pl.col("left_id") == left)
        have = dict(zip(rows["right_id"].to_list(), rows["score"].to_list()))
        exp = dict(expected)
        borderline = {r for r, s in {**have, **exp}.items() if threshold is not None and abs(s - threshold) < 1e-5}
        assert set(have) - borderline == set(exp) - borderline, (left, have, exp)
        for r in set(have) & set(exp):
            assert abs(have[r] - exp[r]) < 1e-5, (left, r, have[r], exp[r])
        assert rows["score"].is_sorted(descending=True), left


@pytest.mark.parametrize("which", ["linkage_model", "linkage_cosine_model"])
def test_featurisation_from_the_registry_equals_training(which, request, linkage_registry):
    from engine_serving import load_model
    from engine_serving.linkage import record_columns

    trained = request.getfixturevalue(which)
    served = load_model(str(trained.export), threads=1)
    assert served.family == "linkage" and served.provider == "CPUExecutionProvider"
    for path, side in zip(tables(trained), ("left", "right")):
        frame = pl.read_csv(path, infer_schema=False)
        ids, values = served.featurize(record_columns(frame, served.input_fields))
        want_ids, want_values = trained.task.features[side]
        np.testing.assert_array_equal(ids, want_ids.numpy())
        np.testing.assert_array_equal(values, want_values.numpy())


@pytest.mark.parametrize("which", ["linkage_model", "linkage_features_model", "linkage_cosine_model"])
def test_onnx_parity_encoder_and_pair_scorer(which, request, linkage_registry):
    """onnxruntime vs PyTorch: record vectors of both tables, the exported right vectors, and pair scores (with
    weight-free pair features: recomputed from the raw left records and the exported state)."""
    from engine_serving import load_model
    from engine_serving.linkage import record_columns

    trained = request.getfixturevalue(which)
    task, model = trained.task, trained.model
    served = load_model(str(trained.export), threads=1)
    for side in ("left", "right"):
        ids, values = task.features[side]
        with torch.no_grad():
            want = model.encoder(ids, values).numpy()
        np.testing.assert_allclose(served.embed(ids.numpy(), values.numpy()), want, atol=1e-5)
        if side == "right":
            np.testing.assert_allclose(served.right_vectors, want, atol=1e-6)
    assert served.right_ids.to_list() == task.data.right.ids
    meta = json.loads((trained.export / "export.json").read_text())["serving"]
    if which != "linkage_cosine_model":
        assert served.score_kind == "probability" and meta["pair_scorer_max_abs_diff"] < 1e-5
        p = task.data.pairs["valid"]
        ids, values = task.features["left"]
        frame = pl.read_csv(tables(trained)[0], infer_schema=False)
        got = served.pair_scores(ids.numpy(), values.numpy(), p.left, p.right,
                                 record_columns(frame, served.input_fields))
        np.testing.assert_allclose(got, task.score_pairs(model, p.left, p.right), atol=1e-5)
    else:
        assert served.score_kind == "cosine" and served.pair_session is None


@pytest.mark.parametrize("which, matches_only", [("linkage_model", False), ("linkage_model", True),
                                                 ("linkage_features_model", False), ("linkage_features_model", True),
                                                 ("linkage_fallback_model", True),
                                                 ("linkage_cosine_model", True), ("linkage_cross_model", True)])
def test_score_job_equals_the_naive_reference(which, matches_only, request, linkage_registry, tmp_path):
    trained = request.getfixturevalue(which)
    left, _ = tables(trained)
    k = trained.task.model_cfg.blocking_k
    args = ["score", "--model", trained.export, "--input", left, "--output", tmp_path / "out", "--chunk-size", 25,
            "--threads", 1] + (["--matches-only"] if matches_only else [])
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["top_k"] == k and report["parts"] == 3 and report["rows"] == 60
    got = read_parts(tmp_path / "out")
    if not matches_only:
        assert got.height == 60 * k
        assert got["left_id"].unique(maintain_order=True).to_list() == [f"a{i}" for i in range(60)]  # input order
    threshold = trained.task.threshold
    assert_same_matches(got, naive_matches(trained, k, matches_only), threshold if matches_only else None)
    if matches_only:
        assert (got["score"] >= threshold - 1e-5).all()
        # the task's own full-table test linkage (blocking_k candidates, threshold) finds the same pairs
        task_matches = pl.read_parquet(trained.export.parent / "matches.parquet")
        pairs = lambda f: set(zip(f["left_id"].to_list(), f["right_id"].to_list()))  # noqa: E731
        borderline = {(a, b) for a, b, s, *_ in [*task_matches.iter_rows(), *got.iter_rows()]
                      if abs(s - threshold) < 1e-5}
        assert pairs(task_matches) and pairs(got) ^ pairs(task_matches) <= borderline


def test_cross_encoder_export_scores_raw_records_as_the_task(linkage_cross_model, linkage_registry):
    """onnxruntime on pairs serialised and tokenised from the raw CSV rows == the task's PyTorch scores."""
    from engine_serving import load_model
    from engine_serving.linkage import record_columns

    trained = linkage_cross_model
    task, model = trained.task, trained.model
    served = load_model(str(trained.export), threads=1)
    meta = json.loads((trained.export / "export.json").read_text())["serving"]
    assert served.score_kind == "probability" and served.pair_session is None
    assert meta["cross_encoder_max_abs_diff"] < 1e-5 and meta["cross_fields"] == ["name", "city", "year"]
    assert served.right_texts == task.texts["right"]
    frame = pl.read_csv(tables(trained)[0], infer_schema=False)
    p = task.data.pairs["valid"]
    got = served.cross_scores(record_columns(frame, served.input_fields), p.left, p.right)
    np.testing.assert_allclose(got, task.score_pairs(model, p.left, p.right), atol=1e-5)


def test_linkage_faiss_candidates_equal_exact(linkage_model, linkage_registry):
    from engine_serving import load_model
    from engine_serving.linkage import record_columns

    left, _ = tables(linkage_model)
    columns = record_columns(pl.read_csv(left, infer_schema=False), ["name", "city", "year"])
    exact = load_model(str(linkage_model.export), threads=1)
    fast = load_model(str(linkage_model.export), threads=1)
    assert fast.use_faiss() == "FlatIP"
    vectors = exact.embed(*exact.featurize(columns))
    (c1, v1), (c2, v2) = exact.candidates(vectors, 6), fast.candidates(vectors, 6)
    np.testing.assert_allclose(v1, v2, atol=1e-5)
    untied = np.abs(np.diff(v1, axis=1)).min(axis=1) > 1e-5
    np.testing.assert_array_equal(c1[untied], c2[untied])
    for a, b in zip(exact.match(columns, 4), fast.match(columns, 4)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_linkage_input_errors_are_one_line(linkage_model, linkage_registry, tmp_path):
    pl.DataFrame({"id": ["x"], "name": ["john smith"], "year": ["1970"]}).write_csv(tmp_path / "nocity.csv")
    pl.DataFrame({"id": ["x", None], "name": ["a", "b"], "city": ["c", "d"], "year": ["1", "2"]}
                 ).write_parquet(tmp_path / "noid.parquet")
    pl.DataFrame({"key": ["x"], "name": ["a"], "city": ["c"], "year": ["1"]}).write_csv(tmp_path / "key.csv")
    for name, fragment in [("nocity.csv", "missing column(s) 'city'"), ("noid.parquet", "'id' has 1 empty"),
                           ("key.csv", "missing column(s) 'id'")]:
        result = CliRunner().invoke(cli, ["score", "--model", str(linkage_model.export), "--input",
                                          str(tmp_path / name), "--output", str(tmp_path / f"o-{name}")])
        assert result.exit_code == 2 and fragment in result.output.strip().splitlines()[-1], (name, result.output)
    # another id column, and a parquet input whose year is an integer column: the same as the CSV's strings
    pl.DataFrame({"key": ["x", "y"], "name": ["john smith", None], "city": ["paris", "lyon"], "year": [1970, 1980]}
                 ).write_parquet(tmp_path / "ints.parquet")
    result = CliRunner().invoke(cli, ["score", "--model", str(linkage_model.export), "--input",
                                      str(tmp_path / "ints.parquet"), "--output", str(tmp_path / "ints"),
                                      "--id-column", "key", "--top-k", 3])
    assert result.exit_code == 0, result.output
    got = read_parts(tmp_path / "ints")
    assert got["left_id"].to_list() == ["x"] * 3 + ["y"] * 3


def test_match_endpoint_equals_the_job(linkage_model, linkage_registry, tmp_path):
    from fastapi.testclient import TestClient

    from engine_serving import load_model, score_chunk
    from engine_serving.app import create_app

    served = load_model(str(linkage_model.export), threads=1)
    with TestClient(create_app(served)) as client:
        def post(path, body):
            r = client.post(path, json=body)
            return r.status_code, r.json()

        left, _ = tables(linkage_model)
        frame = pl.read_csv(left, infer_schema=False).head(5)
        want = score_chunk(served, 0, frame, 4)
        for row in frame.iter_rows(named=True):
            record = {f: row[f] for f in ("name", "city", "year")}
            status, body = post("/match", {"record": record, "k": 4})
            mine = want.filter(pl.col("left_id") == row["id"])
            assert status == 200 and body["ids"] == mine["right_id"].to_list(), (body, mine)
            np.testing.assert_allclose(body["scores"], mine["score"].to_numpy(), atol=1e-6)
            assert body["threshold"] == pytest.approx(linkage_model.task.threshold)
            status, only = post("/match", {"record": record, "k": 4, "matches_only": True})
            assert only["ids"] == [i for i, s in zip(body["ids"], body["scores"]) if s >= body["threshold"]]
        # a missing field is a missing value, as in training; numbers are read as strings
        status, body = post("/match", {"record": {"name": "john smith", "year": 1970}})
        assert status == 200 and len(body["ids"]) == 10
        bad = [({"record": ["x"]}, "'record'"), ({"record": {}}, "no field"), ({"record": {"nme": "x"}}, "nme"),
               ({"record": {"name": ["x"]}}, "'name'"), ({"record": {"name": True}}, "'name'"),
               ({"record": {"name": "x"}, "k": 0}, "'k'"), ({"record": {"name": "x"}, "k": "3"}, "'k'"),
               ({"record": {"name": "x"}, "matches_only": 1}, "matches_only"), ({"name": "x"}, "unknown field"),
               ([1], "JSON object")]
        for payload, fragment in bad:
            status, body = post("/match", payload)
            assert status == 400 and fragment in body["error"], (payload, body)
        status, body = post("/recommend", {"user": 1})
        assert status == 400 and "/match" in body["error"]
        health = client.get("/health").json()
        assert health["family"] == "linkage" and health["num_right"] == 60
        assert health["fields"] == ["name", "city", "year"]
        assert "num_users" not in health


def test_dedup_export_never_matches_a_record_with_itself(linkage_cosine_model, linkage_registry, tmp_path):
    """A dedup export's right table is the left one: scoring that table, a record is not its own candidate. Here
    the right records are renamed a<i> and the export marked dedup, so a<i> must not be matched with a<i>."""
    import shutil

    from engine_serving import load_model, score_chunk

    export = tmp_path / "dedup"
    shutil.copytree(linkage_cosine_model.export, export)
    meta = json.loads((export / "export.json").read_text())
    meta["serving"]["dedup"] = True
    (export / "export.json").write_text(json.dumps(meta))
    right = pl.read_parquet(export / "right_ids.parquet")
    right.with_columns(pl.col("right_id").str.replace("b", "a")).write_parquet(export / "right_ids.parquet")
    served = load_model(str(export), threads=1)
    left, _ = tables(linkage_cosine_model)
    frame = pl.read_csv(left, infer_schema=False)
    got = score_chunk(served, 0, frame, 3)
    assert got.height == 60 * 3 and (got["left_id"] != got["right_id"]).all()
    task, model = linkage_cosine_model.task, linkage_cosine_model.model
    with torch.no_grad():
        cos = (model.encoder(*task.features["left"]) @ model.encoder(*task.features["right"]).T).double()
    for i in range(60):
        order = [int(j) for j in torch.argsort(cos[i], descending=True, stable=True) if int(j) != i][:3]
        rows = got.filter(pl.col("left_id") == f"a{i}")
        assert rows["right_id"].to_list() == [f"a{j}" for j in order] or \
            np.allclose(rows["score"].to_numpy(), cos[i, order].numpy(), atol=1e-5)
        np.testing.assert_allclose(rows["score"].to_numpy(), cos[i, order].numpy(), atol=1e-5)


def test_missing_plugin_is_a_model_error_with_the_encoder_named(linkage_model):
    """Without the plugin that registered the field encoders, loading says which one is missing."""
    from engine.plugins import pm
    from engine_serving import ModelError, load_model

    assert pm.get_plugin("linkage") is None  # tests load no entry point; no fixture registered it here
    with pytest.raises(ModelError, match=r"featuriser of field 'name' \(char_ngram\): Unknown encoder 'char_ngram'"):
        load_model(str(linkage_model.export), threads=1)
