"""The existing Celery project of examples/existing-project, bridged and run for real: its
services (a private Redis, its own ``celery -A proj`` workers, a bridge publishing through
its app) and the official MCP SDK client's session, for tests/test_existing_*.py (the
``project`` fixture is in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.session import RequestResponder

from tests import services
from tests.services import ROOT, RedisServer, bridge_server, celery_worker, eventually
from tests.topologies import RedisCluster

PROJECT = ROOT / "examples" / "existing-project"
KEY_PREFIX = "proj-test:"


@dataclass
class Project:
    url: str
    env: dict[str, str]
    #: The bridge's registry (its database of the private Redis, or a Cluster).
    registry: redis.Redis | redis.RedisCluster


@contextlib.contextmanager
def project_services(
    data: Path, logs: Path, broker_url: str = "", registry: RedisCluster | None = None
) -> Iterator[Project]:
    """A private Redis (the registry and the result backend; the project's broker too,
    with a key prefix, unless ``broker_url`` names another), the project's own workers (one
    on its default queue, one on ``pdf``) and a bridge publishing through its app. With
    ``registry``, the registry is that Redis Cluster instead."""
    server = RedisServer(data)
    server.start()
    env = {
        **services.test_env(registry.url() if registry else server.url),
        "MCP_BRIDGE_CELERY_APP": "proj",
        "MCP_BRIDGE_TOOL_MODULES": "proj.mcp_tools",
        "PROJ_BROKER_URL": broker_url or server.database(1),
        "PROJ_RESULT_BACKEND": server.database(2),
        "PROJ_PDF_QUEUE": "pdf",
        # This checkout's bridge and workers packages, whatever the venv was installed from.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if not broker_url:
        env["PROJ_KEY_PREFIX"] = KEY_PREFIX
    client: redis.Redis | redis.RedisCluster = (
        redis.RedisCluster("127.0.0.1", registry.nodes[0].port, decode_responses=True)
        if registry
        else redis.Redis.from_url(server.url, decode_responses=True)
    )
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(celery_worker(env, logs, app="proj", name="proj", cwd=PROJECT))
            stack.enter_context(
                celery_worker(env, logs, 1, app="proj", name="pdf", queues="pdf", cwd=PROJECT)
            )
            url = stack.enter_context(bridge_server(env, logs, "bridge-proj", cwd=PROJECT))
            yield Project(url, env, client)
    finally:
        client.close()
        server.stop()


@dataclass
class Seen:
    progress: list[tuple[float, float | None, str | None]]
    statuses: list[types.TaskStatusNotificationParams]


@contextlib.asynccontextmanager
async def sdk_session(url: str) -> AsyncIterator[tuple[ClientSession, Seen]]:
    seen = Seen([], [])

    async def on_message(
        message: RequestResponder[types.ServerRequest, types.ClientResult]
        | types.ServerNotification
        | Exception,
    ) -> None:
        if isinstance(message, types.ServerNotification):
            root = message.root
            if isinstance(root, types.ProgressNotification):
                p = root.params
                seen.progress.append((p.progress, p.total, p.message))
            if isinstance(root, types.TaskStatusNotification):
                seen.statuses.append(root.params)

    async with (
        streamable_http_client(url) as (read, write, _),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        await session.initialize()
        yield session, seen


async def finished(
    session: ClientSession, task_id: str, timeout: float = 30
) -> types.GetTaskResult:
    async def ended() -> types.GetTaskResult | None:
        task = await session.experimental.get_task(task_id)
        return task if task.status in ("completed", "failed", "cancelled") else None

    result: types.GetTaskResult = await eventually(ended, timeout, f"task {task_id} ends")
    return result


async def running_pid(seen: Seen) -> int:
    """The pool process running the session's task, from its "running on <worker> (pid N)"
    status notification."""
    holder = await eventually(
        lambda: next(
            (s.statusMessage for s in seen.statuses if "(pid " in (s.statusMessage or "")), None
        ),
        10,
        "the running on ... status",
    )
    return int(str(holder).rsplit("(pid ", 1)[1].rstrip(")"))


async def completed(
    url: str,
    tool: str,
    arguments: dict[str, Any],
    until: Callable[[Seen], bool] = lambda _: True,
) -> tuple[types.CallToolResult, Seen]:
    """Run ``tool`` as a task (with a progress token) that must complete; its result, and
    what the session saw once ``until`` holds (progress may trail the final status)."""
    async with sdk_session(url) as (session, seen):
        created = await session.experimental.call_tool_as_task(
            tool, arguments, meta={"progressToken": tool}
        )
        task = await finished(session, created.task.taskId)
        assert task.status == "completed", task
        result = await session.experimental.get_task_result(
            created.task.taskId, types.CallToolResult
        )
        await eventually(lambda: until(seen), 10, f"what {tool} reported")
    assert result.isError is not True, result
    return result, seen


async def report_with_progress(url: str, rows: int) -> None:
    """``build_report`` of ``rows`` rows as a task: its ``update_state`` progress arrives as
    MCP progress, one notification a row in order, and its return value is the result."""
    arguments = {"rows": rows, "delay": 0.06}
    result, seen = await completed(
        url, "build_report", arguments, lambda seen: len(seen.progress) >= rows
    )
    assert seen.progress == [
        (float(i), float(rows), f"row {i} of {rows}") for i in range(1, rows + 1)
    ]
    assert result.structuredContent is not None
    assert result.structuredContent["rows"] == rows
    assert len(str(result.structuredContent["checksum"])) == 16


async def failure_text(url: str, tool: str, arguments: dict[str, Any]) -> str:
    """Run ``tool`` as a task that must fail with a tool error; the error's text."""
    async with sdk_session(url) as (session, _):
        created = await session.experimental.call_tool_as_task(tool, arguments)
        task = await finished(session, created.task.taskId)
        result = await session.experimental.get_task_result(
            created.task.taskId, types.CallToolResult
        )
    assert task.status == "failed", task
    assert result.isError is True
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    return text.text
