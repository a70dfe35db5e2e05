"""``mcp-celery-bridge dev``: a bridge, a prefork worker and (when installed) Flower, with
their logs on one terminal, each line prefixed with its process's name.

The bridge runs in this process; the worker and Flower are children in their own process
groups, so a Ctrl-C reaches the bridge alone, which then stops them deliberately (a worker
given SIGINT twice would stop its pool without waiting).

The worker's command line and the way a process group is stopped are the tests' and the
benchmark's too (tests/services.py), so what they run is what ``dev`` runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import click

from mcp_celery_bridge.bridge.shared.clients import REDIS_ERRORS, shown, sync_client
from mcp_celery_bridge.bridge.shared.settings import Settings

REDIS_HELP = """\
Redis does not answer at {url}: {error}
The bridge keeps its tasks, sessions and streams in Redis, and Celery uses it as the broker.
Start one on this machine:
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
(or: docker run -d -p 127.0.0.1:6379:6379 redis:7), or point MCP_BRIDGE_REDIS_URL at yours."""


def redis_problem(url: str, ca_file: str = "") -> str | None:
    """Why Redis at ``url`` cannot be used, or None when it answers a PING."""
    try:
        client = sync_client(url, ca_file=ca_file)
    except REDIS_ERRORS as exc:  # a Cluster connects as its client is made
        return REDIS_HELP.format(url=shown(url), error=exc)
    try:
        client.ping()
    except REDIS_ERRORS as exc:
        return REDIS_HELP.format(url=shown(url), error=exc)
    finally:
        client.close()
    return None


def flower_installed() -> bool:
    return importlib.util.find_spec("flower") is not None


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    pump: threading.Thread
    #: Set once the child printed its ready line (``start``'s ``ready_line``).
    ready: threading.Event = field(default_factory=threading.Event)

    def stop(self, timeout: float = 15) -> None:
        stop_group(self.popen, timeout=timeout)
        self.pump.join(timeout=2)


def stop_group(
    popen: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15
) -> None:
    """Send ``sig`` to the process group ``popen`` leads (started with
    ``start_new_session``) and wait for it; SIGKILL the group if it is still there after
    ``timeout`` seconds. The tests' and the benchmark's processes stop the same way."""
    if popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, sig)
    try:
        popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()


def _pump(
    prefix: str,
    source: IO[bytes],
    echo: Callable[[str], None],
    ready_line: str,
    ready: threading.Event,
) -> None:
    for raw in source:
        line = raw.decode(errors="replace").rstrip()
        echo(f"{prefix}{line}")
        if ready_line and ready_line in line:
            ready.set()


# Runs before the child's own program (exec keeps the setting): the kernel sends the child
# SIGTERM when dev dies, even by SIGKILL, where no `finally` of ours runs.
_DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # the parent died before the line above took effect
os.execv(sys.argv[2], sys.argv[2:])
"""


def start(
    name: str, command: list[str], env: dict[str, str], width: int, ready_line: str = ""
) -> Child:
    if sys.platform == "linux":
        command = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]
    popen = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert popen.stdout is not None
    ready = threading.Event()
    echo: Callable[[str], None] = lambda line: click.echo(line, err=True)  # noqa: E731
    pump = threading.Thread(
        target=_pump,
        args=(f"{name:<{width}} | ", popen.stdout, echo, ready_line, ready),
        name=f"dev-log-{name}",
        daemon=True,
    )
    pump.start()
    return Child(name, popen, pump, ready)


def _celery(*args: str, app: str = "mcp_celery_bridge.workers") -> list[str]:
    return [sys.executable, "-m", "celery", "-A", app, *args]


def worker_command(
    concurrency: int, log_level: str, *options: str, app: str = "mcp_celery_bridge.workers"
) -> list[str]:
    """A prefork Celery worker of ``app`` (with task events, as the app configures them
    anyway); ``options`` are more ``celery worker`` options. The tests and the benchmark
    start their workers with it too."""
    return _celery(
        "worker", "-P", "prefork", "-c", str(concurrency), "-E", "-l", log_level, *options, app=app
    )


def flower_command(port: int) -> list[str]:
    return _celery("flower", "--address=127.0.0.1", f"--port={port}")


def flower_credentials(environ: dict[str, str]) -> tuple[dict[str, str], str]:
    """The environment for Flower and how to log in: Flower shows every worker and task, and
    can revoke them, so it never runs without authentication. ``FLOWER_BASIC_AUTH``
    (``user:password``) is kept when set; otherwise a password is made for this run."""
    given = environ.get("FLOWER_BASIC_AUTH", "")
    if given:
        return {**environ}, f"user {given.split(':', 1)[0]}, password from FLOWER_BASIC_AUTH"
    password = secrets.token_urlsafe(18)
    return {**environ, "FLOWER_BASIC_AUTH": f"mcp:{password}"}, f"user mcp, password {password}"


def announce_when_ready(
    url: str, worker: Child, announce: Callable[[], None], timeout_s: float = 120
) -> None:
    """Call ``announce`` (in a thread of its own) once the stack is ready: the worker printed
    its ready line and the bridge at ``url`` answers ``/readyz``. Announced anyway, late, if
    that does not happen within ``timeout_s``: the banner then says where to look."""

    def wait() -> None:
        ready = url.removesuffix("/mcp") + "/readyz"
        deadline = time.monotonic() + timeout_s
        worker.ready.wait(timeout_s)
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(ready, timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:  # not up yet (URLError, HTTPError and timeouts are OSErrors)
                pass
            time.sleep(0.2)
        announce()

    threading.Thread(target=wait, name="dev-banner", daemon=True).start()


def banner(settings: Settings, url: str, flower_url: str | None) -> str:
    base = url.removesuffix("/mcp")
    # The command as this process was started, so it works pasted whether or not the
    # virtualenv is on PATH.
    if os.path.basename(sys.argv[0]) == "mcp-celery-bridge":
        program = shlex.quote(os.path.abspath(sys.argv[0]))
    else:
        program = f"{shlex.quote(sys.executable)} -m mcp_celery_bridge.bridge.cli"
    token = " --token YOUR_TOKEN" if settings.auth_enabled else ""
    flower = flower_url or "not installed (pip install 'mcp-celery-bridge[flower]')"
    try_it = f"{program} call sleep '{{\"seconds\": 5}}' --url {url}{token}"
    return (
        "\n"
        f"  MCP endpoint  {url}\n"
        f"  Readiness     {base}/readyz    Metrics {base}/metrics\n"
        f"  Flower        {flower}\n"
        f"  Redis         {shown(settings.redis_url)}\n"
        "\n"
        "  Try a tool as a task (in another terminal):\n"
        f"    {try_it}\n"
    )
