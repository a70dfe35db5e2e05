"""A project with packages of its own named ``workers`` and ``bridge`` uses this one
(issue 12, item 6): its Celery app lives in its ``workers`` package (``celery -A workers
worker``, with the one integration line), its task uses its ``bridge`` package, and
``mcp-celery-bridge serve`` started in its directory serves that task through ``expose``,
end to end through the official MCP SDK client. Every import of ours is under
``mcp_celery_bridge``; had one kept a short name, the project's package would have answered
it (the current directory comes first on ``sys.path`` in both processes) and the worker or
the bridge would have failed.

The processes find this checkout's package through a directory holding only a link to
``mcp_celery_bridge/``: the checkout's own top-level ``bridge/`` and ``workers/`` are not on
their path, so the only packages by those names are the project's."""

# rename-imports: skip (the short names here are the project's, not ours)

from __future__ import annotations

import contextlib
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mcp import types

from tests import services
from tests.existing import finished, sdk_session
from tests.services import (
    ROOT,
    Process,
    RedisServer,
    celery_worker,
    eventually,
    running_bridge,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:The experimental tasks API:DeprecationWarning"),
]

#: The project: an ordinary Celery layout, but its packages are called ``workers`` (the app
#: and its tasks, as ``celery -A workers`` takes it) and ``bridge`` (its own domain code).
FILES = {
    "workers/__init__.py": '''
        """The project's Celery package (as the Celery tutorials lay one out)."""
        from workers.celery import app as celery_app

        __all__ = ["celery_app"]
    ''',
    "workers/celery.py": """
        import os

        from celery import Celery

        app = Celery("workers")
        app.conf.update(
            broker_url=os.environ["SHOP_BROKER_URL"],
            result_backend=os.environ["SHOP_RESULT_BACKEND"],
            imports=["workers.tasks"],
        )
        import mcp_celery_bridge.workers.integration  # noqa: E402,F401  (the one line)
    """,
    "workers/tasks.py": '''
        import bridge
        import workers
        from bridge import pricing
        from workers.celery import app


        @app.task
        def quote(items: int, unit_cents: int = 250) -> dict[str, object]:
            """Quote an order (every tenth item free)."""
            return {
                "total_cents": pricing.total(items, unit_cents),
                "bridge": bridge.__file__,
                "workers": workers.__file__,
            }
    ''',
    "workers/mcp_tools.py": """
        from bridge import pricing

        from mcp_celery_bridge import expose

        expose("workers.tasks.quote", description=pricing.DESCRIPTION)
    """,
    "bridge/__init__.py": '''
        """The project's own ``bridge`` package: nothing to do with MCP."""
    ''',
    "bridge/pricing.py": """
        DESCRIPTION = "Quote an order; described by the project's own bridge.pricing."


        def total(items: int, unit_cents: int) -> int:
            return (items - items // 10) * unit_cents
    """,
}


@dataclass
class Shop:
    directory: Path
    url: str
    worker: Process


@contextlib.contextmanager
def shop_services(base: Path) -> Iterator[Shop]:
    directory, logs, data, path = (base / name for name in ("shop", "logs", "data", "path"))
    for folder in (logs, data, path):
        folder.mkdir()
    for name, text in FILES.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(textwrap.dedent(text).lstrip())
    # This checkout's package (whatever the venv was installed from), and nothing else of it.
    (path / "mcp_celery_bridge").symlink_to(ROOT / "mcp_celery_bridge")
    server = RedisServer(data)
    server.start()
    env = {
        **services.test_env(server.url),
        "MCP_BRIDGE_CELERY_APP": "workers",
        "MCP_BRIDGE_TOOL_MODULES": "workers.mcp_tools",
        "SHOP_BROKER_URL": server.database(1),
        "SHOP_RESULT_BACKEND": server.database(2),
        "PYTHONPATH": str(path),
    }
    # The installed console script, as a project runs it.
    script = Path(sys.executable).parent / "mcp-celery-bridge"
    try:
        with (
            celery_worker(env, logs, 1, app="workers", name="shop", cwd=directory) as worker,
            running_bridge(env, logs, "bridge-shop", cwd=directory, program=(str(script),)) as b,
        ):
            yield Shop(directory, b.url, worker)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    with shop_services(tmp_path_factory.mktemp("coexist")) as running:
        yield running


async def test_the_bridge_serves_the_projects_task_from_its_own_workers_package(
    shop: Shop,
) -> None:
    async with sdk_session(shop.url) as (session, _):
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == {"quote"}
    # Read from the project's bridge.pricing, in the bridge's process.
    assert tools["quote"].description == (
        "Quote an order; described by the project's own bridge.pricing."
    )
    assert tools["quote"].inputSchema["required"] == ["items"]


async def test_a_call_runs_on_the_projects_worker_with_its_own_packages(shop: Shop) -> None:
    async with sdk_session(shop.url) as (session, seen):
        created = await session.experimental.call_tool_as_task("quote", {"items": 12})
        task = await finished(session, created.task.taskId)
        result = await session.experimental.get_task_result(
            created.task.taskId, types.CallToolResult
        )
        # The integration ran in the project's worker: the run was reported as it started.
        await eventually(
            lambda: any(
                (s.statusMessage or "").startswith("running on shop@") for s in seen.statuses
            ),
            10,
            "the status message of the run",
        )
    assert task.status == "completed", task
    assert result.structuredContent == {
        "total_cents": 11 * 250,
        "bridge": str(shop.directory / "bridge" / "__init__.py"),
        "workers": str(shop.directory / "workers" / "__init__.py"),
    }
    assert "Traceback" not in shop.worker.output(), shop.worker.output()[-4000:]
