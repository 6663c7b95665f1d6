"""``engine serve``'s HTTP server, in-process on an ephemeral port: health, recommendations equal to batch scoring,
sequences for sequential models, and 4xx on malformed requests."""

from __future__ import annotations

import http.client
import json
import threading

import numpy as np
import polars as pl
import pytest


@pytest.fixture
def serve():
    """``serve(export_dir) -> request(method, path, body) -> (status, json)``; servers stopped at teardown."""
    from engine_serving import load_model, make_server

    servers = []

    def start(directory):
        server = make_server(load_model(str(directory), threads=1), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        host, port = server.server_address[:2]
        assert host == "127.0.0.1" and port > 0

        def request(method, path, body=None, raw=None):
            conn = http.client.HTTPConnection(host, port, timeout=10)
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = json.loads(response.read() or b"null")
            conn.close()
            return response.status, payload

        return request

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_graph_server(graph_model, serve):
    from engine_serving import load_model, score_chunk

    request = serve(graph_model.export)
    status, health = request("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["family"] == "graph"
    assert health["num_users"] == 400 and health["num_items"] == 120 and health["provider"] == "CPUExecutionProvider"

    expected = score_chunk(load_model(str(graph_model.export), threads=1), 0, pl.DataFrame({"user": [7]}), 5)
    status, body = request("POST", "/recommend", {"user": 7, "k": 5})
    assert status == 200 and body["items"] == expected["item"].to_list()
    np.testing.assert_allclose(body["scores"], expected["score"].to_numpy(), rtol=1e-6)
    status, body = request("POST", "/recommend", {"user": 7})
    assert status == 200 and len(body["items"]) == 10

    bad = [({"user": 7, "k": 0}, 400, "'k'"), ({"user": 7, "k": "5"}, 400, "'k'"), ({"user": 7, "k": 10_000}, 400, "'k'"),
           ({"k": 5}, 400, "'user'"), ({"user": 1.5}, 400, "'user'"), ({"user": None}, 400, "'user'"),
           ({"user": 7, "colour": 1}, 400, "colour"), ([1, 2], 400, "JSON object"),
           ({"sequence": [1, 2]}, 400, "graph model"), ({"user": 4000}, 404, "unknown"),
           ({"user": 7, "exclude_seen": "no"}, 400, "exclude_seen")]
    for payload, code, fragment in bad:
        status, body = request("POST", "/recommend", payload)
        assert status == code and fragment in body["error"], (payload, status, body)
    assert request("POST", "/recommend", raw=b"{not json")[0] == 400
    assert request("GET", "/nope")[0] == 404
    assert request("POST", "/health", {})[0] == 404
    assert request("GET", "/recommend")[0] == 405
    assert request("DELETE", "/recommend")[0] == 405


def test_sequential_server_takes_users_and_sequences(seq_model, serve):
    import torch

    request = serve(seq_model.export)
    status, health = request("GET", "/health")
    assert status == 200 and health["family"] == "sequence"
    status, body = request("POST", "/recommend", {"user": 101, "k": 3})
    assert status == 200 and len(body["items"]) == 3

    model = seq_model.model
    seq = [4, 5, 6, 7]
    with torch.no_grad():
        scores = (model.encoder.encode(torch.tensor([[0] * 4 + seq])) @ model.encoder.item_embeddings().T)[0]
    scores[[0, *seq]] = -float("inf")
    want = torch.topk(scores, 5).indices.tolist()
    status, body = request("POST", "/recommend", {"sequence": seq, "k": 5})
    assert status == 200 and body["items"] == want, (body, want)
    np.testing.assert_allclose(body["scores"], scores[want].numpy(), atol=1e-5)
    status, body = request("POST", "/recommend", {"sequence": seq, "k": 5, "exclude_seen": False})
    assert status == 200 and 0 not in body["items"]

    for payload, code in [({"sequence": []}, 400), ({"sequence": "4 5"}, 400), ({"sequence": [4, 999]}, 404),
                          ({"sequence": [4], "user": 101}, 400), ({"user": 1}, 404)]:
        assert request("POST", "/recommend", payload)[0] == code, payload


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
