"""The services a benchmark run needs, all real subprocesses (started by the tests'
process harness, tests/services.py) against Redis database 9 on 127.0.0.1:6379, with a key
prefix and queues unique to the run:

- a bridge worker: ``celery -A workers worker -P prefork -c 2`` on the bridge's queue;
- a raw worker: ``celery -A bench.rawcelery worker -P prefork -c 2`` on the raw queue
  (same pool, concurrency, prefetch, events and log level);
- bridges: ``mcp-celery-bridge serve`` on free ports (one shared, more on demand).

Database 9 is flushed when the services start and when they stop; no other database is
touched. ``BENCH_REDIS_URL`` names another Redis database to use in its place (a private
redis-server's, say, where no one else's data is)."""

from __future__ import annotations

import contextlib
import os
import resource
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from celery import Celery

# The tests' process harness (bench runs with the dev extras installed): the same worker
# command as ``dev`` and the tests, the same bridge process and readiness check.
from tests.services import Bridge, Process, celery_worker, children, free_port

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
_REDIS = urllib.parse.urlsplit(REDIS_URL)
REDIS_HOST = _REDIS.hostname or "127.0.0.1"
REDIS_PORT = _REDIS.port or 6379
REDIS_DB = int(_REDIS.path.lstrip("/") or 0)
#: Shared by the bridge worker and the raw worker.
WORKER_CONCURRENCY = 2
WORKER_LOG_LEVEL = "warning"
BRIDGE_LOG_LEVEL = "warning"


def worker_line(app: str) -> str:
    """How the workers of ``app`` are started, for the report."""
    return (
        f"celery -A {app} worker -P prefork -c {WORKER_CONCURRENCY} -E -l {WORKER_LOG_LEVEL} "
        "--without-mingle --without-gossip"
    )


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Services:
    """Start with ``start()``, stop with ``stop()`` (or use as a context manager)."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-logs-")))
    worker: Process | None = None
    raw_worker: Process | None = None
    bridge: Bridge | None = None
    extra_bridges: list[Bridge] = field(default_factory=list)
    _workers: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def prefix(self) -> str:
        return f"bench-{self.run_id}"

    @property
    def queue(self) -> str:
        return f"bench-{self.run_id}"

    @property
    def raw_queue(self) -> str:
        return f"bench-raw-{self.run_id}"

    def bridge_env(self) -> dict[str, str]:
        return {
            "MCP_BRIDGE_REDIS_URL": REDIS_URL,
            "MCP_BRIDGE_KEY_PREFIX": self.prefix,
            "MCP_BRIDGE_QUEUE": self.queue,
            "MCP_BRIDGE_TOOL_MODULES": "mcp_celery_bridge.workers.examples,bench.tools",
            # Every session of a run is unauthenticated, so all count against one
            # principal's limit (1,000 by default), and none is deleted: the streams
            # scenario alone opens 6,100 (the tests raise the limit alike).
            "MCP_BRIDGE_MAX_SESSIONS_PER_PRINCIPAL": "1000000",
            # The streams scenario holds up to 5,000 streams and 32 more connections on one
            # bridge: past the default 1,000 connections it would be answered 503.
            "MCP_BRIDGE_MAX_CONNECTIONS": "100000",
        }

    def raw_env(self) -> dict[str, str]:
        return {"BENCH_RAW_REDIS_URL": REDIS_URL, "BENCH_RAW_QUEUE": self.raw_queue}

    def redis(self) -> redis.Redis:
        return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, decode_responses=True)

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Services:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        raise_fd_limit()
        os.environ.update(self.bridge_env())
        os.environ.update(self.raw_env())
        client = self.redis()
        client.ping()
        client.flushdb()
        client.close()
        from bench import rawcelery

        self.worker = self._start_worker(
            "mcp_celery_bridge.workers", f"bench-w-{self.run_id}", "celery"
        )
        self.raw_worker = self._start_worker(
            "bench.rawcelery", f"bench-raw-{self.run_id}", rawcelery.CONTROL
        )
        self.bridge = self.start_bridge("bridge")

    def stop(self) -> None:
        for bridge in [*self.extra_bridges, *([self.bridge] if self.bridge else [])]:
            bridge.stop()
        self._workers.close()
        client = self.redis()
        client.flushdb()
        client.close()

    def adopt(self, stop: Callable[[], None]) -> None:
        """Call ``stop`` when the services stop (before the workers): for processes a
        scenario starts and keeps for every run, such as the peer servers."""
        self._workers.callback(stop)

    def _start_worker(self, app: str, name: str, control_exchange: str) -> Process:
        env = self.bridge_env() if app == "mcp_celery_bridge.workers" else self.raw_env()
        worker = celery_worker(
            env,
            self.log_dir,
            WORKER_CONCURRENCY,
            name,
            app=app,
            log_level=WORKER_LOG_LEVEL,
            ready=self._answers_ping(f"{name}@", control_exchange),
        )
        return self._workers.enter_context(worker)

    def _answers_ping(self, node_prefix: str, control_exchange: str) -> Callable[[Process], bool]:
        """Whether a worker answers a control ping: at the warning level it prints no
        ready line."""
        control = Celery("bench-control", broker=REDIS_URL, set_as_current=False)
        control.conf.control_exchange = control_exchange
        self._workers.callback(control.close)

        def up(proc: Process) -> bool:
            replies = control.control.ping(timeout=0.5)
            return any(node.startswith(node_prefix) for r in replies for node in r)

        return up

    def start_bridge(self, name: str) -> Bridge:
        """A new ``mcp-celery-bridge serve`` process, ready to answer."""
        port = free_port()
        bridge = Bridge(self.bridge_env(), self.log_dir, f"{name}-{port}", BRIDGE_LOG_LEVEL, port)
        bridge.start()
        # The lifespan has started the event listener; give its SUBSCRIBE a moment.
        time.sleep(0.3)
        if name != "bridge":
            self.extra_bridges.append(bridge)
        return bridge

    def stop_bridge(self, bridge: Bridge) -> None:
        bridge.stop()
        if bridge in self.extra_bridges:
            self.extra_bridges.remove(bridge)

    # -- process map -----------------------------------------------------------------------
    def worker_pids(self, proc: Process | None) -> list[int]:
        """The worker's main process and its pool children (the celery main process is
        the one we started: ``python -m celery``, no wrapper process)."""
        if proc is None:
            return []
        return [proc.pid, *children(proc.pid)]

    def labelled_pids(self) -> dict[int, str]:
        labels: dict[int, str] = {os.getpid(): "bench client"}
        if self.bridge:
            labels[self.bridge.pid] = "bridge"
        for bridge in self.extra_bridges:
            labels[bridge.pid] = "bridge"
        for role, proc in (("worker", self.worker), ("raw worker", self.raw_worker)):
            pids = self.worker_pids(proc)
            for i, pid in enumerate(pids):
                labels[pid] = f"{role} main" if i == 0 else f"{role} child"
        return labels
