"""Timed phases of a benchmark script: wall and CPU seconds, resident and peak memory after each, printed as it goes."""

from __future__ import annotations

import json
import os
import resource
import time

START = time.perf_counter()


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the system (glibc ``malloc_trim``). Chunked loops allocate and free
    tens of megabytes per step; glibc's adaptive mmap threshold then serves them from the heap, which fragments and
    kept ~10 GB of freed memory resident in the re-ranker at 1M records before this."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


class Phases:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}
        self._tic = 0.0

    def start(self, name: str) -> None:
        self._name, self._tic, self._cpu = name, time.perf_counter(), time.process_time()
        print(f"[{time.perf_counter() - START:7.1f}s] {name} ...", flush=True)

    def stop(self, **extra) -> None:
        release_free_memory()
        row = {"seconds": round(time.perf_counter() - self._tic, 2),
               "cpu_seconds": round(time.process_time() - self._cpu, 2), "rss_gb": round(rss_gb(), 3),
               "peak_rss_gb": round(peak_gb(), 3), **extra}
        self.rows[self._name] = row
        print(f"[{time.perf_counter() - START:7.1f}s] {self._name}: {json.dumps(row)}", flush=True)
