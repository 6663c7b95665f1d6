"""``benchmarks/serve_load.py`` at tiny scale: a real ``engine serve`` subprocess (uvicorn) on loopback, a bounded
load from this process (answers checked against a naive PyTorch top-k), then malformed requests: each gets a 4xx
and the server still answers ``/health`` and the same valid answer afterwards; the old standard-library server the
benchmark compares with answers as the app does."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
import polars as pl
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def serve_load():
    spec = importlib.util.spec_from_file_location("serve_load", ROOT / "benchmarks" / "serve_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("serve_load", None)


def test_load_and_malformed_requests_on_a_subprocess_server(graph_model, serve_load):
    from .test_parity import known_items, naive_topk

    family, bodies, probe = serve_load.valid_bodies(graph_model.export, k=5, seed=1)
    assert family == "graph" and probe["unknown"] not in pl.read_parquet(graph_model.export / "users.parquet")["user"]
    proc, port = serve_load.start_server(graph_model.export, threads=1)
    try:
        load = serve_load.run_load(port, bodies, max_requests=60, max_seconds=60, concurrency=3, keep_answers=60)
        assert load.sent == 60 and load.ok == 60 and not load.failures, load.failures
        stats = load.summary()
        assert stats["requests_per_s"] > 0 and 0 < stats["p50_ms"] <= stats["p99_ms"] <= stats["max_ms"]
        assert load.percentile(50) == sorted(load.latencies_ms)[29]  # nearest rank: the 30th of 60
        assert load.percentile(99) == sorted(load.latencies_ms)[59] == max(load.latencies_ms)
        assert stats["p50_ms"] == round(load.percentile(50), 2)

        task, model = graph_model.task, graph_model.model
        users_emb, items_emb = task.embeddings(model)
        reference = naive_topk(users_emb @ items_emb.T, known_items(task), 5)
        assert len(load.answers) == 60
        for body, answer in load.answers:
            want = reference[body["user"]]
            np.testing.assert_allclose(answer["scores"], [s for _, s in want], atol=1e-5)
            for got, (j, s), score in zip(answer["items"], want, answer["scores"]):
                assert got == j or abs(score - s) < 1e-5

        cases = serve_load.malformed_cases(family, probe["known"], probe["unknown"])
        results = serve_load.check_malformed(port, cases)
        assert len(results) == len(cases) >= 20
        status = {r["case"]: r["status"] for r in results}
        assert all(r["is_4xx"] and r["healthy_after"] for r in results), results
        assert status["bad JSON"] == 400 and status["unknown user"] == 404 and status["k too large"] == 400
        assert status["body over 1 MiB (declared)"] == 413 and status["no Content-Length"] == 411
        assert status["GET on a POST route"] == 405 and status["unknown route"] == 404
        body, answer = load.answers[0]
        assert serve_load.request(port, "POST", "/recommend", body) == (200, answer)
        assert proc.poll() is None  # still up
    finally:
        serve_load.stop_server(proc)
    assert proc.returncode is not None


def test_percentiles_are_nearest_rank(serve_load):
    result = serve_load.LoadResult(sent=5, ok=5, seconds=2.0, latencies_ms=[5.0, 1.0, 4.0, 2.0, 3.0])
    assert result.percentile(50) == 3.0 and result.percentile(99) == 5.0 and result.percentile(20) == 1.0
    assert result.requests_per_second == 2.5


def test_linkage_match_load_on_a_subprocess_server(linkage_model, linkage_registry, serve_load):
    """The server process rebuilds the featurisers from the installed plugins' registry (entry points); its /match
    answers equal the in-process model's."""
    from engine_serving import load_model, score_chunk

    records = linkage_model.export.parent / "dm" / "tableA.csv"
    family, bodies, probe = serve_load.valid_bodies(linkage_model.export, k=3, seed=2, records=str(records))
    assert family == "linkage" and set(probe["record"]) == {"name", "city", "year"}
    proc, port = serve_load.start_server(linkage_model.export, threads=1)
    try:
        load = serve_load.run_load(port, bodies, max_requests=30, max_seconds=60, concurrency=2, keep_answers=30)
        assert load.sent == load.ok == 30, load.failures
        served = load_model(str(linkage_model.export), threads=1)
        frame = pl.read_csv(records, infer_schema=False)
        want = score_chunk(served, 0, frame, 3)
        for body, answer in load.answers:
            (left,) = frame.filter(pl.col("name") == body["record"]["name"])["id"].to_list()
            mine = want.filter(pl.col("left_id") == left)
            assert answer["ids"] == mine["right_id"].to_list()
            np.testing.assert_allclose(answer["scores"], mine["score"].to_numpy(), atol=1e-6)
        results = serve_load.check_malformed(port, serve_load.malformed_cases(family, None, None, probe["record"]))
        assert all(r["is_4xx"] and r["healthy_after"] for r in results), results
        assert proc.poll() is None
    finally:
        serve_load.stop_server(proc)


def test_the_old_server_kept_for_the_benchmark_answers_as_the_app(graph_model, serve_load):
    """``--servers stdlib`` (benchmarks/stdlib_server.py, the server ``engine serve`` ran before) answers the same
    bodies as the FastAPI app, so the benchmark compares like with like."""
    from fastapi.testclient import TestClient

    from engine_serving import load_model
    from engine_serving.app import create_app

    _, bodies, _ = serve_load.valid_bodies(graph_model.export, k=4, seed=3)
    proc, port = serve_load.start_server(graph_model.export, threads=1, server="stdlib")
    try:
        with TestClient(create_app(load_model(str(graph_model.export), threads=1))) as client:
            for _ in range(5):
                path, body = next(bodies)
                status, old = serve_load.request(port, "POST", path, body)
                new = client.post(path, json=body)
                assert status == new.status_code == 200 and old == new.json(), (body, old, new.json())
        assert serve_load.request(port, "POST", "/recommend", {"user": 7, "k": 0})[0] == 400
    finally:
        serve_load.stop_server(proc)
