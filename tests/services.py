"""Real services for the tests: a private redis-server, and Celery worker and bridge
subprocesses on it with a key prefix of their own; waiting on a condition with a deadline
(``wait_for``, ``eventually``); and what /proc says of a process (its state, parent,
children)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import redis

from mcp_celery_bridge.bridge.dev import stop_group, worker_command
from mcp_celery_bridge.bridge.scan import collect
from mcp_celery_bridge.bridge.shared.keys import Keys
from mcp_celery_bridge.bridge.shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, every: float = 0.05
) -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


async def eventually(
    condition: Callable[[], Awaitable[Any] | Any], timeout: float, what: str, every: float = 0.05
) -> Any:
    """Call (and await) ``condition`` until it returns something truthy; fail after
    ``timeout`` s."""
    try:
        with anyio.fail_after(timeout):
            while True:
                value = condition()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return value
                await anyio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def pid_state(pid: int) -> str:
    """The process state letter from /proc ("R", "S", "Z", ...), or "" when there is no such
    process (it exited and its parent reaped it)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return ""
    # The fields after the command name (which is in parentheses) start with state, ppid.
    return stat.rsplit(")", 1)[1].split()[0]


def pid_running(pid: int) -> bool:
    """Whether ``pid`` still runs. A terminated child stays a zombie ("Z") until its parent
    reaps it; Celery's prefork pool sometimes reaps only on its 5 s maintenance timer, but a
    zombie runs nothing any more."""
    return pid_state(pid) not in ("", "Z", "X")


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def children(pid: int) -> list[int]:
    """The direct children of ``pid``, zombies included (scans /proc: this kernel has no
    task/*/children)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if parent_pid(int(entry)) == pid:
                    found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited meanwhile
    return sorted(found)


@functools.cache
def tls() -> ssl.SSLContext:
    """The SSL context of the suite's httpx clients (``verify=tls()``). httpx builds one per
    client otherwise, loading the CA bundle: some 50 ms of CPU, which a loop polling a
    starting process every 50 ms paid at each poll, beside the process it waited for."""
    return ssl.create_default_context()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_env(redis_url: str) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {
        "MCP_BRIDGE_REDIS_URL": redis_url,
        "MCP_BRIDGE_KEY_PREFIX": f"mcpt-{run}",
        "MCP_BRIDGE_QUEUE": f"mcpt-{run}",
        "MCP_BRIDGE_TOOL_MODULES": "mcp_celery_bridge.workers.examples,tests.tools",
        "MCP_BRIDGE_POLL_INTERVAL_MS": "500",
        # The tests open sessions without deleting them, all unauthenticated (so counted
        # together): the limit is tested on bridges of its own (tests/test_quotas.py).
        "MCP_BRIDGE_MAX_SESSIONS_PER_PRINCIPAL": "100000",
    }


def settings_of(env: dict[str, str]) -> Settings:
    """The Settings a bridge process started with ``env`` would read."""
    values: dict[str, Any] = {
        key.removeprefix("MCP_BRIDGE_").lower(): value
        for key, value in env.items()
        if key.startswith("MCP_BRIDGE_")
    }
    return Settings(**values)


def keys_of(env: dict[str, str]) -> Keys:
    """The registry's keys of a bridge or worker started with ``env``. A test names a key
    through these, never by hand: a suite run with shards (``MCP_TEST_REDIS_SHARDS``, which
    reaches Settings as MCP_BRIDGE_REDIS_SHARDS) puts a hash tag in every key."""
    return Keys.of(settings_of(env))


def find_tasks(
    client: redis.Redis,
    keys: Keys,
    keep: Callable[[dict[str, str]], bool] = lambda record: True,
    limit: int = 0,
) -> list[str]:
    """The ids of the task records under ``keys`` that ``keep`` accepts (at most ``limit``;
    0: all), found by SCAN as the operator's commands find them (``bridge.scan``: the
    pattern of every shard). ``client`` decodes responses."""

    def kept(task_id: str, record: dict[str, str], _pttl: int) -> str | None:
        return task_id if keep(record) else None

    return collect(client, keys, "task", limit, kept)[0]


def outside_settings() -> list[str]:
    """The variables of the environment the suite was started in that would point a bridge or
    worker elsewhere (a developer's MCP_BRIDGE_BROKER_URL, say): the suite drops them."""
    return [name for name in os.environ if name.startswith(("MCP_BRIDGE_", "CELERY_"))]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        stop_group(self.popen, sig, timeout)


def spawn(
    name: str,
    command: list[str],
    env: dict[str, str],
    log: Path,
    append: bool = False,
    cwd: Path = ROOT,
) -> Process:
    """Start ``command`` in its own process group, in ``cwd``, output to ``log`` (appended to
    when ``append``, so a restarted process keeps its predecessor's output)."""
    with log.open("ab" if append else "wb") as out:
        popen = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(name, popen, log)


class Service:
    """A service process a test can SIGKILL and start again on the same port (``proc`` is
    its current process)."""

    proc: Process | None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.stop(signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def output(self) -> str:
        return self.proc.output() if self.proc is not None else ""


@dataclass
class RedisServer(Service):
    """A private redis-server that keeps nothing, so stopping it loses every key, and the
    suite touches no Redis but its own."""

    log_dir: Path
    port: int = field(default_factory=free_port)
    proc: Process | None = None
    #: More redis-server options (a Cluster node's, say).
    options: list[str] = field(default_factory=list)
    #: The CA of a server that speaks only TLS (its options say so): how to reach it.
    tls_ca: Path | None = None

    def client(self, **kwargs: Any) -> redis.Redis:
        tls = {"ssl": True, "ssl_ca_certs": str(self.tls_ca)} if self.tls_ca else {}
        return redis.Redis(port=self.port, **tls, **kwargs)

    @property
    def url(self) -> str:
        return self.database(0)

    def database(self, number: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{number}"

    def start(self) -> None:
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.log_dir),
            *self.options,
        ]
        self.proc = spawn(
            "redis", command, {}, self.log_dir / f"redis-{self.port}.log", append=True
        )
        client = self.client(socket_connect_timeout=0.5)

        def answers() -> bool:
            if not self.alive():
                raise AssertionError(self.output() or "not started")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            wait_for(answers, 10, f"redis-server on port {self.port}")
        finally:
            client.close()


@contextlib.contextmanager
def celery_worker(
    env: dict[str, str],
    log_dir: Path,
    concurrency: int = 2,
    name: str | None = None,
    *,
    app: str = "mcp_celery_bridge.workers",
    log_level: str = "info",
    ready: Callable[[Process], bool] | None = None,
    queues: str = "",
    cwd: Path = ROOT,
) -> Iterator[Process]:
    """A prefork worker of ``app`` (``dev``'s command) started in ``cwd``, consuming
    ``queues`` (comma-separated; empty: the app's own), ready once it printed its ready line
    (or ``ready`` says so: a quieter log level prints none); stopped at the end."""
    name = name or "w" + uuid.uuid4().hex[:6]
    options = ("-n", f"{name}@%h", "--without-mingle", "--without-gossip")
    if queues:
        options += ("-Q", queues)
    command = worker_command(concurrency, log_level, *options, app=app)
    proc = spawn(name, command, env, log_dir / f"{name}.log", cwd=cwd)
    started = ready or (lambda proc: " ready." in proc.output())
    try:
        wait_for(lambda: not proc.alive() or started(proc), 60, f"the worker {name}")
        assert proc.alive(), proc.output()[-4000:]
        yield proc
    finally:
        proc.stop()


@dataclass
class Bridge(Service):
    """A ``serve`` process on a port of its own, which a test can SIGKILL and start again on
    the same port (its log goes on)."""

    env: dict[str, str]
    log_dir: Path
    name: str
    log_level: str = "info"
    port: int = field(default_factory=free_port)
    proc: Process | None = None
    cwd: Path = ROOT
    #: How ``serve`` is started: ``python -m`` with this interpreter unless given (the
    #: installed ``mcp-celery-bridge`` script, say).
    program: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        program = self.program or (sys.executable, "-m", "mcp_celery_bridge.bridge.cli")
        command = [*program, "serve", "--port", str(self.port), "--log-level", self.log_level]
        log = self.log_dir / f"{self.name}.log"
        proc = spawn(self.name, command, self.env, log, append=self.proc is not None, cwd=self.cwd)
        self.proc = proc

        def up() -> bool:
            if not proc.alive():
                raise AssertionError(proc.output()[-4000:])
            try:
                answer = httpx.get(self.url, timeout=1, verify=tls())
                return answer.status_code in (400, 405, 406)
            except httpx.TransportError:
                return False

        wait_for(up, 30, f"{self.name} on port {self.port}")


@contextlib.contextmanager
def running_bridge(
    env: dict[str, str],
    log_dir: Path,
    name: str = "bridge",
    log_level: str = "info",
    cwd: Path = ROOT,
    program: tuple[str, ...] = (),
) -> Iterator[Bridge]:
    """A started ``Bridge`` (``serve`` in ``cwd``, by ``program``: see ``Bridge``), stopped
    at the end; its log must hold no traceback."""
    bridge = Bridge(env, log_dir, name, log_level, cwd=cwd, program=program)
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.stop()
        assert "Traceback" not in bridge.output(), bridge.output()[-4000:]


@contextlib.contextmanager
def bridge_server(
    env: dict[str, str], log_dir: Path, name: str = "bridge", cwd: Path = ROOT
) -> Iterator[str]:
    """``running_bridge``'s URL."""
    with running_bridge(env, log_dir, name, cwd=cwd) as bridge:
        yield bridge.url
