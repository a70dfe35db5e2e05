"""An existing Celery project bridged without changing its tasks (examples/existing-project):
its own app and configuration (``MCP_BRIDGE_CELERY_APP=proj``), its tasks named in a tool
module (``expose``), its own ``celery -A proj worker`` with the one integration line, driven
through the official MCP SDK client. The project's broker keys carry a ``global_keyprefix``
from its configuration: had the bridge dropped that transport option, no call would reach a
worker."""

from __future__ import annotations

import hashlib

import anyio
import pytest
import redis
from celery import Celery
from mcp import types

from tests.existing import (
    KEY_PREFIX,
    Project,
    failure_text,
    finished,
    report_with_progress,
    running_pid,
    sdk_session,
)
from tests.services import eventually, pid_running

pytestmark = [
    pytest.mark.anyio,
    # The SDK's 2025-11-25 task methods are what this era's clients call.
    pytest.mark.filterwarnings("ignore:The experimental tasks API:DeprecationWarning"),
]


async def test_the_tools_are_the_projects_tasks_with_schemas_from_their_signatures(
    project: Project,
) -> None:
    async with sdk_session(project.url) as (session, _):
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == {
        "build_report",
        "fetch_rate",
        "render_pdf",
        "publish_report",
        "start_pipeline",
        "survey",
        "add_numbers",
    }
    report = tools["build_report"]
    assert report.description == "Build a report of `rows` rows, reporting progress as it goes."
    assert report.inputSchema["properties"]["rows"] == {"title": "Rows", "type": "integer"}
    assert report.inputSchema["required"] == ["rows"]
    assert "self" not in report.inputSchema["properties"]
    assert report.execution is not None and report.execution.taskSupport == "required"
    assert tools["add_numbers"].inputSchema["required"] == ["x", "y"]


async def test_update_state_progress_becomes_mcp_progress_and_the_return_value_the_result(
    project: Project,
) -> None:
    await report_with_progress(project.url, 5)


async def test_a_retry_keeps_the_task_working_and_says_so_then_it_completes(
    project: Project,
) -> None:
    async with sdk_session(project.url) as (session, seen):
        created = await session.experimental.call_tool_as_task(
            "fetch_rate", {"currency": "EUR", "failures": 2}
        )
        task = await finished(session, created.task.taskId)
        result = await session.experimental.get_task_result(
            created.task.taskId, types.CallToolResult
        )
        await eventually(
            lambda: any(s.status == "completed" for s in seen.statuses), 10, "the last status"
        )
    assert task.status == "completed", task
    assert result.structuredContent == {"currency": "EUR", "rate": 1.25, "attempts": 3}
    messages = [s.statusMessage or "" for s in seen.statuses if s.status == "working"]
    retries = [m for m in messages if m.startswith("retry")]
    assert retries == [
        "retry 1 of 3 in 0.2 s: RateServiceDown: rate service unavailable for EUR",
        "retry 2 of 3 in 0.2 s: RateServiceDown: rate service unavailable for EUR",
    ], messages


async def test_a_task_that_runs_out_of_retries_fails_with_its_error(project: Project) -> None:
    text = await failure_text(project.url, "fetch_rate", {"currency": "GBP", "failures": 10})
    assert text == "RateServiceDown: rate service unavailable for GBP"


async def test_the_projects_task_routes_send_a_call_to_its_queues_worker(
    project: Project,
) -> None:
    async with sdk_session(project.url) as (session, _):
        result = await session.call_tool("render_pdf", {"pages": 3})
    assert result.isError is not True, result
    assert result.structuredContent is not None
    assert str(result.structuredContent["worker"]).startswith("pdf@")


async def test_a_task_named_with_a_schema_by_hand_checks_its_arguments_at_the_bridge(
    project: Project,
) -> None:
    async with sdk_session(project.url) as (session, _):
        added = await session.call_tool("add_numbers", {"x": 2, "y": 3})
        refused = await session.call_tool("add_numbers", {"x": 2, "y": "three"})
    assert added.isError is not True, added
    assert isinstance(added.content[0], types.TextContent) and added.content[0].text == "5"
    assert refused.isError is True
    assert isinstance(refused.content[0], types.TextContent)
    assert refused.content[0].text.startswith("Invalid arguments for tool add_numbers: y: ")


async def test_cancel_terminates_the_running_task_in_its_pool_process(project: Project) -> None:
    async with sdk_session(project.url) as (session, seen):
        created = await session.experimental.call_tool_as_task(
            "build_report", {"rows": 2000, "delay": 0.05}, meta={"progressToken": "long"}
        )
        task_id = created.task.taskId
        await eventually(lambda: seen.progress, 20, "the report's first progress")
        pid = await running_pid(seen)
        await session.experimental.cancel_task(task_id)
        task = await finished(session, task_id)
        assert task.status == "cancelled"
        await eventually(lambda: not pid_running(pid), 20, f"pool process {pid} ends")
        progress_after = len(seen.progress)
        with anyio.move_on_after(0.5):
            await eventually(lambda: len(seen.progress) > progress_after, 0.5, "more")
    assert len(seen.progress) == progress_after


def test_calls_not_from_the_bridge_run_as_before(project: Project) -> None:
    app = Celery("proj-client", set_as_current=False)
    app.conf.update(
        broker_url=project.env["PROJ_BROKER_URL"],
        result_backend=project.env["PROJ_RESULT_BACKEND"],
        broker_transport_options={"global_keyprefix": KEY_PREFIX},
    )
    try:
        sent = app.send_task("proj.tasks.build_report", kwargs={"rows": 3, "delay": 0})
        assert sent.get(timeout=30) == {"rows": 3, "checksum": _checksum(3)}
    finally:
        app.close()
    # The broker's keys are the project's, prefixed as its configuration says.
    with redis.Redis.from_url(project.env["PROJ_BROKER_URL"]) as broker:
        keys = [k.decode() for k in broker.scan_iter("*")]
    assert keys and all(k.startswith(KEY_PREFIX) for k in keys), keys


def _checksum(rows: int) -> str:
    digest = hashlib.sha256()
    for row in range(1, rows + 1):
        digest.update(str(row).encode())
    return digest.hexdigest()[:16]
