"""A task of an existing Celery project that replaces itself with a chord
(examples/existing-project: ``proj.tasks.survey``, ``self.replace(chord(...))``) is one MCP
task: progress counts its finished parts, it completes with the chord body's result, fails
with a failing part's error, and a cancel stops every started part in its pool process.
Real ``celery -A proj`` workers and Redis, through the official MCP SDK client."""

from __future__ import annotations

import anyio
import pytest
from mcp import types

from tests.existing import Project, completed, failure_text, finished, sdk_session
from tests.services import eventually, keys_of, pid_running

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:The experimental tasks API:DeprecationWarning"),
]


def started_parts(project: Project, task_id: str) -> dict[str, int]:
    """Celery id -> pool process pid of the workflow's parts a worker started."""
    flow = keys_of(project.env).flow(task_id)
    book: dict[str, str] = project.registry.hgetall(flow)  # type: ignore[assignment]
    return {
        field[2:]: int(state.rsplit("(pid ", 1)[1].rstrip(")"))
        for field, state in book.items()
        if field.startswith("p:") and state.startswith("s ")
    }


async def test_progress_counts_the_parts_and_the_result_is_the_chord_bodys(
    project: Project,
) -> None:
    result, seen = await completed(
        project.url,
        "survey",
        {"stations": ["north", "south", "east"], "seconds": 0.2},
        lambda seen: (4.0, 4.0, "4 of 4 parts done") in seen.progress,
    )
    # The chord body's return value: three readings (5, 5 and 4 letters, x 1.5) averaged.
    assert result.structuredContent == {"stations": 3, "mean": 7.0}
    # Three readings and the summary; reports from several pool processes may overtake one
    # another, and the registry announces only increases.
    done = [p[0] for p in seen.progress]
    assert done == sorted(set(done)) and done[-1] == 4.0, seen.progress
    assert {p[1] for p in seen.progress} == {4.0}, seen.progress
    assert all(p[2] == f"{p[0]:g} of 4 parts done" for p in seen.progress), seen.progress


async def test_a_failing_part_fails_the_task_with_its_error(project: Project) -> None:
    arguments = {"stations": ["north", "broken-7", "east"], "seconds": 0.1}
    text = await failure_text(project.url, "survey", arguments)
    assert text == "ValueError: station broken-7 does not answer"


async def test_cancel_stops_every_started_part_and_no_later_part_starts(
    project: Project,
) -> None:
    async with sdk_session(project.url) as (session, _):
        created = await session.experimental.call_tool_as_task(
            "survey", {"stations": ["north", "south"], "seconds": 120}
        )
        task_id = created.task.taskId
        parts = await eventually(
            lambda: (found := started_parts(project, task_id)) and len(found) == 2 and found,
            20,
            "both readings running",
        )
        pids = set(parts.values())
        assert len(pids) == 2 and all(pid_running(pid) for pid in pids)
        await session.experimental.cancel_task(task_id)
        task = await finished(session, task_id)
        assert task.status == "cancelled", task
        await eventually(
            lambda: not any(pid_running(pid) for pid in pids), 20, f"pool processes {pids} end"
        )
        # The chord's body (the summary) must not start: give it a moment to try.
        with anyio.move_on_after(1):
            await eventually(lambda: len(started_parts(project, task_id)) > 2, 1, "more")
        assert set(started_parts(project, task_id)) == set(parts)
        task = await session.experimental.get_task(task_id)
    assert task.status == "cancelled"


async def test_a_task_declared_a_workflow_is_followed_to_its_canvas_end(project: Project) -> None:
    # proj.tasks.start_pipeline returns chain(add, double, double).apply_async().id; exposed
    # with workflow=True, the MCP task is the chain, not the id.
    result, _ = await completed(
        project.url,
        "start_pipeline",
        {"start": 5},
        lambda seen: (3.0, 3.0, "3 of 3 parts done") in seen.progress,
    )
    text = result.content[0]
    assert isinstance(text, types.TextContent) and text.text == "24"  # ((5 + 1) x 2) x 2


async def test_a_task_sent_on_the_side_is_no_part_of_the_call(project: Project) -> None:
    # publish_report sends notify.delay() first (it fails at once, on another pool process),
    # then works for a second: the call completes with its own result, untouched by it.
    async with sdk_session(project.url) as (session, _):
        created = await session.experimental.call_tool_as_task("publish_report", {"rows": 10})
        task = await finished(session, created.task.taskId)
        result = await session.experimental.get_task_result(
            created.task.taskId, types.CallToolResult
        )
    assert task.status == "completed", task
    assert result.structuredContent == {"rows": 10}
    flow = keys_of(project.env).flow(created.task.taskId)
    assert not project.registry.exists(flow)  # nothing recorded as a part
