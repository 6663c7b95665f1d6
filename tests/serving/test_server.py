"""``engine serve``'s app (FastAPI, through its test client): health, recommendations equal to batch scoring and to
a naive top-k, sequences for sequential models, 4xx on malformed requests with the app still answering, request
batching equal to unbatched answers, and the OpenAPI schema of every route."""

from __future__ import annotations

import asyncio

import numpy as np
import polars as pl
import pytest


@pytest.fixture
def client():
    """``client(export_dir, **create_app options) -> TestClient``; closed (lifespan ended) at teardown."""
    from fastapi.testclient import TestClient

    from engine_serving import load_model
    from engine_serving.app import create_app

    clients = []

    def start(directory, **options):
        c = TestClient(create_app(load_model(str(directory), threads=1), **options), raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    yield start
    for c in clients:
        c.__exit__(None, None, None)


@pytest.mark.parametrize("batching", [True, False])
def test_graph_server(graph_model, client, batching):
    from engine_serving import load_model, score_chunk

    from .test_parity import known_items, naive_topk

    c = client(graph_model.export, batching=batching)
    r = c.get("/health")
    health = r.json()
    assert r.status_code == 200 and health == {"status": "ok", "family": "graph", "provider": "CPUExecutionProvider",
                                               "index": "exact", "num_users": 400, "num_items": 120}

    expected = score_chunk(load_model(str(graph_model.export), threads=1), 0, pl.DataFrame({"user": [7]}), 5)
    r = c.post("/recommend", json={"user": 7, "k": 5})
    body = r.json()
    assert r.status_code == 200 and body["items"] == expected["item"].to_list()
    np.testing.assert_allclose(body["scores"], expected["score"].to_numpy(), rtol=1e-6)
    users_emb, items_emb = graph_model.task.embeddings(graph_model.model)
    want = naive_topk(users_emb @ items_emb.T, known_items(graph_model.task), 5)[7]  # float64, seen items masked
    np.testing.assert_allclose(body["scores"], [s for _, s in want], atol=1e-5)
    r = c.post("/recommend", json={"user": 7})
    assert r.status_code == 200 and len(r.json()["items"]) == 10
    r = c.post("/recommend", json={"user": 7, "k": 120, "exclude_seen": False})
    assert r.status_code == 200 and sorted(r.json()["items"]) == list(range(120))  # every item, seen ones too

    bad = [({"user": 7, "k": 0}, 400, "'k'"), ({"user": 7, "k": "5"}, 400, "'k'"),
           ({"user": 7, "k": 10_000}, 400, "'k'"), ({"user": 7, "k": 2.5}, 400, "'k'"),
           ({"user": 7, "k": True}, 400, "'k'"),
           ({"k": 5}, 400, "'user'"), ({"user": 1.5}, 400, "'user'"), ({"user": None}, 400, "'user'"),
           ({"user": [7]}, 400, "'user'"), ({"user": 7, "colour": 1}, 400, "colour"), ([1, 2], 400, "JSON object"),
           ({}, 400, "'user'"), ({"sequence": [1, 2]}, 400, "graph model"), ({"user": 4000}, 404, "unknown"),
           ({"user": 7, "exclude_seen": "no"}, 400, "exclude_seen"), ({"user": 7, "sequence": [1]}, 400, "exactly one")]
    for payload, code, fragment in bad:
        r = c.post("/recommend", json=payload)
        assert r.status_code == code and fragment in r.json()["error"], (payload, r.status_code, r.text)
    r = c.post("/recommend", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json() == {"error": "the body is not valid JSON"}
    r = c.post("/recommend", content=b'{"user": 7}', headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "Content-Type: application/json" in r.json()["error"]  # curl -d without -H
    r = c.post("/match", json={"record": {"name": "x"}})
    assert r.status_code == 400 and "POST /recommend" in r.json()["error"]
    assert c.get("/nope").status_code == 404 and "no route /nope" in c.get("/nope").json()["error"]
    r = c.post("/health", json={})
    assert r.status_code == 405 and "GET" in r.json()["error"]
    assert c.get("/recommend").status_code == 405 and "POST" in c.get("/recommend").json()["error"]
    assert c.delete("/recommend").status_code == 405
    r = c.post("/recommend", content=b"x" * ((1 << 20) + 1), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "body over" in r.json()["error"]
    r = c.post("/recommend", json={"user": 7, "k": 5})  # still answering, the same
    assert r.status_code == 200 and r.json()["items"] == expected["item"].to_list()


def test_sequential_server_takes_users_and_sequences(seq_model, client):
    import torch

    c = client(seq_model.export)
    r = c.get("/health")
    assert r.status_code == 200 and r.json()["family"] == "sequence"
    r = c.post("/recommend", json={"user": 101, "k": 3})
    assert r.status_code == 200 and len(r.json()["items"]) == 3

    model = seq_model.model
    seq = [4, 5, 6, 7]
    with torch.no_grad():
        scores = (model.encoder.encode(torch.tensor([[0] * 4 + seq])) @ model.encoder.item_embeddings().T)[0]
    scores[[0, *seq]] = -float("inf")
    want = torch.topk(scores, 5).indices.tolist()
    r = c.post("/recommend", json={"sequence": seq, "k": 5})
    body = r.json()
    assert r.status_code == 200 and body["items"] == want, (body, want)
    np.testing.assert_allclose(body["scores"], scores[want].numpy(), atol=1e-5)
    r = c.post("/recommend", json={"sequence": seq, "k": 5, "exclude_seen": False})
    assert r.status_code == 200 and 0 not in r.json()["items"]

    for payload, code in [({"sequence": []}, 400), ({"sequence": "4 5"}, 400), ({"sequence": [4, 999]}, 404),
                          ({"sequence": [4], "user": 101}, 400), ({"user": 1}, 404), ({"sequence": [4, True]}, 400)]:
        assert c.post("/recommend", json=payload).status_code == code, payload


def test_batched_requests_equal_one_at_a_time(graph_model, seq_model):
    """Concurrent requests of mixed k / exclude_seen / users / sequences go through the batcher: fewer scoring runs
    than requests, and each answer equals the unbatched one."""
    from engine_serving import load_model
    from engine_serving.api import RecommendRequest, recommend, resolve_recommend
    from engine_serving.batching import Batcher

    for export, bodies in [
        (graph_model.export, [{"user": u, "k": 3 + u % 3, "exclude_seen": u % 2 == 0} for u in range(40)]),
        (seq_model.export, [{"user": 101 + u, "k": 4} for u in range(20)]
         + [{"sequence": [1 + u, 2 + u, 3 + u], "k": 4, "exclude_seen": u % 2 == 0} for u in range(20)]),
    ]:
        model = load_model(str(export), threads=1)
        requests = [RecommendRequest(**b) for b in bodies]
        batcher = Batcher(model, max_batch=16)

        async def all_at_once():
            jobs = [batcher.submit(*resolve_recommend(model, r), r.k, r.exclude_seen) for r in requests]
            try:
                return await asyncio.gather(*jobs)
            finally:
                await batcher.close()

        answers = asyncio.run(all_at_once())
        assert sum(batcher.batch_sizes) == len(requests) and max(batcher.batch_sizes) == 16
        assert len(batcher.batch_sizes) < len(requests)
        for req, got in zip(requests, answers):
            alone = recommend(model, req)
            assert got.items == alone.items, req
            np.testing.assert_allclose(got.scores, alone.scores, atol=1e-6)


def test_openapi_lists_every_route_with_its_schema(graph_model, client):
    c = client(graph_model.export)
    schema = c.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"/health", "/recommend", "/match"} <= set(paths)
    assert set(paths["/health"]) == {"get"}
    assert set(paths["/recommend"]) == {"post"} and set(paths["/match"]) == {"post"}
    components = schema["components"]["schemas"]

    def ref(operation, status="200"):
        return operation["responses"][status]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]

    assert ref(paths["/health"]["get"]) == "Health"
    for path, request, answer in [("/recommend", "RecommendRequest", "Recommendations"),
                                  ("/match", "MatchRequest", "Matches")]:
        op = paths[path]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(request)
        assert ref(op) == answer and ref(op, "400") == ref(op, "404") == "Error"
        assert "422" not in op["responses"]  # validation errors are 400s here
    rec = components["RecommendRequest"]
    assert set(rec["properties"]) == {"user", "sequence", "k", "exclude_seen"}
    assert rec["additionalProperties"] is False
    assert rec["properties"]["k"]["minimum"] == 1 and rec["properties"]["k"]["maximum"] == 1000
    assert set(components["MatchRequest"]["required"]) == {"record"}
    assert set(components["Recommendations"]["properties"]) == {"items", "scores"}
    assert set(components["Matches"]["properties"]) == {"ids", "scores", "threshold"}
    assert components["Error"]["required"] == ["error"]
    assert "HTTPValidationError" not in components
    assert c.get("/docs").status_code == 200


def test_app_from_the_environment(graph_model, monkeypatch):
    """``uvicorn engine_serving.app:create_app --factory``: the model and the options come from ENGINE_SERVE_*."""
    from fastapi.testclient import TestClient

    from engine_serving import ModelError
    from engine_serving.app import create_app

    monkeypatch.delenv("ENGINE_SERVE_MODEL", raising=False)
    with pytest.raises(ModelError, match="ENGINE_SERVE_MODEL is not set"):
        create_app()
    monkeypatch.setenv("ENGINE_SERVE_MODEL", str(graph_model.export))
    monkeypatch.setenv("ENGINE_SERVE_THREADS", "1")
    monkeypatch.setenv("ENGINE_SERVE_BATCHING", "0")
    app = create_app()
    assert app.state.batcher is None and app.state.model.threads == 1
    with TestClient(app) as c:
        assert c.post("/recommend", json={"user": 7, "k": 2}).status_code == 200
    monkeypatch.setenv("ENGINE_SERVE_BATCHING", "1")
    monkeypatch.setenv("ENGINE_SERVE_MAX_BATCH", "8")
    assert create_app().state.batcher.max_batch == 8
    monkeypatch.setenv("ENGINE_SERVE_MAX_BATCH", "0")
    with pytest.raises(ModelError, match=r"ENGINE_SERVE_MAX_BATCH must be an integer >= 1 \(got '0'\)"):
        create_app()


def test_engine_serve_reports_a_busy_port(graph_model):
    import socket

    from click.testing import CliRunner

    from engine.cli import cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--model", str(graph_model.export), "--port", str(port)])
    assert result.exit_code == 2 and "cannot listen on 127.0.0.1" in result.output.strip().splitlines()[-1]


def test_bound_socket_gets_tcp_nodelay_from_asyncio():
    """uvicorn serves on the socket ``bind`` made; asyncio sets TCP_NODELAY on accepted connections only when their
    proto is TCP. Without it every keep-alive answer (headers and body: two writes) waited ~40 ms for the client's
    delayed ACK (serve_load: 22 requests/s on one connection, 746 with it)."""
    import socket

    from engine_serving.app import bind

    sock = bind("127.0.0.1", 0)
    try:
        with socket.create_connection(sock.getsockname()[:2], timeout=5):
            conn, _ = sock.accept()
            with conn:
                assert conn.proto == socket.IPPROTO_TCP and conn.family == socket.AF_INET
    finally:
        sock.close()
