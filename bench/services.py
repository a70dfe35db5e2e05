"""The services a benchmark run needs, all real subprocesses against Redis database 9 on
127.0.0.1:6379, with a key prefix and queues unique to the run:

- a bridge worker: ``celery -A workers worker -P prefork -c 2`` on the bridge's queue;
- a raw worker: ``celery -A bench.rawcelery worker -P prefork -c 2`` on the raw queue
  (same pool, concurrency, prefetch, events and log level);
- bridges: ``mcp-celery-bridge serve`` on free ports (one shared, more on demand).

Database 9 is flushed when the services start and when they stop; no other database is
touched."""

from __future__ import annotations

import os
import resource
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis
from celery import Celery

from bench import procs

# The test harness's polling and port helpers; bench runs with the dev extras installed.
from tests.services import Process, free_port, spawn, wait_for

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_DB = 9
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
#: Worker flags shared by the bridge worker and the raw worker.
WORKER_FLAGS = ["-P", "prefork", "-c", "2", "--without-mingle", "--without-gossip"]
WORKER_LOG_LEVEL = "warning"
BRIDGE_LOG_LEVEL = "warning"


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Bridge:
    process: Process
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


@dataclass
class Services:
    """Start with ``start()``, stop with ``stop()`` (or use as a context manager)."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-logs-")))
    worker: Process | None = None
    raw_worker: Process | None = None
    bridge: Bridge | None = None
    extra_bridges: list[Bridge] = field(default_factory=list)

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
            "MCP_BRIDGE_TOOL_MODULES": "workers.examples,bench.tools",
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
        self.worker = self._spawn(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "workers",
                "worker",
                *WORKER_FLAGS,
                "-n",
                f"bench-w-{self.run_id}@%h",
                "-l",
                WORKER_LOG_LEVEL,
            ],
            self.bridge_env(),
        )
        self.raw_worker = self._spawn(
            "raw-worker",
            [
                str(BIN / "celery"),
                "-A",
                "bench.rawcelery",
                "worker",
                *WORKER_FLAGS,
                "-n",
                f"bench-raw-{self.run_id}@%h",
                "-l",
                WORKER_LOG_LEVEL,
            ],
            self.raw_env(),
        )
        self.bridge = self.start_bridge("bridge")
        self._wait_worker(self.worker, f"bench-w-{self.run_id}@", control_exchange="celery")
        from bench import rawcelery

        self._wait_worker(
            self.raw_worker, f"bench-raw-{self.run_id}@", control_exchange=rawcelery.CONTROL
        )

    def stop(self) -> None:
        for bridge in [*self.extra_bridges, *([self.bridge] if self.bridge else [])]:
            bridge.process.stop()
        for proc in (self.worker, self.raw_worker):
            if proc is not None:
                proc.stop()
        client = self.redis()
        client.flushdb()
        client.close()

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> Process:
        # ROOT on the path: the bridge imports bench.tools (console scripts do not put the
        # working directory on sys.path).
        env = {**env, "PYTHONPATH": str(ROOT)}
        return spawn(name, command, env, self.log_dir / f"{name}.log", append=True)

    def _wait_worker(self, proc: Process, node_prefix: str, control_exchange: str) -> None:
        control = Celery("bench-control", broker=REDIS_URL, set_as_current=False)
        control.conf.control_exchange = control_exchange
        try:

            def up() -> bool:
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} died:\n{proc.output()[-3000:]}")
                replies = control.control.ping(timeout=0.5)
                return any(node.startswith(node_prefix) for r in replies for node in r)

            wait_for(up, 60, f"the {proc.name}", every=0.2)
        finally:
            control.close()

    def start_bridge(self, name: str) -> Bridge:
        """A new ``mcp-celery-bridge serve`` process, ready to answer."""
        port = free_port()
        proc = self._spawn(
            f"{name}-{port}",
            [
                str(BIN / "mcp-celery-bridge"),
                "serve",
                "--port",
                str(port),
                "--log-level",
                BRIDGE_LOG_LEVEL,
            ],
            self.bridge_env(),
        )
        bridge = Bridge(proc, port)

        def up() -> bool:
            if not proc.alive():
                raise RuntimeError(f"bridge died:\n{proc.output()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                    # Any HTTP answer will do (the status of a bare GET differs by version).
                    return s.recv(64).startswith(b"HTTP/1.1 ")
            except OSError:
                return False

        wait_for(up, 30, f"the bridge on port {port}", every=0.1)
        # The lifespan has started the event listener; give its SUBSCRIBE a moment.
        time.sleep(0.3)
        if name != "bridge":
            self.extra_bridges.append(bridge)
        return bridge

    def stop_bridge(self, bridge: Bridge) -> None:
        bridge.process.stop()
        if bridge in self.extra_bridges:
            self.extra_bridges.remove(bridge)

    # -- process map -----------------------------------------------------------------------
    def worker_pids(self, proc: Process | None) -> list[int]:
        """The worker's main process and its pool children (the celery main process is
        the one we started; ``celery`` is a console script, so no wrapper process)."""
        if proc is None:
            return []
        return [proc.pid, *procs.children(proc.pid)]

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
