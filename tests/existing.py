"""The existing Celery project of examples/existing-project, bridged and run for real: its
services (a private Redis, its own ``celery -A proj`` workers, a bridge publishing through
its app) and the official MCP SDK client's session, for tests/test_existing_*.py (the
``project`` fixture is in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.session import RequestResponder

from tests import services
from tests.services import ROOT, RedisServer, bridge_server, celery_worker, eventually

PROJECT = ROOT / "examples" / "existing-project"
KEY_PREFIX = "proj-test:"


@dataclass
class Project:
    url: str
    env: dict[str, str]
    broker: redis.Redis
    #: The bridge's registry (its database of the private Redis).
    registry: redis.Redis


@contextlib.contextmanager
def project_services(data: Path, logs: Path) -> Iterator[Project]:
    server = RedisServer(data)
    server.start()
    env = {
        **services.test_env(server.url),
        "MCP_BRIDGE_CELERY_APP": "proj",
        "MCP_BRIDGE_TOOL_MODULES": "proj.mcp_tools",
        "PROJ_BROKER_URL": server.database(1),
        "PROJ_RESULT_BACKEND": server.database(2),
        "PROJ_KEY_PREFIX": KEY_PREFIX,
        "PROJ_PDF_QUEUE": "pdf",
        # This checkout's bridge and workers packages, whatever the venv was installed from.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    broker = redis.Redis.from_url(server.database(1))
    registry = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(celery_worker(env, logs, app="proj", name="proj", cwd=PROJECT))
            stack.enter_context(
                celery_worker(env, logs, 1, app="proj", name="pdf", queues="pdf", cwd=PROJECT)
            )
            url = stack.enter_context(bridge_server(env, logs, "bridge-proj", cwd=PROJECT))
            yield Project(url, env, broker, registry)
    finally:
        broker.close()
        registry.close()
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
