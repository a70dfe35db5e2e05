"""The task lifecycle end to end: cancel (running, busy-looping, queued), results, listing,
retention, isolation between sessions and the finality of terminal statuses, on the real
Redis. A cancel that must stop a pool process runs on a real bridge and real prefork Celery
workers; the rest on the bridge's app in process with tools run inline (the fast tier)."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from mcp_celery_bridge.bridge.shared.clients import sync_client
from mcp_celery_bridge.bridge.shared.records import TaskStatus
from mcp_celery_bridge.bridge.shared.sync_registry import SyncRegistry
from tests.client import TERMINAL, RawClient, RpcError, connect, list_all, running_pid
from tests.inline import inline_worker
from tests.inproc import app_server, settings_of
from tests.services import (
    Process,
    eventually,
    keys_of,
    parent_pid,
    pid_running,
    pid_state,
)

pytestmark = pytest.mark.anyio

RELATED_TASK = "io.modelcontextprotocol/related-task"


# -- helpers ---------------------------------------------------------------------------------
async def wait_stopped(pid: int, timeout: float) -> None:
    async def stopped() -> bool:
        return not pid_running(pid)

    await eventually(stopped, timeout, f"pool process {pid} to stop", every=0.02)


async def rpc_error(call: Awaitable[Any]) -> RpcError:
    with pytest.raises(RpcError) as err:
        await call
    return err.value


async def cancel_running(
    client: RawClient, worker: Process, tool: str, arguments: dict[str, Any]
) -> tuple[str, int]:
    """Start ``tool``, wait until a pool child runs it, cancel it; the task id and the child's
    pid."""
    task = await client.create_task(tool, arguments)
    task_id = task["taskId"]
    _, pid = await running_pid(client, task_id, timeout=15, replay=True)
    assert pid_running(pid)
    assert parent_pid(pid) == worker.popen.pid, "the task should run in a pool child"
    assert (await client.get_task(task_id))["status"] == "working"

    cancelled = await client.call("tasks/cancel", {"taskId": task_id})
    assert cancelled["taskId"] == task_id
    assert cancelled["status"] == "cancelled"
    return task_id, pid


async def assert_stays_cancelled(
    client: RawClient,
    redis_client: redis.Redis,
    env: dict[str, str],
    worker: Process,
    tid: str,
    pid: int,
) -> None:
    """Once the worker is done with the terminated child (it logged the termination and reaped
    the child, which is when it handles the lost job), the task is still cancelled: neither
    the revoke nor the lost child changed it."""
    celery_id = redis_client.hget(keys_of(env).task(tid), "celery_id")
    assert celery_id

    async def handled() -> bool:
        return f"Terminating {celery_id}" in worker.output() and pid_state(pid) == ""

    await eventually(handled, 10, "the worker to terminate and reap the child")
    task = await client.get_task(tid)
    assert task["status"] == "cancelled", task
    assert task["statusMessage"] == "cancelled by the client", task


# -- cancel ----------------------------------------------------------------------------------
async def test_cancel_running_sleep_stops_the_pool_child(
    bridge: str, worker: Process, redis_client: redis.Redis, env: dict[str, str]
) -> None:
    async with connect(bridge) as client:
        task_id, pid = await cancel_running(client, worker, "sleep", {"seconds": 30, "steps": 300})
        assert (await client.get_task(task_id))["status"] == "cancelled"
        await wait_stopped(pid, 5)
        await assert_stays_cancelled(client, redis_client, env, worker, task_id, pid)


async def test_cancel_running_spin_terminates_a_loop_that_never_checks(
    bridge: str, worker: Process, redis_client: redis.Redis, env: dict[str, str]
) -> None:
    async with connect(bridge) as client:
        task_id, pid = await cancel_running(client, worker, "spin", {"seconds": 60})
        await wait_stopped(pid, 2)
        await assert_stays_cancelled(client, redis_client, env, worker, task_id, pid)


async def test_cancel_prevents_the_side_effect(
    bridge: str, worker: Process, redis_client: redis.Redis, env: dict[str, str], tmp_path: Path
) -> None:
    mark = tmp_path / "mark"
    pid_file = tmp_path / "mark.pid"
    async with connect(bridge) as client:
        task = await client.create_task("mark_after", {"seconds": 3, "path": str(mark)})
        task_id = task["taskId"]

        async def started() -> int:
            text = pid_file.read_text() if pid_file.exists() else ""
            return int(text) if text.strip() else 0

        pid = await eventually(started, 15, "mark_after to write its pid")
        assert parent_pid(pid) == worker.popen.pid, "the task should run in a pool child"
        assert (await client.get_task(task_id))["status"] == "working"
        cancelled = await client.call("tasks/cancel", {"taskId": task_id})
        assert cancelled["status"] == "cancelled"
        await wait_stopped(pid, 5)
        assert not mark.exists(), "the cancelled tool reached its side effect"
        await assert_stays_cancelled(client, redis_client, env, worker, task_id, pid)
        assert not mark.exists()


@pytest.mark.fast
async def test_cancel_while_queued_never_runs(
    fast_env: dict[str, str], log_dir: Path, tmp_path: Path
) -> None:
    # An app on a queue no worker consumes yet: the task stays queued until we cancel it.
    env = fast_env
    env2 = {**env, "MCP_BRIDGE_QUEUE": f"{env['MCP_BRIDGE_QUEUE']}-q{uuid.uuid4().hex[:6]}"}
    mark = tmp_path / "queued"
    pid_file = tmp_path / "queued.pid"
    with app_server(settings_of(env2), log_dir / "inproc-queued.log") as server:
        async with connect(server.url) as client:
            task = await client.create_task("mark_after", {"seconds": 0.1, "path": str(mark)})
            task_id = task["taskId"]
            assert task["status"] == "working"
            assert task.get("statusMessage") == "queued"
            cancelled = await client.call("tasks/cancel", {"taskId": task_id})
            assert cancelled["status"] == "cancelled"

            # One pool process: the queue is FIFO, so the cancelled message is received (and
            # must be dropped) before the echo that follows it runs.
            with inline_worker(settings_of(env2), concurrency=1):
                echo = await client.create_task("echo", {"text": "after"})
                done = await client.wait_status(echo["taskId"], TERMINAL, timeout=20)
                assert done["status"] == "completed", done

            assert not pid_file.exists(), "the cancelled task ran"
            assert not mark.exists()
            final = await client.get_task(task_id)
            assert final["status"] == "cancelled", final
            assert final["statusMessage"] == "cancelled by the client", final


# -- results ---------------------------------------------------------------------------------
async def test_cancel_of_a_completed_task_is_invalid_params(fast_bridge: str) -> None:
    async with connect(fast_bridge) as client:
        task = await client.create_task("echo", {"text": "done"})
        done = await client.wait_status(task["taskId"], TERMINAL)
        assert done["status"] == "completed"
        err = await rpc_error(client.call("tasks/cancel", {"taskId": task["taskId"]}))
        assert err.code == -32602
        assert "completed" in err.message
        assert (await client.get_task(task["taskId"]))["status"] == "completed"


async def test_tasks_result_blocks_until_terminal(fast_bridge: str) -> None:
    async with connect(fast_bridge) as client:
        started = time.monotonic()
        task = await client.create_task("sleep", {"seconds": 1, "steps": 10})
        assert task["status"] == "working"
        result = await client.call("tasks/result", {"taskId": task["taskId"]})
        # Ten steps of 0.1 s: the answer cannot come before the tool finished.
        assert time.monotonic() - started >= 0.9
        assert result["content"] == [{"type": "text", "text": "slept 1s in 10 steps"}]
        assert result["_meta"][RELATED_TASK] == {"taskId": task["taskId"]}
        assert not result.get("isError")
        final = await client.get_task(task["taskId"])
        assert final["status"] == "completed"


async def test_tasks_result_of_a_cancelled_task_is_an_error(fast_bridge: str) -> None:
    async with connect(fast_bridge) as client:
        task = await client.create_task("sleep", {"seconds": 30, "steps": 300})
        cancelled = await client.call("tasks/cancel", {"taskId": task["taskId"]})
        assert cancelled["status"] == "cancelled"
        with anyio.fail_after(10):
            err = await rpc_error(client.call("tasks/result", {"taskId": task["taskId"]}))
        assert err.code == -32603
        assert err.data == {"taskId": task["taskId"], "status": "cancelled"}
        assert "cancelled" in err.message


# -- retention -------------------------------------------------------------------------------
async def test_a_terminal_task_expires_after_its_ttl(
    fast_bridge: str, redis_client: redis.Redis, fast_env: dict[str, str]
) -> None:
    keys = keys_of(fast_env)
    async with connect(fast_bridge) as client:
        task = await client.create_task("echo", {"text": "short-lived"}, ttl=1000)
        task_id = task["taskId"]
        assert task["ttl"] == 1000
        done = await client.wait_status(task_id, TERMINAL)
        assert done["status"] == "completed"
        key = keys.task(task_id)
        assert 0 < int(redis_client.pttl(key)) <= 1000

        async def expired() -> bool:
            try:
                await client.get_task(task_id)
            except RpcError as err:
                assert err.code == -32602, err
                return True
            return False

        await eventually(expired, 10, "the finished task to expire", every=0.1)
        assert task_id not in {t["taskId"] for t in await list_all(client)}
        assert not redis_client.exists(key)
        index = keys.owner_tasks(f"session:{client.session_id}")
        assert redis_client.zscore(index, task_id) is None, "tasks/list left the stale entry"
        err = await rpc_error(client.call("tasks/result", {"taskId": task_id}))
        assert err.code == -32602


# -- isolation -------------------------------------------------------------------------------
async def test_another_session_cannot_see_or_touch_a_task(fast_bridge: str) -> None:
    async with connect(fast_bridge) as a, connect(fast_bridge) as b:
        assert a.session_id != b.session_id
        task = await a.create_task("sleep", {"seconds": 1, "steps": 10})
        task_id = task["taskId"]
        unknown = "no-such-task-" + uuid.uuid4().hex

        for method in ("tasks/get", "tasks/result", "tasks/cancel"):
            theirs = await rpc_error(b.call(method, {"taskId": task_id}))
            missing = await rpc_error(b.call(method, {"taskId": unknown}))
            assert theirs.code == missing.code == -32602, method
            assert theirs.message == missing.message.replace(unknown, task_id), method
            assert theirs.data == missing.data, method

        assert task_id not in {t["taskId"] for t in await list_all(b)}
        assert task_id in {t["taskId"] for t in await list_all(a)}

        result = await a.call("tasks/result", {"taskId": task_id})
        assert result["content"] == [{"type": "text", "text": "slept 1s in 10 steps"}]
        final = await a.get_task(task_id)
        assert final["status"] == "completed"


# -- finality --------------------------------------------------------------------------------
async def test_a_late_transition_cannot_change_a_terminal_status(
    fast_bridge: str, fast_env: dict[str, str]
) -> None:
    settings = settings_of(fast_env)
    assert settings.key_prefix == fast_env["MCP_BRIDGE_KEY_PREFIX"]
    registry = SyncRegistry(settings, sync_client(settings.redis_url))
    try:
        async with connect(fast_bridge) as client:
            task = await client.create_task("echo", {"text": "final"})
            task_id = task["taskId"]
            done = await client.wait_status(task_id, TERMINAL)
            assert done["status"] == "completed"
            owner = f"session:{client.session_id}"
            before = registry.get(task_id)
            assert before is not None and before.owner == owner

            for status in (TaskStatus.CANCELLED, TaskStatus.FAILED, TaskStatus.WORKING):
                outcome = registry.transition(task_id, owner, status, "late")
                assert not outcome.applied, status
                assert outcome.status is TaskStatus.COMPLETED, status
                assert outcome.event_id == ""

            after = await client.get_task(task_id)
            assert after["status"] == "completed"
            assert after["statusMessage"] == "completed"
            assert after["lastUpdatedAt"] == done["lastUpdatedAt"]
            result = await client.call("tasks/result", {"taskId": task_id})
            assert result["content"] == [{"type": "text", "text": "final"}]
    finally:
        registry.redis.close()


# -- listing ---------------------------------------------------------------------------------
async def test_tasks_list_pages_through_every_task_once(fast_bridge: str) -> None:
    count = 250
    async with connect(fast_bridge) as client:
        created: list[str] = []
        limit = anyio.Semaphore(20)

        async def create(i: int) -> None:
            async with limit:
                task = await client.create_task("echo", {"text": f"n{i}"})
                created.append(task["taskId"])

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(count):
                    tg.start_soon(create, i)
        assert len(set(created)) == count

        seen: list[str] = []
        pages: list[dict[str, Any]] = []
        params: dict[str, Any] = {}
        while True:
            page = await client.call("tasks/list", params)
            pages.append(page)
            assert 0 < len(page["tasks"]) <= 50, len(page["tasks"])
            seen.extend(t["taskId"] for t in page["tasks"])
            if "nextCursor" not in page:
                break
            assert len(pages) <= count, "the cursor never ends"
            params = {"cursor": page["nextCursor"]}

        assert len(seen) == len(set(seen)) == count, "a task was listed twice or missed"
        assert set(seen) == set(created)
        assert len(pages) == 5
        created_at = [t["createdAt"] for p in pages for t in p["tasks"]]
        assert created_at == sorted(created_at), "tasks/list is not in creation order"

        for cursor in (
            "garbage",
            base64.urlsafe_b64encode(b"o:50").decode(),
            base64.urlsafe_b64encode(b"something else").decode(),
        ):
            err = await rpc_error(client.call("tasks/list", {"cursor": cursor}))
            assert err.code == -32602, cursor

        # Leave no backlog on the shared worker for the tests that follow.
        async def all_done() -> bool:
            return all(t["status"] in TERMINAL for t in await list_all(client))

        await eventually(all_done, 30, "the echo tasks to finish", every=0.2)
