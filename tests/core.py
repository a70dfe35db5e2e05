"""The core scenarios every Redis topology must pass (one server is the rest of the suite;
``test_sentinel`` and ``test_cluster`` run these on theirs): tasks created, notified and
listed; a stream resumed on another bridge with ``Last-Event-ID``; cancel with terminate; the
per-owner limit; a lost worker; the 2026-07-28 era; a primary's failover."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest

from tests.client import TERMINAL, ModernClient, RawClient, RpcError, connect, running_pid
from tests.reliability.harness import Recorder, figure_time
from tests.services import celery_worker, eventually, pid_running, running_bridge
from tests.test_streams import collect_until, twin


async def tasks_notify_and_list(url: str, owners: int = 6) -> None:
    """Each of ``owners`` sessions creates two tasks, hears them end on its stream, and
    lists exactly them, in creation order."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(url)) for _ in range(owners)]
        for client in clients:
            async with client.stream() as events:
                created = [await client.create_task("echo", {"text": f"{i}"}) for i in range(2)]
                first, last = (task["taskId"] for task in created)
                seen = await collect_until(events, last, "completed", timeout=30)
            assert (await client.wait_status(first, TERMINAL, timeout=30))["status"] == "completed"
            result = await client.call("tasks/result", {"taskId": last})
            assert result["content"][0]["text"] == "1"
            listed = (await client.call("tasks/list"))["tasks"]
            # The owner's own order (creation), whatever else the deployment made.
            assert [t["taskId"] for t in listed] == [first, last]
            assert all(t["status"] == "completed" for t in listed)
            assert any(m["params"]["status"] == "completed" for _, m in seen)


async def stream_resumes_on_the_other_bridge(first: str, second: str) -> None:
    async with connect(first) as client:
        async with client.stream() as events:
            created = await client.create_task("sleep", {"seconds": 1.5, "steps": 3})
            task_id = created["taskId"]
            head = await collect_until(events, task_id, "working", timeout=20)
        resumed_from = head[-1][0]
        await client.wait_status(task_id, TERMINAL, timeout=30)
        other = twin(client, second, client.http)
        async with other.stream(last_event_id=resumed_from) as events:
            rest = await collect_until(events, task_id, "completed", timeout=20)
    ids = [event_id for event_id, _ in head + rest]
    assert len(ids) == len(set(ids)), "an event came twice"
    assert resumed_from not in [event_id for event_id, _ in rest]
    assert rest[-1][1]["params"]["status"] == "completed"


async def cancel_terminates(url: str) -> None:
    async with connect(url) as client:
        created = await client.create_task("sleep", {"seconds": 60, "steps": 1})
        _, pid = await running_pid(client, created["taskId"])
        await client.call("tasks/cancel", {"taskId": created["taskId"]})
        task = await client.wait_status(created["taskId"], TERMINAL)
    assert task["status"] == "cancelled"
    await eventually(lambda: not pid_running(pid), 20, f"pool process {pid} to stop")


async def per_owner_limit(url: str, most: int) -> None:
    """With ``MCP_BRIDGE_MAX_INFLIGHT_PER_OWNER`` = ``most`` and a worker slot to spare."""
    async with connect(url) as client, connect(url) as other:
        running = [
            (await client.create_task("sleep", {"seconds": 30, "steps": 300}))["taskId"]
            for _ in range(most)
        ]
        with pytest.raises(RpcError) as err:
            await client.create_task("echo", {"text": "one more"})
        assert err.value.code == -32000
        assert err.value.data == {"limit": "tasks-in-flight", "max": most}
        # Another owner is not held back.
        done = await other.create_task("echo", {"text": "fine"})
        assert (await other.wait_status(done["taskId"], TERMINAL, 30))["status"] == "completed"
        for task_id in running:
            await client.call("tasks/cancel", {"taskId": task_id})


async def stateless_era(first: str, second: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = ModernClient(first, http)
        created = await client.request(
            "tools/call", {"name": "sleep", "arguments": {"seconds": 0.5, "steps": 2}}
        )
        # Listened to on the other bridge.
        async with ModernClient(second, http).listen([created["taskId"]]) as messages:
            ack = await anext(messages)
            assert ack["method"] == "notifications/subscriptions/acknowledged"
            with anyio.fail_after(20):
                async for message in messages:
                    if message["params"].get("status") in TERMINAL:
                        break
        assert message["params"]["status"] == "completed", message
        plain = ModernClient(second, http, tasks=False)
        answer = await plain.request("tools/call", {"name": "echo", "arguments": {"text": "p"}})
        assert answer["content"][0]["text"] == "p"


async def lost_worker(env: dict[str, str], log_dir: Path) -> None:
    """A bridge and a worker of their own on ``env`` (short leases); the worker's whole
    process group is SIGKILLed while its task runs: the task fails, naming the run."""
    env = {**env, "MCP_BRIDGE_LEASE_S": "2", "MCP_BRIDGE_REAPER_INTERVAL_S": "0.2"}
    with (
        running_bridge(env, log_dir, "bridge-loss") as bridge,
        celery_worker(env, log_dir, 2, name="loss") as worker,
    ):
        async with connect(bridge.url) as client:
            created = await client.create_task("sleep", {"seconds": 60, "steps": 1})
            node, pid = await running_pid(client, created["taskId"])
            os.killpg(worker.popen.pid, signal.SIGKILL)
            worker.popen.wait(5)
            final = await client.wait_status(created["taskId"], TERMINAL, timeout=15)
    assert final["status"] == "failed", final
    assert final["statusMessage"] == f"worker lost ({node} (pid {pid})): lease expired"


async def failover(url: str, kill: Callable[[RawClient], None], in_flight: int) -> str:
    """``in_flight`` tasks created, a client holding its stream across the failover (it
    resumes with ``Last-Event-ID`` when the stream ends), then ``kill(client)`` takes a
    primary away: requests succeed again, every task ends, the ones created after complete,
    and no terminal notification is lost or repeated. Returns the figures, for the report."""
    async with connect(url) as client, anyio.create_task_group() as tg:
        recorder = Recorder(client)
        await tg.start(recorder.run)
        created = [
            (await client.create_task("sleep", {"seconds": 1, "steps": 2}))["taskId"]
            for _ in range(in_flight)
        ]
        killed = time.monotonic()
        kill(client)

        async def answers() -> bool:
            # During the failover the bridge answers 503 with -32603 (the client's
            # assertion), then 200 again.
            try:
                await client.call("tasks/list", {})
            except (AssertionError, RpcError, OSError):
                return False
            return True

        await eventually(answers, 60, "requests to succeed again", every=0.1)
        back = figure_time(killed)
        more = [
            (await client.create_task("echo", {"text": f"after {i}"}))["taskId"] for i in range(6)
        ]
        ended = {}
        for task_id in created + more:
            ended[task_id] = (await client.wait_status(task_id, TERMINAL, timeout=120))["status"]
        try:
            await recorder.wait_terminal(set(created + more), 30)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}: the stream connected {recorder.connects} times, ended "
                f"{recorder.ends} times, {len(recorder.notices)} notifications, the last "
                f"{recorder.notices[-3:]}"
            ) from None
        tg.cancel_scope.cancel()
    terminal = recorder.terminal()
    twice = [t for t, notices in terminal.items() if len(notices) > 1]
    missing = [t for t in created + more if t not in terminal]
    assert not missing and not twice, (missing, twice)
    assert all(ended[t] == "completed" for t in more), ended
    assert all(status in TERMINAL for status in ended.values())
    return (
        f"{in_flight} tasks in flight: requests succeeded again {back} s after the primary was "
        f"killed; every task ended {figure_time(killed)} s after it; outcomes "
        f"{sorted(set(ended.values()))}; the stream reconnected {recorder.connects - 1} times, "
        f"terminal notifications missing {len(missing)}, repeated {len(twice)}"
    )
