"""``mcp-celery-bridge``: ``serve`` and ``dev``, plus the operator commands of
``bridge.admin`` (``tasks``, ``sessions``)."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import TypeVar

import click
import uvicorn

from bridge.admin import sessions, tasks
from bridge.app import create_app
from bridge.settings import Settings

F = TypeVar("F", bound=Callable[..., None])


def _serve(settings: Settings, host: str, port: int, log_level: str) -> None:
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )


def _start_worker(concurrency: int, log_level: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers",
        "worker",
        "-P",
        "prefork",
        "-c",
        str(concurrency),
        "-E",
        "-l",
        log_level,
    ]
    # Its own process group: Ctrl-C reaches the bridge only, which then stops the worker
    # (and its pool children) deliberately.
    return subprocess.Popen(command, start_new_session=True)


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """An MCP server whose tools run as Celery tasks, and its operator commands."""


main.add_command(tasks)
main.add_command(sessions)


def _server_options(command: F) -> F:
    command = click.option("--log-level", default="info", show_default=True)(command)
    command = click.option("--port", type=int, default=8000, show_default=True)(command)
    return click.option("--host", default="127.0.0.1", show_default=True)(command)


def _prepare(host: str, log_level: str) -> Settings:
    settings = Settings()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    if (
        not _loopback(host)
        and not settings.auth_enabled
        and not settings.allow_unauthenticated_remote
    ):
        click.echo(
            f"mcp-celery-bridge: refusing to serve {host} without authentication: "
            "configure MCP_BRIDGE_AUTH_TOKENS or a JWT key, or set "
            "MCP_BRIDGE_ALLOW_UNAUTHENTICATED_REMOTE=true",
            err=True,
        )
        # 2, as a usage error: scripts that checked the argparse-era exit code still work.
        raise SystemExit(2)
    return settings


@main.command()
@_server_options
def serve(host: str, port: int, log_level: str) -> None:
    """Serve the MCP endpoint at http://HOST:PORT/mcp."""
    _serve(_prepare(host, log_level), host, port, log_level)


@main.command()
@_server_options
@click.option("--concurrency", type=int, default=2, show_default=True)
def dev(host: str, port: int, log_level: str, concurrency: int) -> None:
    """Run a bridge and a Celery worker together; Ctrl-C stops both."""
    settings = _prepare(host, log_level)
    worker = _start_worker(concurrency, log_level)
    url = f"http://{host}:{port}/mcp"
    click.echo(
        f"\nMCP endpoint: {url}   (health: http://{host}:{port}/readyz)\n"
        f"Flower, if installed: celery -A workers flower  -> http://127.0.0.1:5555\n"
        f"Try a task:   see README.md, 'Calling a tool as a task with curl' (URL={url})\n",
        err=True,
    )
    try:
        _serve(settings, host, port, log_level)
    finally:
        _stop_worker(worker)


if __name__ == "__main__":
    main(prog_name="mcp-celery-bridge")
