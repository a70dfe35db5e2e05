"""``mcp-celery-bridge serve`` and ``mcp-celery-bridge dev``."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import subprocess
import sys

import uvicorn

from bridge.app import create_app
from bridge.settings import Settings


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mcp-celery-bridge")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the MCP endpoint at http://HOST:PORT/mcp")
    dev = commands.add_parser("dev", help="run a bridge and a Celery worker together")
    for sub in (serve, dev):
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8000)
        sub.add_argument("--log-level", default="info")
    dev.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args(argv)

    settings = Settings()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    if (
        not _loopback(args.host)
        and not settings.auth_enabled
        and not settings.allow_unauthenticated_remote
    ):
        parser.exit(
            2,
            f"mcp-celery-bridge: refusing to serve {args.host} without authentication: "
            "configure MCP_BRIDGE_AUTH_TOKENS or a JWT key, or set "
            "MCP_BRIDGE_ALLOW_UNAUTHENTICATED_REMOTE=true\n",
        )
    if args.command == "serve":
        _serve(settings, args.host, args.port, args.log_level)
        return
    worker = _start_worker(args.concurrency, args.log_level)
    try:
        _serve(settings, args.host, args.port, args.log_level)
    finally:
        _stop_worker(worker)


if __name__ == "__main__":
    main()
