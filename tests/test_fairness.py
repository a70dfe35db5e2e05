"""One owner cannot starve the others (issue 15, item 4): its running tasks are capped
(``max_running_per_owner``), every run has a time limit (``tool_time_limit_s``, per tool
``@tool(time_limit=...)``) that fails the task with a JSON-RPC error, and arguments holding a
non-finite number are refused: ``1e400`` (which Python's parser reads as infinity) with the
answer invalid arguments get, nested too; ``NaN`` and ``Infinity``, which are not JSON, as
a parse error."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.client import RawClient, RpcError, connect
from tests.services import bridge_server, celery_worker

pytestmark = pytest.mark.anyio

TERMINAL = {"completed", "failed", "cancelled"}
#: How long another owner's echo may wait behind a flood before the test calls it starved.
ECHO_DEADLINE_S = 15.0
#: How long each task of the flood runs (unless cancelled).
FLOOD_SECONDS = 60


@pytest.fixture(scope="module")
def capped(env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """A worker with two pool processes and a bridge, both with one running task per owner."""
    settings = {
        **env,
        "MCP_BRIDGE_QUEUE": env["MCP_BRIDGE_QUEUE"] + "-capped",
        "MCP_BRIDGE_MAX_RUNNING_PER_OWNER": "1",
    }
    with (
        celery_worker(settings, log_dir, concurrency=2, name="capped"),
        bridge_server(settings, log_dir, "bridge-capped") as url,
    ):
        yield url


@pytest.fixture(scope="module")
def timed(env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """A worker and a bridge where a tool may run for 2 s, and is killed 2 s later."""
    settings = {
        **env,
        "MCP_BRIDGE_QUEUE": env["MCP_BRIDGE_QUEUE"] + "-timed",
        "MCP_BRIDGE_TOOL_TIME_LIMIT_S": "2",
        "MCP_BRIDGE_TOOL_KILL_GRACE_S": "2",
    }
    with (
        celery_worker(settings, log_dir, concurrency=2, name="timed"),
        bridge_server(settings, log_dir, "bridge-timed") as url,
    ):
        yield url


async def _running(client: RawClient, task_ids: list[str]) -> list[str]:
    running = []
    for task_id in task_ids:
        task = await client.get_task(task_id)
        if task["status"] == "working" and task.get("statusMessage", "").startswith("running"):
            running.append(task_id)
    return running


@pytest.mark.timeout(180)
async def test_a_flood_of_long_tasks_leaves_room_for_another_owner(capped: str) -> None:
    async with connect(capped) as flooder, connect(capped) as other:
        floods = [
            (
                await flooder.create_task(
                    "sleep", {"seconds": FLOOD_SECONDS, "steps": FLOOD_SECONDS}
                )
            )["taskId"]
            for _ in range(8)
        ]
        try:
            with anyio.fail_after(20):
                while not await _running(flooder, floods):
                    await anyio.sleep(0.1)
            created = time.monotonic()
            echo = await other.create_task("echo", {"text": "me too"})
            done = await other.wait_status(echo["taskId"], TERMINAL, timeout=ECHO_DEADLINE_S)
            waited = time.monotonic() - created
            print(f"another owner's echo waited {waited:.2f} s behind a flood of 8 long tasks")
            assert done["status"] == "completed", done
            # The flood holds one worker at a time, however long it waits.
            running = await _running(flooder, floods)
            assert len(running) == 1, running
            # Its other tasks were put back, not lost: when its running one ends, the next
            # starts (a deferred call keeps its MCP ids through Celery's retry).
            await flooder.call("tasks/cancel", {"taskId": running[0]})
            with anyio.fail_after(20):
                while not (nxt := await _running(flooder, floods)) or nxt == running:
                    await anyio.sleep(0.1)
            assert len(nxt) == 1 and nxt != running, nxt
        finally:
            for task_id in floods:
                try:
                    await flooder.call("tasks/cancel", {"taskId": task_id})
                except RpcError:
                    pass  # already finished


async def _time_limit_error(client: RawClient, task_id: str) -> dict[str, Any]:
    final = await client.wait_status(task_id, TERMINAL, timeout=20)
    assert final["status"] == "failed", final
    with pytest.raises(RpcError) as raised:
        await client.call("tasks/result", {"taskId": task_id})
    assert raised.value.code == -32603, raised.value.error
    assert raised.value.data["reason"] == "time_limit", raised.value.error
    assert raised.value.message == final["statusMessage"]
    return final


@pytest.mark.timeout(90)
async def test_a_tool_is_stopped_at_its_time_limit(timed: str) -> None:
    async with connect(timed) as client:
        # The soft limit: SoftTimeLimitExceeded in the body, which did not catch it.
        started = time.monotonic()
        spin = await client.create_task("spin", {"seconds": 3600})
        final = await _time_limit_error(client, spin["taskId"])
        assert "time limit (2 s)" in final["statusMessage"], final
        assert time.monotonic() - started < 15
        # The hard limit: a body that ignores the soft one is killed 2 s later.
        stubborn = await client.create_task("stubborn", {"seconds": 3600})
        final = await _time_limit_error(client, stubborn["taskId"])
        assert "killed" in final["statusMessage"], final
        # The worker still serves.
        echo = await client.create_task("echo", {"text": "after"})
        assert (await client.wait_status(echo["taskId"], TERMINAL))["status"] == "completed"


@pytest.mark.timeout(60)
async def test_a_tool_can_set_its_own_time_limit(bridge: str) -> None:
    async with connect(bridge) as client:
        task = await client.create_task("hurried", {"seconds": 3600})
        final = await _time_limit_error(client, task["taskId"])
        assert "time limit (1.5 s)" in final["statusMessage"], final


async def _raw_call(client: RawClient, params_json: str) -> dict[str, Any]:
    """A tools/call whose params are sent as written (Python's json would spell them its
    own way)."""
    body = '{"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": ' + params_json + "}"
    response = await client.http.post(client.url, content=body, headers=client.headers())
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        messages = [json.loads(d) for d in data if d.strip()]
        message = next(m for m in messages if m.get("id") == 99)
    else:
        message = response.json()
    assert "result" in message, message
    result: dict[str, Any] = message["result"]
    return result


@pytest.mark.parametrize(
    ("tool", "arguments", "where"),
    [
        ("spin", '{"seconds": 1e400}', "seconds"),
        ("spin", '{"seconds": -1E+400}', "seconds"),
        ("spin", '{"seconds": 1.8e308}', "seconds"),
        ("total", '{"values": [1, -2e400]}', "values.1"),
        ("total", '{"values": [], "weights": {"a": 2, "b": 1e999}}', "weights.b"),
    ],
)
async def test_non_finite_numbers_are_refused(
    bridge: str, tool: str, arguments: str, where: str
) -> None:
    async with connect(bridge) as client:
        # As a task: created already failed, nothing queued.
        created = await _raw_call(
            client, f'{{"name": "{tool}", "arguments": {arguments}, "task": {{}}}}'
        )
        task_id = created["task"]["taskId"]
        assert created["task"]["status"] == "failed", created
        result = await client.call("tasks/result", {"taskId": task_id})
        assert result["isError"] is True
        text = result["content"][0]["text"]
        assert text == f"Invalid arguments for tool {tool}: {where}: not a finite number", text
        if tool == "total":
            # A plain call gets the same answer (spin requires a task).
            plain = await _raw_call(client, f'{{"name": "{tool}", "arguments": {arguments}}}')
            assert plain["isError"] is True and plain["content"][0]["text"] == text


@pytest.mark.parametrize("spelling", ["NaN", "Infinity", "-Infinity"])
async def test_non_json_numbers_are_a_parse_error(bridge: str, spelling: str) -> None:
    async with connect(bridge) as client:
        body = (
            '{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": '
            f'{{"name": "spin", "arguments": {{"seconds": {spelling}}}, "task": {{}}}}}}'
        )
        response = await client.http.post(client.url, content=body, headers=client.headers())
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == -32700
