"""``mcp-celery-bridge``: ``serve``, ``dev`` and ``call``, plus the operator commands of
``bridge.admin`` (``tasks``, ``sessions``)."""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, TypeVar

import click
from pydantic import ValidationError

from mcp_celery_bridge.bridge import __version__
from mcp_celery_bridge.bridge.shared import logs
from mcp_celery_bridge.bridge.shared.errors import ConfigError
from mcp_celery_bridge.bridge.shared.settings import Settings

# Each command imports what it needs when it runs: the app and uvicorn, Celery and rich, httpx
# cost a command that does not use them a few tenths of a second at every start.
if TYPE_CHECKING:
    import uvicorn

F = TypeVar("F", bound=Callable[..., None])

log = logging.getLogger(__name__)


#: uvicorn's exit status when the server did not start.
STARTUP_FAILURE = 3


def _listen(host: str, port: int) -> socket.socket:
    """The bound socket the server will serve, taken before anything else starts: a port in
    use ends the command here, at once, rather than after the app's background tasks and
    (for ``dev``) the worker and Flower have started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        reason = "the address is already in use" if exc.errno == errno.EADDRINUSE else exc
        click.echo(
            f"mcp-celery-bridge: cannot listen on {host}:{port}: {reason} "
            "(choose another with --port, or stop what serves it)",
            err=True,
        )
        raise SystemExit(1) from None
    return sock


def _serve(
    settings: Settings,
    sock: socket.socket,
    log_level: str,
    make_server: Callable[[uvicorn.Config], uvicorn.Server] | None = None,
) -> None:
    import uvicorn

    from mcp_celery_bridge.bridge.app import create_app
    from mcp_celery_bridge.bridge.deadlines import server_options

    try:
        app = create_app(settings)
    except ConfigError as exc:
        _config_error(exc)
    config = uvicorn.Config(
        app,
        log_level=log_level,
        # Logging is configured already (``bridge.shared.logs``): uvicorn must not replace it.
        log_config=None,
        timeout_graceful_shutdown=5,
        **server_options(settings),
    )
    server = (make_server or uvicorn.Server)(config)
    host, port = sock.getsockname()[:2]
    log.info("serving http://%s:%d/mcp", f"[{host}]" if ":" in host else host, port)
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


def _load_settings() -> Settings:
    """The settings from the environment; a bad one stops the command in one line per
    problem, naming the variable but not its value (which may hold a password)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            name = f"MCP_BRIDGE_{str(error['loc'][0]).upper()}: " if error["loc"] else ""
            problems.append(name + error["msg"].removeprefix("Value error, "))
        _config_error(ConfigError("invalid settings: " + "; ".join(problems)))


def _config_error(exc: ConfigError) -> NoReturn:
    # The operator's mistake, said in one line: a traceback would bury it.
    click.echo(f"mcp-celery-bridge: {exc}", err=True)
    raise SystemExit(2) from None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class _Commands(click.Group):
    """The group of ``main``: the operator commands of ``bridge.admin`` are loaded when one of
    them runs (or ``--help`` lists them), not for ``serve``, ``dev`` or ``call``."""

    OPERATOR = ("sessions", "tasks")

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.OPERATOR])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.OPERATOR:
            from mcp_celery_bridge.bridge import admin

            command: click.Command = getattr(admin, cmd_name)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="mcp-celery-bridge")
def main() -> None:
    """An MCP server whose tools run as Celery tasks, and its operator commands."""


def _server_options(command: F) -> F:
    command = click.option("--log-level", default="info", show_default=True)(command)
    command = click.option("--port", type=int, default=8000, show_default=True)(command)
    return click.option("--host", default="127.0.0.1", show_default=True)(command)


def _prepare(
    settings: Settings,
    host: str,
    log_level: str,
    log_format: logs.LogFormat | None = None,
    prefix: str = "",
) -> None:
    logs.configure(log_level, log_format or settings.log_format, prefix)
    # Tool modules and MCP_BRIDGE_CELERY_APP import from the current directory, as
    # ``celery -A`` does: an installed console script does not have it on the path.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    from mcp_celery_bridge.bridge.publisher import project_app

    try:
        # Imported here too (the app factory imports it again, from the module cache), so a
        # wrong name stops the command before a port is bound or ``dev`` starts a worker.
        project_app(settings)
    except ConfigError as exc:
        _config_error(exc)
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
    if (settings.jwt_key or settings.jwt_jwks_url) and not settings.jwt_audience:
        click.echo(
            "mcp-celery-bridge: refusing JWT authentication without an audience: set "
            "MCP_BRIDGE_JWT_AUDIENCE to this bridge's identifier at your identity provider",
            err=True,
        )
        raise SystemExit(2)


@main.command()
@_server_options
def serve(host: str, port: int, log_level: str) -> None:
    """Serve the MCP endpoint at http://HOST:PORT/mcp."""
    settings = _load_settings()
    _prepare(settings, host, log_level)
    _serve(settings, _listen(host, port), log_level)


@main.command()
@_server_options
@click.option("--concurrency", type=int, default=2, show_default=True)
@click.option("--flower-port", type=int, default=5555, show_default=True)
@click.option("--no-flower", is_flag=True, help="Do not start Flower even if installed.")
def dev(
    host: str, port: int, log_level: str, concurrency: int, flower_port: int, no_flower: bool
) -> None:
    """Run a bridge, a Celery worker and Flower together; Ctrl-C stops them all."""
    from mcp_celery_bridge.bridge import dev as dev_run
    from mcp_celery_bridge.bridge.supervisor import Supervisor

    settings = _load_settings()
    problem = dev_run.redis_problem(settings.redis_url, settings.redis_ca_file)
    if problem is not None:
        click.echo(problem, err=True)
        raise SystemExit(1)
    text = settings.log_format != "json"
    _prepare(settings, host, log_level, "text" if text else "json", "bridge | " if text else "")
    # Unbuffered: a tool's print() reaches the terminal when it happens, not per 8 KB.
    env = {
        **os.environ,
        "MCP_BRIDGE_LOG_FORMAT": "text" if text else "json",
        "PYTHONUNBUFFERED": "1",
    }
    sock = _listen(host, port)
    worker_command = dev_run.worker_command(concurrency, log_level)
    # Celery's "celery@host ready." line: the worker consumes from now on.
    children = [dev_run.start("worker", worker_command, env, 6, ready_line=" ready.")]
    supervisor = Supervisor(children[0], lambda line: click.echo(line, err=True))
    flower_url = None
    if not no_flower and dev_run.flower_installed():
        flower_env, login = dev_run.flower_credentials(env)
        children.append(dev_run.start("flower", dev_run.flower_command(flower_port), flower_env, 6))
        flower_url = f"http://127.0.0.1:{flower_port}  ({login})"
    # The banner comes last, once the stack answers /readyz (Redis and a worker), so it does
    # not scroll away under the start-up lines.
    url = f"http://{host}:{port}/mcp"
    dev_run.announce_when_ready(
        url,
        children[0],
        lambda: click.echo(dev_run.banner(settings, url, flower_url), err=True),
    )
    # `kill` and a closed terminal end dev like Ctrl-C does (``bridge.supervisor``); while
    # the bridge serves, uvicorn routes SIGINT and SIGTERM there itself.
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, supervisor.interrupt)
    try:
        _serve(settings, sock, log_level, supervisor.server)
    finally:
        for child in children:
            child.stop()
    if supervisor.worker_died is not None:
        raise SystemExit(1)


@main.command()
@click.argument("tool")
@click.argument("arguments", default="{}")
@click.option("--url", default="http://127.0.0.1:8000/mcp", show_default=True)
@click.option("--token", envvar="MCP_BRIDGE_TOKEN", help="Bearer token (or MCP_BRIDGE_TOKEN).")
@click.option("--no-task", is_flag=True, help="A plain call: wait for the result in one request.")
@click.option(
    "--protocol",
    type=click.Choice(["2025-11-25", "2026-07-28"]),
    default="2025-11-25",
    show_default=True,
    help="The protocol era: a session (2025-11-25), or stateless requests (2026-07-28).",
)
def call(
    tool: str, arguments: str, url: str, token: str | None, no_task: bool, protocol: str
) -> None:
    """Call TOOL with ARGUMENTS (a JSON object) as a task on a running bridge, print each
    status as it changes, then the result. A tool's questions are asked on the terminal.
    Ctrl-C cancels the task."""
    try:
        parsed = json.loads(arguments)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="ARGUMENTS") from exc
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object", param_hint="ARGUMENTS")
    from mcp_celery_bridge.bridge.caller import call_tool
    from mcp_celery_bridge.bridge.stateless_caller import call_tool_stateless

    run = call_tool_stateless if protocol == "2026-07-28" else call_tool
    raise SystemExit(run(url, token, tool, parsed, as_task=not no_task))


if __name__ == "__main__":
    main(prog_name="mcp-celery-bridge")
