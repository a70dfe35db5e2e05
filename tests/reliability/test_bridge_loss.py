"""Bridges are disposable: one is SIGKILLed and restarted under a session with 200 running
tasks, and two serve one session with no sticky routing. Every notification must reach the
client exactly once, counted against the session's stream in Redis."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from tests.client import TERMINAL, RawClient, RpcError, connect, list_all
from tests.reliability.harness import Recorder, assert_exactly_once, figure_time, stream_ids
from tests.services import Bridge, celery_worker, eventually, keys_of, running_bridge

pytestmark = pytest.mark.anyio

TASKS = 200


async def create_all(
    pick: Callable[[], RawClient],
    indices: Sequence[int],
    make: Callable[[int], tuple[str, dict[str, Any]]],
) -> list[str]:
    """Create one task per index, 20 at a time, each through ``pick()``; their ids in order."""
    ids: dict[int, str] = {}
    limit = anyio.Semaphore(20)

    async def one(i: int) -> None:
        async with limit:
            tool, arguments = make(i)
            ids[i] = (await pick().create_task(tool, arguments))["taskId"]

    async with anyio.create_task_group() as tg:
        for i in indices:
            tg.start_soon(one, i)
    return [ids[i] for i in indices]


@pytest.mark.timeout(120)
async def test_a_killed_bridge_comes_back_with_its_sessions_tasks_and_notifications(
    own_env: dict[str, str],
    log_dir: Path,
    redis_client: redis.Redis,
    figure: Callable[[str], None],
) -> None:
    keys = keys_of(own_env)
    bridge = Bridge(own_env, log_dir, "bridge-restart")
    bridge.start()
    try:
        with celery_worker(own_env, log_dir, concurrency=2, name="restart"):
            async with connect(bridge.url) as client:
                sid = client.session_id or ""
                recorder = Recorder(client)
                async with anyio.create_task_group() as tg:
                    await tg.start(recorder.run)
                    short = ("sleep", {"seconds": 0.05, "steps": 2})
                    ids = await create_all(lambda: client, range(TASKS), lambda i: short)
                    await eventually(lambda: len(recorder.terminal()) >= 20, 30, "tasks to end")

                    bridge.kill()
                    killed = time.monotonic()
                    received_before = len(recorder.notices)
                    bridge.start()
                    down = figure_time(killed)
                    produced_meanwhile = len(stream_ids(redis_client, keys, sid))
                    await recorder.wait_terminal(set(ids), 60)
                    tg.cancel_scope.cancel()

                assert recorder.connects >= 2, "the stream should have been reopened"
                missed = produced_meanwhile - received_before
                assert missed > 0, "the test should make the client miss notifications"
                expected = stream_ids(redis_client, keys, sid)
                assert_exactly_once(recorder, expected, set(ids))

                # The session and its tasks outlived the bridge process.
                listed = await list_all(client)
                assert sorted(t["taskId"] for t in listed) == sorted(ids)
                assert {t["status"] for t in listed} == {"completed"}
        figure(
            f"bridge down {down} s; {len(expected)} notifications for {TASKS} tasks, "
            f"{missed} of them produced while the client was cut off: 0 lost, 0 duplicated"
        )
    finally:
        assert bridge.proc is not None
        bridge.proc.stop()
        assert "Traceback" not in bridge.output(), bridge.output()[-4000:]


@pytest.mark.timeout(120)
async def test_two_bridges_serve_one_session_alternately(
    own_env: dict[str, str],
    log_dir: Path,
    redis_client: redis.Redis,
    figure: Callable[[str], None],
) -> None:
    keys = keys_of(own_env)
    with (
        celery_worker(own_env, log_dir, concurrency=2, name="twobridges"),
        running_bridge(own_env, log_dir, "bridge-one") as one,
        running_bridge(own_env, log_dir, "bridge-two") as two,
    ):
        async with connect(one.url) as first:
            second = RawClient(two.url, first.http)
            second.session_id, second.version = first.session_id, first.version
            turn = itertools.count()

            def pick() -> RawClient:
                return (first, second)[next(turn) % 2]

            # Every fifth task is long and cancelled at once, through the other bridge.
            doomed = set(range(0, TASKS, 5))
            cancels: dict[str, dict[str, Any]] = {}

            def make(i: int) -> tuple[str, dict[str, Any]]:
                if i in doomed:
                    return "sleep", {"seconds": 30, "steps": 30}
                return "sleep", {"seconds": 0.02, "steps": 1}

            recorder = Recorder(second, first)
            ids: list[str] = []
            async with anyio.create_task_group() as tg:
                await tg.start(recorder.run)
                for start in range(0, TASKS, 50):
                    batch = range(start, start + 50)
                    ids += await create_all(pick, batch, make)
                    for i in batch:
                        if i in doomed:
                            cancel = await pick().call("tasks/cancel", {"taskId": ids[i]})
                            cancels[ids[i]] = cancel
                    recorder.switch()  # the GET stream moves to the other bridge
                await recorder.wait_terminal(set(ids), 60)
                tg.cancel_scope.cancel()

            expected_status = {
                task_id: "cancelled" if i in doomed else "completed"
                for i, task_id in enumerate(ids)
            }
            assert {c["status"] for c in cancels.values()} == {"cancelled"}
            for task_id, status in expected_status.items():
                task = await pick().get_task(task_id)
                assert task["status"] == status, task
                if status == "completed":
                    result = await pick().call("tasks/result", {"taskId": task_id})
                    assert result["content"] == [{"type": "text", "text": "slept 0.02s in 1 steps"}]
                    continue
                try:
                    await pick().call("tasks/result", {"taskId": task_id})
                except RpcError as err:
                    assert err.code == -32603 and err.data["status"] == "cancelled", err
                else:
                    raise AssertionError(f"tasks/result of cancelled {task_id} answered a result")
            terminal = {n.task_id: n.status for n in recorder.notices if n.status in TERMINAL}
            assert terminal == expected_status
            expected = stream_ids(redis_client, keys, first.session_id or "")
            assert_exactly_once(recorder, expected, set(ids))
            assert recorder.connects >= 4
    figure(
        f"{TASKS} tasks ({len(doomed)} cancelled) over 2 bridges, requests alternating, "
        f"GET stream moved {recorder.connects - 1} times: {len(expected)} notifications, "
        "0 lost, 0 duplicated, every status right"
    )
