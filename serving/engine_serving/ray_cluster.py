"""Joining a Ray cluster, or starting a local one on 127.0.0.1, for the engine's distributed work.

:class:`RayCluster` is what ``engine score --backend ray`` (and the linkage scale benchmark) use: ``start()`` joins
the cluster at ``address`` (``HOST:PORT`` of its head, or ``auto``) after checking that it answers, or, without an
address, starts a local cluster whose servers are all bound to the loopback interface; ``stop()`` shuts the local
cluster down (or only disconnects from a running one). While it runs, Ray's driver-side messages (a worker died, a
task is retried), which Ray prints on stdout from a thread of its own, go to stderr, so a command's stdout carries
only its report. Ray is imported here and nowhere in the core: without the ``ray`` extra, :func:`import_ray` says
which one to install.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

from .errors import JobError

__all__ = ["RayCluster", "import_ray", "RAY_INSTALL"]

RAY_INSTALL = "pip install 'engine[ray]' (in a checkout: pip install -e \".[ray]\")"

#: the environment of a local cluster: Ray binds 127.0.0.1 only when it treats the machine as a single-node
#: (laptop) install, which the first variable selects; no usage report
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def import_ray():
    """The ``ray`` module, or a JobError naming the extra to install."""
    try:
        import ray
    except ModuleNotFoundError:
        raise JobError(f"--backend ray needs Ray, which is not installed here: {RAY_INSTALL}") from None
    return ray


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """A one-line JobError unless ``HOST:PORT`` accepts a TCP connection (Ray itself retries for a minute)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise JobError(f"--ray-address: expected HOST:PORT of a running Ray cluster's head (or 'auto'), "
                       f"got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise JobError(f"--ray-address {address}: cannot reach a Ray cluster there "
                       f"({exc.strerror or exc}); start one with `ray start --head` or leave out --ray-address "
                       "to use a local one") from None


class RayCluster:
    """A Ray connection for one job. ``num_cpus`` sizes a local cluster (default: every core); ``runtime_env`` is
    Ray's, for the job's workers (e.g. ``{"py_modules": [...]}`` to ship code that the nodes do not have)."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 runtime_env: dict[str, Any] | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.runtime_env = runtime_env
        self.ray: Any = None
        self.startup_s = 0.0
        self._env: dict[str, str | None] = {}
        self._stdout: Any = None

    @property
    def local(self) -> bool:
        return self.address is None

    def start(self):
        """Join or start the cluster; returns the ``ray`` module. Raises JobError (nothing started) on failure."""
        self._stdout, sys.stdout = sys.stdout, sys.stderr
        try:
            return self._start()
        except BaseException:
            self._restore()
            raise

    def _start(self):
        tic = time.perf_counter()
        if self.address not in (None, "auto"):
            check_reachable(self.address)
        if self.local:
            for key, value in LOCAL_ENV.items():
                self._env[key] = os.environ.get(key)
                os.environ[key] = value
        ray = import_ray()
        try:
            if self.local:
                import ray._private.ray_constants as constants

                constants.ENABLE_RAY_CLUSTER = False  # when ray was imported before the variable was set
                ray.init(address="local", num_cpus=self.num_cpus or os.cpu_count() or 1, include_dashboard=False,
                         log_to_driver=False, _node_ip_address="127.0.0.1", configure_logging=False,
                         runtime_env=self.runtime_env)
            else:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False,
                         runtime_env=self.runtime_env)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise JobError(f"--ray-address {self.address or '(local)'}: cannot start or join the Ray cluster "
                           f"({str(exc).splitlines()[0]}); a cluster with token authentication needs RAY_AUTH_MODE"
                           "=token and its token (RAY_AUTH_TOKEN)") from None
        self.ray = ray
        self.startup_s = time.perf_counter() - tic
        return ray

    def cpus(self) -> int:
        return int(self.ray.cluster_resources().get("CPU", 1))

    def stop(self) -> None:
        if self.ray is not None:
            self.ray.shutdown()  # stops a local cluster; only disconnects from a running one
            self.ray = None
        self._restore()

    def _restore(self) -> None:
        if self._stdout is not None:
            sys.stdout, self._stdout = self._stdout, None
        for key, value in self._env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._env.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
