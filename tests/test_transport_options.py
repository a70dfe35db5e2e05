"""A project's broker transport options reach Celery unchanged through the bridge (issue 12):
``global_keyprefix``, ``visibility_timeout`` and a Sentinel ``master_name`` set in the
project's configuration are what its app still holds once the bridge took it
(``MCP_BRIDGE_CELERY_APP``), and a call the bridge publishes goes where they say: under the
prefixed key, to the master the Sentinel names, on a private redis-server. And a
``MCP_BRIDGE_CELERY_APP`` that names nothing usable stops ``serve`` and ``dev`` at start
with one line, not a traceback."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
import redis

from mcp_celery_bridge.bridge.publisher import Publisher, project_app
from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.workers.tools import Tool
from tests.services import ROOT, Process, RedisServer, free_port, spawn, wait_for

pytestmark = pytest.mark.anyio

MASTER = "projmaster"


def write_project(root: Path, broker_url: str, options: dict[str, Any]) -> str:
    """A project package in ``root`` whose Celery app has ``options`` as its transport
    options, as a project's config module sets them; its ``-A`` name."""
    name = f"tproj_{uuid.uuid4().hex[:8]}"
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "celery.py").write_text(
        textwrap.dedent(f"""\
            from celery import Celery

            app = Celery({name!r})
            app.conf.broker_url = {broker_url!r}
            app.conf.broker_transport_options = {options!r}
            """)
    )
    return f"{name}.celery:app"


def bridged_add(project: str) -> Tool:
    return Tool(
        name="add",
        description="",
        task_support="optional",
        model=pydantic.BaseModel,
        func=lambda: None,
        takes_model=False,
        task_name=project.split(".", 1)[0] + ".add",
        schema={"type": "object"},
    )


async def publish_through_the_bridge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broker_url: str, options: dict[str, Any]
) -> str:
    """Take the project's app as the bridge does, publish one call through it, check its
    transport options are still exactly the project's; the call's Celery id."""
    monkeypatch.syspath_prepend(str(tmp_path))
    name = write_project(tmp_path, broker_url, options)
    settings = Settings(celery_app=name)
    app = project_app(settings)
    assert app is not None
    publisher = Publisher(settings, app)
    celery_id = str(uuid.uuid4())
    try:
        assert app.conf.broker_transport_options == options
        headers = {"mcp_task_id": "t-1", "mcp_tool": "add", "mcp_owner": "o"}
        await publisher.publish(bridged_add(name), celery_id, {"x": 1}, headers)
        assert app.conf.broker_transport_options == options
        with app.connection_for_write() as conn:
            assert conn.transport_options == options
            channel: Any = conn.default_channel
            assert channel.visibility_timeout == options["visibility_timeout"]
            assert channel.global_keyprefix == options["global_keyprefix"]
    finally:
        publisher.close()
        app.close()
    return celery_id


def queued(broker: redis.Redis, key: str) -> list[dict[str, Any]]:
    return [json.loads(m) for m in broker.lrange(key, 0, -1)]


async def test_global_keyprefix_and_visibility_timeout_reach_celery_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_redis: RedisServer
) -> None:
    options = {"global_keyprefix": "proj-a:", "visibility_timeout": 4321}
    sent = copy.deepcopy(options)
    celery_id = await publish_through_the_bridge(
        tmp_path, monkeypatch, own_redis.database(1), options
    )
    assert options == sent
    broker = redis.Redis.from_url(own_redis.database(1))
    try:
        keys = sorted(k.decode() for k in broker.scan_iter("*"))
        assert "proj-a:celery" in keys and all(k.startswith("proj-a:") for k in keys), keys
        [message] = queued(broker, "proj-a:celery")
        assert message["headers"]["id"] == celery_id
        assert message["headers"]["mcp_task_id"] == "t-1"
    finally:
        broker.close()


@pytest.fixture
def sentinel(tmp_path: Path, own_redis: RedisServer) -> Iterator[int]:
    """A redis-server in Sentinel mode watching ``own_redis`` as the master ``MASTER``; its
    port."""
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {tmp_path}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {own_redis.port} 1\n"
    )
    proc: Process = spawn(
        "sentinel", ["redis-server", str(conf), "--sentinel"], {}, tmp_path / "sentinel.log"
    )
    client = redis.Redis(port=port, socket_connect_timeout=0.5)

    def knows_master() -> bool:
        if not proc.alive():
            raise AssertionError(proc.output() or "the sentinel did not start")
        try:
            return bool(client.sentinel_get_master_addr_by_name(MASTER))
        except redis.ConnectionError:
            return False

    try:
        wait_for(knows_master, 10, f"the sentinel on port {port}")
        yield port
    finally:
        client.close()
        proc.stop()


async def test_a_sentinel_master_name_reaches_celery_and_finds_the_master(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_redis: RedisServer, sentinel: int
) -> None:
    options = {"master_name": MASTER, "global_keyprefix": "proj-s:", "visibility_timeout": 77}
    celery_id = await publish_through_the_bridge(
        tmp_path, monkeypatch, f"sentinel://127.0.0.1:{sentinel}/2", options
    )
    # Only the Sentinel knows where the master is: the call is there, under the prefix.
    master = redis.Redis.from_url(own_redis.database(2))
    try:
        [message] = queued(master, "proj-s:celery")
        assert message["headers"]["id"] == celery_id
    finally:
        master.close()


def start_failure(command: str, celery_app: str, cwd: Path, redis_url: str) -> str:
    env = {
        **os.environ,
        "MCP_BRIDGE_CELERY_APP": celery_app,
        "MCP_BRIDGE_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
    }
    args = [
        sys.executable,
        "-m",
        "mcp_celery_bridge.bridge.cli",
        command,
        "--port",
        str(free_port()),
    ]
    done = subprocess.run(
        args + (["--no-flower"] if command == "dev" else []),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    return done.stderr.strip()


@pytest.mark.parametrize("command", ["serve", "dev"])
def test_a_celery_app_that_does_not_import_stops_the_command_with_one_line(
    command: str, tmp_path: Path, own_redis: RedisServer
) -> None:
    line = start_failure(command, "no_such_proj", tmp_path, own_redis.url)
    assert line == (
        "mcp-celery-bridge: MCP_BRIDGE_CELERY_APP='no_such_proj': cannot import it "
        "(No module named 'no_such_proj')"
    )


@pytest.mark.parametrize("command", ["serve", "dev"])
def test_a_celery_app_that_is_not_a_celery_app_stops_the_command_with_one_line(
    command: str, tmp_path: Path, own_redis: RedisServer
) -> None:
    (tmp_path / "notproj.py").write_text("app = {'broker_url': 'redis://'}\n")
    line = start_failure(command, "notproj:app", tmp_path, own_redis.url)
    assert line == (
        "mcp-celery-bridge: MCP_BRIDGE_CELERY_APP='notproj:app' is a dict, not a Celery app"
    )
