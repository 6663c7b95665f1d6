"""The client side of ``benchmarks/serve_load.py``: one HTTP request on a keep-alive or fresh connection, a load of
valid requests from ``concurrency`` threads with its latency percentiles (:class:`LoadResult`), and the malformed
requests each of which must get a 4xx while the server keeps answering ``GET /health``."""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator


# -- requests -----------------------------------------------------------------------------------------------------
def request(port: int, method: str, path: str, body: Any = None, raw: bytes | None = None,
            conn: http.client.HTTPConnection | None = None, timeout: float = 30.0) -> tuple[int, Any]:
    """One request (on ``conn`` when given, else a fresh connection): ``(status, parsed JSON body or None)``."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        try:
            return response.status, json.loads(payload) if payload else None
        except ValueError:
            return response.status, None
    finally:
        if own:
            conn.close()


def _header_only(port: int, headers: dict[str, str]) -> int:
    """``POST /recommend`` with ``headers`` and no body bytes sent (a declared body too large, or no length)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", "/recommend")
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@dataclass
class LoadResult:
    sent: int
    ok: int
    seconds: float
    latencies_ms: list[float]
    failures: list[str] = field(default_factory=list)
    answers: list[tuple[Any, Any]] = field(default_factory=list)  #: (request body, response body) of 200s

    @property
    def requests_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile of the latencies (nearest rank), ms."""
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        rank = max(1, -(-q * len(ordered) // 100))
        return ordered[int(rank) - 1]

    def summary(self) -> dict[str, Any]:
        return {"requests": self.sent, "ok": self.ok, "failed": len(self.failures), "seconds": round(self.seconds, 3),
                "requests_per_s": round(self.requests_per_second, 1), "p50_ms": round(self.percentile(50), 2),
                "p99_ms": round(self.percentile(99), 2), "max_ms": round(max(self.latencies_ms, default=0), 2)}


def run_load(port: int, bodies: Iterator[tuple[str, Any]], max_requests: int, max_seconds: float,
             concurrency: int = 4, keep_answers: int = 0) -> LoadResult:
    """Send ``(path, body)`` items of ``bodies`` as POSTs from ``concurrency`` threads (one keep-alive connection
    each) until ``max_requests`` are sent or ``max_seconds`` have passed; keep the first ``keep_answers`` answers."""
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    answers: list[tuple[Any, Any]] = []
    counter = {"sent": 0, "ok": 0}
    deadline = time.monotonic() + max_seconds

    def take() -> tuple[str, Any] | None:
        with lock:
            if counter["sent"] >= max_requests or time.monotonic() >= deadline:
                return None
            counter["sent"] += 1
            return next(bodies)

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while (item := take()) is not None:
                path, body = item
                tic = time.perf_counter()
                try:
                    status, payload = request(port, "POST", path, body, conn=conn)
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()  # reconnects on the next request
                    status, payload = -1, f"{type(exc).__name__}: {exc}"
                ms = (time.perf_counter() - tic) * 1e3
                with lock:
                    latencies.append(ms)
                    if status == 200:
                        counter["ok"] += 1
                        if len(answers) < keep_answers:
                            answers.append((body, payload))
                    elif len(failures) < 20:
                        failures.append(f"{path} {json.dumps(body)} -> {status} {payload}")
        finally:
            conn.close()

    tic = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - tic
    return LoadResult(counter["sent"], counter["ok"], seconds, latencies, failures, answers)


def malformed_cases(family: str, known: Any, unknown: Any, record: dict | None = None) -> list[tuple[str, dict]]:
    """``(name, spec)`` of malformed requests for a model of ``family``; ``known`` / ``unknown``: a user id the
    model knows / does not know (graph, sequence), ``record`` a valid record (linkage). A spec is the keyword
    arguments of :func:`request` (``method``, ``path``, ``body`` or ``raw``), or ``headers`` for a request whose
    body is never sent."""
    route = "/match" if family == "linkage" else "/recommend"
    cases: list[tuple[str, dict]] = [
        ("bad JSON", {"path": route, "raw": b'{"user": 1,'}),
        ("not UTF-8", {"path": route, "raw": b"\xff\xfe\x00"}),
        ("JSON array body", {"path": route, "body": [1, 2, 3]}),
        ("empty object", {"path": route, "body": {}}),
        ("body over 1 MiB (declared)", {"headers": {"Content-Length": str(2 << 20)}}),
        ("no Content-Length", {"headers": {}}),
        ("unknown route", {"path": "/predict", "body": {"user": known}}),
        ("GET on a POST route", {"method": "GET", "path": route}),
        ("DELETE", {"method": "DELETE", "path": route}),
    ]
    if family == "linkage":
        cases += [
            ("record not an object", {"path": route, "body": {"record": ["a", "b"]}}),
            ("record with no known field", {"path": route, "body": {"record": {"nope": "x"}}}),
            ("field value a list", {"path": route, "body": {"record": {next(iter(record)): [1]}}}),
            ("k as string", {"path": route, "body": {"record": record, "k": "5"}}),
            ("k too large", {"path": route, "body": {"record": record, "k": 10 ** 6}}),
            ("k zero", {"path": route, "body": {"record": record, "k": 0}}),
            ("unknown top-level field", {"path": route, "body": {"record": record, "colour": 1}}),
            ("/recommend on a linkage model", {"path": "/recommend", "body": {"user": 1}}),
        ]
        return cases
    cases += [
        ("unknown user", {"path": route, "body": {"user": unknown, "k": 5}}),
        ("user as float", {"path": route, "body": {"user": 1.5}}),
        ("user as list", {"path": route, "body": {"user": [known]}}),
        ("user null", {"path": route, "body": {"user": None}}),
        ("missing user", {"path": route, "body": {"k": 5}}),
        ("k as string", {"path": route, "body": {"user": known, "k": "5"}}),
        ("k as float", {"path": route, "body": {"user": known, "k": 2.5}}),
        ("k too large", {"path": route, "body": {"user": known, "k": 10 ** 6}}),
        ("k zero", {"path": route, "body": {"user": known, "k": 0}}),
        ("exclude_seen not a bool", {"path": route, "body": {"user": known, "exclude_seen": "no"}}),
        ("unknown field", {"path": route, "body": {"user": known, "colour": "red"}}),
        ("user and sequence", {"path": route, "body": {"user": known, "sequence": [1]}}),
        ("/match on a recommender", {"path": "/match", "body": {"record": {"name": "x"}}}),
    ]
    return cases


def check_malformed(port: int, cases: list[tuple[str, dict]]) -> list[dict[str, Any]]:
    """Send each case; record its status, whether it was a 4xx, and whether ``/health`` answered 200 after it."""
    out = []
    for name, spec in cases:
        spec = dict(spec)
        try:
            if "headers" in spec:
                status = _header_only(port, spec["headers"])
            else:
                status = request(port, spec.pop("method", "POST"), spec.pop("path"), **spec)[0]
        except (OSError, http.client.HTTPException) as exc:
            status = f"{type(exc).__name__}"
        try:
            healthy = request(port, "GET", "/health", timeout=10)[0] == 200
        except OSError:
            healthy = False
        out.append({"case": name, "status": status, "is_4xx": isinstance(status, int) and 400 <= status < 500,
                    "healthy_after": healthy})
    return out
