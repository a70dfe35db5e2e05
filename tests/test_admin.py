"""The operator CLI (``tasks list|show|cancel``, ``sessions list``) run as a subprocess
against tasks a real bridge and a real worker made, in the test Redis."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import anyio
import pytest
import redis

from tests.client import RawClient, connect
from tests.services import ROOT, Process, eventually, keys_of, parent_pid, pid_running
from tests.test_tasks import wait_stopped

pytestmark = pytest.mark.anyio


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bridge.cli ARGS`` with the test settings (never raises on exit codes)."""
    with anyio.fail_after(30):
        result = await anyio.run_process(
            [sys.executable, "-m", "mcp_celery_bridge.bridge.cli", *args],
            cwd=ROOT,
            env={**os.environ, **env},
            check=False,
        )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


async def cli_json(env: dict[str, str], *args: str) -> Any:
    result = await cli(env, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def owner_of(client: RawClient) -> str:
    return f"session:{client.session_id}"


async def finished(client: RawClient, tool: str, arguments: dict[str, Any], status: str) -> str:
    task = await client.create_task(tool, arguments)
    await client.wait_status(task["taskId"], {status})
    return str(task["taskId"])


@pytest.mark.timeout(90)
async def test_tasks_list_filters_and_json(
    bridge: str, worker: Process, env: dict[str, str]
) -> None:
    async with connect(bridge) as client:
        echo = await finished(client, "echo", {"text": "listed"}, "completed")
        failed = await finished(client, "fail", {"message": "boom"}, "failed")
        # Long enough to outlast the checks on a loaded machine; cancelled at the end.
        sleeping = (await client.create_task("sleep", {"seconds": 600}))["taskId"]
        owner = owner_of(client)
        try:
            mine = await cli_json(env, "tasks", "list", "--owner", owner)
            assert mine["limitReached"] is False
            assert {t["id"] for t in mine["tasks"]} == {echo, failed, sleeping}
            by_id = {t["id"]: t for t in mine["tasks"]}
            assert set(by_id[echo]) == {
                "id",
                "status",
                "tool",
                "owner",
                "created",
                "updated",
                "worker",
                "statusMessage",
                "plainCall",
            }
            assert by_id[echo]["status"] == "completed"
            assert by_id[echo]["tool"] == "echo"
            assert by_id[echo]["owner"] == owner
            assert by_id[echo]["worker"].startswith("main@")
            assert "boom" in by_id[failed]["statusMessage"]
            # Newest first.
            assert [t["id"] for t in mine["tasks"]] == [sleeping, failed, echo]

            async def ids(*args: str) -> set[str]:
                listed = await cli_json(env, "tasks", "list", "--owner", owner, *args)
                return {t["id"] for t in listed["tasks"]}

            assert await ids("--status", "completed") == {echo}
            assert await ids("--status", "completed", "--status", "failed") == {echo, failed}
            assert await ids("--tool", "fail") == {failed}
            assert await ids("--status", "working", "--tool", "sleep") == {sleeping}
            assert await ids("--newer-than", "5m") == {echo, failed, sleeping}
            assert await ids("--older-than", "1h") == set()
            # The bare session id finds `session:<id>` too.
            bare = await cli_json(env, "tasks", "list", "--owner", str(client.session_id))
            assert len(bare["tasks"]) == 3

            limited = await cli_json(env, "tasks", "list", "--owner", owner, "--limit", "1")
            assert len(limited["tasks"]) == 1 and limited["limitReached"] is True

            table = await cli(env, "tasks", "list", "--owner", owner)
            assert table.returncode == 0, table.stderr
            assert echo in table.stdout and "completed" in table.stdout
            assert "3 task(s)" in table.stdout

            bad = await cli(env, "tasks", "list", "--older-than", "soon")
            assert bad.returncode == 2 and "not a duration" in bad.stderr
        finally:
            await client.call("tasks/cancel", {"taskId": sleeping})


@pytest.mark.timeout(60)
async def test_tasks_show_completed_and_unknown(
    bridge: str, worker: Process, env: dict[str, str]
) -> None:
    async with connect(bridge) as client:
        task_id = await finished(client, "echo", {"text": "shown"}, "completed")
        shown = await cli_json(env, "tasks", "show", task_id)
    mcp, celery = shown["mcp"], shown["celery"]
    assert mcp["id"] == task_id and mcp["status"] == "completed" and mcp["tool"] == "echo"
    assert mcp["result"]["content"][0]["text"] == "shown"
    assert mcp["error"] is None and mcp["pendingInputs"] == {}
    assert mcp["runs"] == 1 and mcp["holder"].startswith("main@")
    assert 0 < mcp["expires_in_s"] <= mcp["ttl_ms"] / 1000
    assert celery["celery_id"]
    assert celery["backend_state"] == "PENDING"  # tools ignore Celery results
    assert celery["active_on"] is None
    assert any(name.startswith("main@") for name in celery["workers_answered"])

    table = await cli(env, "tasks", "show", task_id)
    assert table.returncode == 0, table.stderr
    assert "shown" in table.stdout and "PENDING" in table.stdout

    unknown = await cli(env, "tasks", "show", "no-such-task")
    assert unknown.returncode == 1
    assert "no task no-such-task" in unknown.stderr


@pytest.mark.timeout(60)
async def test_tasks_cancel_a_running_spin(
    bridge: str, worker: Process, env: dict[str, str], redis_client: redis.Redis
) -> None:
    keys = keys_of(env)
    async with connect(bridge) as client:
        task_id = (await client.create_task("spin", {"seconds": 60}))["taskId"]

        async def holder_pid() -> int:
            holder = redis_client.hget(keys.task(task_id), "holder")
            return int(str(holder).rsplit("pid ", 1)[1].rstrip(")")) if holder else 0

        pid = await eventually(holder_pid, 15, "a pool process to start spin")
        assert parent_pid(pid) == worker.popen.pid and pid_running(pid)
        shown = await cli_json(env, "tasks", "show", task_id)
        assert shown["mcp"]["status"] == "working"
        # inspect().active() is a broadcast answered within 1 s or not at all (a busy
        # machine): when a worker did answer, it names this pool process.
        active = shown["celery"]["active_on"]
        assert active is None or active["pid"] == pid

        result = await cli(env, "tasks", "cancel", task_id)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{task_id}: cancelled (cancelled by an operator)"
        # The operator's cancel is audited (and logged as a transition), as JSON on stderr.
        lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
        audited = next(e for e in lines if e.get("audit") == "task.cancel")
        assert audited["task"] == task_id and audited["status"] == "cancelled"
        assert "@" in audited["operator"] and audited["owner"] == f"session:{client.session_id}"
        moved = next(e for e in lines if e["logger"] == "bridge.transitions")
        assert (moved["task"], moved["status"]) == (task_id, "cancelled")
        seen = await client.get_task(task_id)
        assert seen["status"] == "cancelled"
        assert seen["statusMessage"] == "cancelled by an operator"
        await wait_stopped(pid, 5)

        again = await cli(env, "tasks", "cancel", task_id)
        assert again.returncode == 1 and "already cancelled" in again.stderr


@pytest.mark.timeout(60)
async def test_tasks_cancel_a_completed_task_or_unknown_id(
    bridge: str, worker: Process, env: dict[str, str]
) -> None:
    async with connect(bridge) as client:
        task_id = await finished(client, "echo", {"text": "done"}, "completed")
        result = await cli(env, "tasks", "cancel", task_id)
        assert result.returncode == 1
        assert f"task {task_id} is already completed: nothing to cancel" in result.stderr
        assert (await client.get_task(task_id))["status"] == "completed"
    unknown = await cli(env, "tasks", "cancel", "no-such-task")
    assert unknown.returncode == 1 and "no task no-such-task" in unknown.stderr


@pytest.mark.timeout(60)
async def test_sessions_list_shows_the_test_session(bridge: str, env: dict[str, str]) -> None:
    async with connect(bridge) as client:
        listed = await cli_json(env, "sessions", "list", "--limit", "0")
        mine = [s for s in listed["sessions"] if s["id"] == client.session_id]
        assert mine == [
            {
                "id": client.session_id,
                "protocolVersion": "2025-11-25",
                "principal": None,
                "clientName": "t",
                "clientVersion": "1",
                "created": mine[0]["created"],
                "idleTtlLeft_s": mine[0]["idleTtlLeft_s"],
            }
        ]
        assert 0 < mine[0]["idleTtlLeft_s"] <= 86_400
        table = await cli(env, "sessions", "list", "--limit", "0")
        assert table.returncode == 0, table.stderr
        assert str(client.session_id) in table.stdout and "2025-11-25" in table.stdout
        # A duration left, not something that reads like a clock time ("23:59:57").
        assert re.search(r"\b23h5\dm\b", table.stdout), table.stdout
        assert not re.search(r"\b23:59:\d\d\b", table.stdout), table.stdout


async def test_tasks_list_fits_a_100_column_terminal(bridge: str, env: dict[str, str]) -> None:
    async with connect(bridge) as client:
        task = await client.create_task("echo", {"text": "narrow"})
        await client.call("tasks/result", {"taskId": task["taskId"]})
        # Its own task only: the whole registry holds whatever the tests before this one
        # left (long tool names and messages), which would make the widths depend on order.
        owner = owner_of(client)
        table = await cli({**env, "COLUMNS": "100"}, "tasks", "list", "--owner", owner)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert all(len(line) <= 100 for line in lines), table.stdout
    assert any(" message " in line for line in lines), table.stdout
    mine = [line for line in lines if task["taskId"] in line]
    # One line for the task: the owner shortened, the message whole.
    assert len(mine) == 1 and f"session:{client.session_id[:8]}…" in mine[0], table.stdout
    assert mine[0].rstrip().endswith("│"), table.stdout  # the table fits: nothing cropped
    assert "completed" in mine[0].split("│")[-2], table.stdout
