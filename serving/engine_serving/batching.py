"""Request batching for ``POST /recommend``: requests that arrive while the model is busy are scored together, in
one onnxruntime run (and one top-k) per group of requests with the same kind (user or sequence), ``k`` and
``exclude_seen``.

One worker task takes the first waiting request, then every other one already waiting (up to ``max_batch``; after
waiting ``max_wait_ms`` for more when that is set), scores them in a thread, answers each, and starts again. Under
no load a request is scored alone at once; under load the batch grows with the queue, so the per-run cost
(onnxruntime's call, the top-k setup, Python) is paid once per batch instead of once per request. A batch runs
alone: onnxruntime parallelises inside it with its own threads.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from .api import Recommendations, finish_recommend, score_rows

__all__ = ["Batcher"]

log = logging.getLogger("engine.serving")


@dataclass
class _Job:
    kind: str  # "user" or "sequence"
    inputs: Any  # internal user index, or score columns of a sequence
    k: int
    exclude_seen: bool
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Scores :func:`engine_serving.api.resolve_recommend` results of concurrent requests in batches."""

    def __init__(self, model, max_batch: int = 64, max_wait_ms: float = 0.0) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 (got {max_batch})")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0 (got {max_wait_ms})")
        self.model, self.max_batch, self.max_wait = model, max_batch, max_wait_ms / 1e3
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        #: sizes of the batches run so far (for tests and /health-style introspection); bounded
        self.batch_sizes: list[int] = []

    async def submit(self, kind: str, inputs: Any, k: int, exclude_seen: bool) -> Recommendations:
        """The answer to one resolved request, scored with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first call, or a new event loop (a test client's): a worker of this loop
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._work())
        future = loop.create_future()
        self._queue.put_nowait(_Job(kind, inputs, k, exclude_seen, future))
        return await future

    async def close(self) -> None:
        """Stop the worker (at application shutdown)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = self._loop = self._queue = None

    async def _work(self) -> None:
        queue = self._queue
        while True:
            jobs = [await queue.get()]
            if self.max_wait and queue.qsize() < self.max_batch - 1:
                await asyncio.sleep(self.max_wait)
            while len(jobs) < self.max_batch and not queue.empty():
                jobs.append(queue.get_nowait())
            jobs = [j for j in jobs if not j.future.done()]  # a client that went away
            if not jobs:
                continue
            answers = await asyncio.to_thread(self._score, jobs)
            if len(self.batch_sizes) < 100_000:
                self.batch_sizes.append(len(jobs))
            for job, answer in zip(jobs, answers):
                if job.future.done():
                    continue
                if isinstance(answer, BaseException):
                    job.future.set_exception(answer)
                else:
                    job.future.set_result(answer)

    def _score(self, jobs: list[_Job]) -> list[Any]:
        """Answers (or exceptions) of ``jobs``, in order: one scoring run per group of equal (kind, k, exclude)."""
        groups: dict[tuple[str, int, bool], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((job.kind, job.k, job.exclude_seen), []).append(i)
        answers: list[Any] = [None] * len(jobs)
        for (kind, k, exclude), members in groups.items():
            try:
                cols, vals = score_rows(self.model, kind, [jobs[i].inputs for i in members], k, exclude)
                for row, i in enumerate(members):
                    answers[i] = finish_recommend(self.model, cols[row], vals[row])
            except Exception as exc:  # noqa: BLE001 - a bug: every request of the group gets it (a 500)
                log.exception("scoring a batch of %d /recommend requests failed", len(members))
                for i in members:
                    answers[i] = exc
        return answers
