"""Starting and joining the processes of a data-parallel run (``engine run PIPELINE --nproc N``).

``engine run --nproc N`` on one machine starts ``N`` worker processes itself, torchrun-style: each gets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR=127.0.0.1`` and a free ``MASTER_PORT``, joins one process group
(gloo on CPU, nccl on CUDA, one GPU per rank) and trains. A run started by ``torchrun`` (several machines, or a
scheduler) sets those variables itself; :func:`init_from_env` then joins the group it describes.

Workers see the plugins of the process that started them: every plugin registered there (built-in, from an entry
point, or in memory by a test fixture) is registered again in each worker, by module name (or pickled when it is
not a module). The first worker to fail decides the outcome: its one-line error (exit 2) or its traceback (exit 1);
the other workers are then stopped. Ctrl-C or SIGTERM stops every worker (they end their tracking run as KILLED
where they can) and the run stays resumable.
"""

from __future__ import annotations

import datetime
import importlib
import multiprocessing.connection
import os
import pickle
import signal
import socket
import sys
import traceback
import types
from typing import Any, Callable

from ..errors import EngineError

#: how long a rank waits for the others in a collective before it fails (evaluation on rank 0 included)
TIMEOUT = datetime.timedelta(minutes=30)
GRACE_S = 5.0


class WorkerError(EngineError):
    """A worker of a data-parallel run failed; the message is the worker's."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def backend_for(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def launched_by_torchrun() -> bool:
    """Whether the environment describes a process group to join (``torchrun`` sets these variables)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ and "MASTER_ADDR" in os.environ


def init_from_env(device_type: str) -> None:
    """Join the process group the environment describes (``env://``: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device_type == "cuda":
        import torch

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend_for(device_type), init_method="env://", timeout=TIMEOUT)


def _plugins_to_mirror() -> list[tuple[str, str, bytes | None]]:
    """``(name, module, pickled)`` of every plugin registered here that a fresh process would not have."""
    from ..plugins import pm

    out = []
    for name, obj in pm.list_name_plugin():
        if obj is None:
            continue
        if isinstance(obj, types.ModuleType):
            out.append((name, obj.__name__, None))
            continue
        try:
            out.append((name, "", pickle.dumps(obj)))
        except Exception as exc:  # an in-memory object a worker cannot rebuild
            raise EngineError(f"--nproc: plugin {name!r} ({type(obj).__name__}) cannot be sent to worker processes "
                              f"({exc}); install it as a package (entry point) or register a module") from None
    return out


def _register_plugins(plugins: list[tuple[str, str, bytes | None]]) -> None:
    from ..plugins import load_plugins, pm, reset_registry

    load_plugins()
    for name, module, pickled in plugins:
        if pm.get_plugin(name) is not None or (module and pm.is_registered(importlib.import_module(module))):
            continue
        pm.register(importlib.import_module(module) if pickled is None else pickle.loads(pickled), name=name)
    reset_registry()


def _worker(rank: int, world: int, port: int, device_type: str, plugins, target: Callable, args: tuple,
            results) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})

    def stop(signum, frame):  # once: a second signal must not break the tracking run's clean end
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    try:
        _register_plugins(plugins)
        init_from_env(device_type)
        # pickled here, by value: through the queue a tensor would travel as a shared-memory handle, dead once the
        # worker exits
        results.put((rank, "ok", pickle.dumps(target(*args))))
        leave_together()
    except EngineError as err:
        results.put((rank, "error", (str(err), err.exit_code)))
        code = err.exit_code
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # a bug: the parent prints the traceback
        results.put((rank, "bug", traceback.format_exc()))
        code = 1
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    sys.exit(code)


def leave_together() -> None:
    """Wait for every rank before tearing the group down: a gloo group torn down while a peer still works can abort
    the process at exit ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch(nproc: int, device_type: str, target: Callable, args: tuple = ()) -> Any:
    """Run ``target(*args)`` in ``nproc`` ranks of one process group on this machine; return rank 0's result.

    Raises :class:`WorkerError` with the first failing rank's message (its traceback is printed first when it is a
    bug), or KeyboardInterrupt after stopping every worker on Ctrl-C / SIGTERM.
    """
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    plugins = _plugins_to_mirror()
    port = free_port()
    procs = [ctx.Process(target=_worker, name=f"engine-rank{r}",
                         args=(r, nproc, port, device_type, plugins, target, args, results)) for r in range(nproc)]
    for p in procs:
        p.start()
    outcomes: dict[int, tuple[str, Any]] = {}
    failures: list[int] = []  # ranks in the order their failures reached the queue: the first one is the cause
    exited: int | None = None  # the first rank seen exiting non-zero

    def drain() -> None:
        while not results.empty():
            rank, kind, payload = results.get()
            if outcomes.get(rank, ("",))[0] == "ok":
                continue  # a failure after the result (in the final barrier): the rank's work is done
            outcomes[rank] = (kind, payload)
            if kind != "ok":
                failures.append(rank)

    try:
        alive = {p.sentinel: r for r, p in enumerate(procs)}
        while alive and exited is None:
            for sentinel in multiprocessing.connection.wait(list(alive), timeout=1.0):
                r = alive.pop(sentinel)
                procs[r].join()
                drain()
                # a rank that delivered its result and crashed in teardown has done its work
                if procs[r].exitcode != 0 and exited is None and outcomes.get(r, ("",))[0] != "ok":
                    exited = r
            drain()
    except BaseException:  # Ctrl-C, SIGTERM (a KeyboardInterrupt here), or the caller's own timeout
        _stop(procs)
        raise
    if exited is not None:
        _stop(procs)
        drain()
        failed = failures[0] if failures else exited
        kind, payload = outcomes.get(failed, (None, None))
        if kind == "error":
            raise WorkerError(payload[0], payload[1])
        if kind == "bug":
            print(f"engine: rank {failed} of {nproc} failed:\n{payload}", file=sys.stderr, end="")
            raise WorkerError(f"rank {failed} of {nproc} failed with the traceback above", exit_code=1)
        code = procs[failed].exitcode
        if code == 130:
            raise KeyboardInterrupt
        raise WorkerError(f"rank {failed} of {nproc} exited with status {code} "
                          f"({'killed by signal ' + str(-code) if code < 0 else 'no message'})", exit_code=1)
    kind, payload = outcomes.get(0, (None, None))
    if kind != "ok":
        raise WorkerError(f"rank 0 of {nproc} ended without a result", exit_code=1)
    return pickle.loads(payload)


def _stop(procs) -> None:
    """SIGTERM to every live worker (a KeyboardInterrupt there), SIGKILL to those still alive after a grace period
    (a rank blocked in a collective whose peer has died)."""
    import time

    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
