"""Workers die under running tasks: a pool child killed by the OS (Celery reports it), a whole
worker killed at once (nobody reports it: the lease reaper must), and the same with late acks,
where the message comes back and must not run a task that already failed."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import anyio
import httpx
import pytest
import redis

from mcp_celery_bridge.bridge.shared.clients import async_client
from mcp_celery_bridge.bridge.shared.keys import Keys
from mcp_celery_bridge.bridge.shared.registry import Registry
from mcp_celery_bridge.bridge.shared.settings import Settings
from tests.client import TERMINAL, ModernClient, RpcError, connect, running_pid
from tests.reliability.harness import figure_time
from tests.services import celery_worker, eventually, keys_of, parent_pid, running_bridge

pytestmark = pytest.mark.anyio

#: Small lease settings: a dead worker's task must fail within LEASE_S + REAPER_INTERVAL_S.
LEASE = {"MCP_BRIDGE_LEASE_S": "2", "MCP_BRIDGE_REAPER_INTERVAL_S": "0.2"}


@pytest.mark.timeout(60)
async def test_a_killed_pool_child_fails_its_task_naming_the_worker(
    own_env: dict[str, str], log_dir: Path, figure: Callable[[str], None]
) -> None:
    # The default lease (30 s) cannot fire in this test: the failure must come from Celery's
    # WorkerLostError, reported by the worker's main process.
    with (
        celery_worker(own_env, log_dir, concurrency=1, name="childloss") as worker,
        running_bridge(own_env, log_dir, "bridge-childloss") as bridge,
    ):
        async with connect(bridge.url) as client:
            task = await client.create_task("sleep", {"seconds": 60, "steps": 1})
            node, pid = await running_pid(client, task["taskId"])
            assert parent_pid(pid) == worker.popen.pid, "the task should run in a pool child"

            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            final = await client.wait_status(task["taskId"], TERMINAL, timeout=15)
            took = figure_time(killed)
            assert final["status"] == "failed", final
            message = final["statusMessage"]
            assert message.startswith(f"worker lost ({node} (pid {pid})): "), message
            assert "SIGKILL" in message, message
            assert took < 15
            figure(f"pool child SIGKILLed -> failed in {took} s ({message!r})")

            # Not the tool's doing: tasks/result answers the JSON-RPC error that failed it.
            with pytest.raises(RpcError) as raised:
                await client.call("tasks/result", {"taskId": task["taskId"]})
            assert raised.value.code == -32603 and raised.value.message == message
            assert raised.value.data["reason"] == "worker_lost"
            assert raised.value.data["worker"] == f"{node} (pid {pid})"

            # The pool replaced the child: the worker still serves.
            echo = await client.create_task("echo", {"text": "still here"})
            done = await client.wait_status(echo["taskId"], TERMINAL, timeout=15)
            assert done["status"] == "completed", done

        # 2026-07-28: the same loss is ``failed`` with the error, not ``completed``.
        async with httpx.AsyncClient(timeout=30) as http:
            stateless = ModernClient(bridge.url, http)
            created = await stateless.request(
                "tools/call", {"name": "sleep", "arguments": {"seconds": 60, "steps": 1}}
            )
            task_id = created["taskId"]
            _, child = await running_pid(stateless, task_id)
            os.kill(child, signal.SIGKILL)
            final = await stateless.wait_status(task_id, TERMINAL, timeout=15)
            assert final["status"] == "failed", final
            assert "result" not in final
            assert final["error"]["code"] == -32603
            assert final["error"]["data"]["reason"] == "worker_lost"


@pytest.mark.timeout(60)
async def test_a_killed_worker_fails_its_task_when_the_lease_expires(
    own_env: dict[str, str],
    log_dir: Path,
    redis_client: redis.Redis,
    figure: Callable[[str], None],
) -> None:
    env = {**own_env, **LEASE}
    keys = keys_of(env)
    with (
        running_bridge(env, log_dir, "bridge-workerloss") as bridge,
        celery_worker(env, log_dir, concurrency=2, name="workerloss") as worker,
    ):
        async with connect(bridge.url) as client:
            # A healthy task running for several lease lengths keeps renewing and completes.
            healthy = await client.create_task("sleep", {"seconds": 5, "steps": 5})
            doomed = await client.create_task("sleep", {"seconds": 60, "steps": 1})
            leases = keys.leases_of(doomed["taskId"])
            node, pid = await running_pid(client, doomed["taskId"])
            assert parent_pid(pid) == worker.popen.pid
            # The body takes its lease just after announcing that it runs.
            first = float(
                await eventually(
                    lambda: redis_client.zscore(leases, doomed["taskId"]), 5, "the lease"
                )
            )

            async def renewed() -> bool:
                return (redis_client.zscore(leases, doomed["taskId"]) or 0) > first

            await eventually(renewed, 5, "the lease to be renewed")
            done = await client.wait_status(healthy["taskId"], TERMINAL, timeout=15)
            assert done["status"] == "completed", done
            # A 2026-07-28 task on the freed slot, lost with the worker too.
            http = httpx.AsyncClient(timeout=30)
            stateless = ModernClient(bridge.url, http)
            sleep = {"name": "sleep", "arguments": {"seconds": 60, "steps": 1}}
            modern_task = (await stateless.request("tools/call", sleep))["taskId"]
            await running_pid(stateless, modern_task)

            # SIGKILL the worker's whole process group: main process and pool children at once.
            os.killpg(worker.popen.pid, signal.SIGKILL)
            killed = time.monotonic()
            worker.popen.wait(5)
            final = await client.wait_status(doomed["taskId"], TERMINAL, timeout=10)
            took = figure_time(killed)
            assert final["status"] == "failed", final
            assert final["statusMessage"] == f"worker lost ({node} (pid {pid})): lease expired"
            # The bound: the last renewal came at most lease/3 before the kill.
            assert took <= 2 + 0.2 + 1.5, took
            assert redis_client.zscore(leases, doomed["taskId"]) is None, "the lease was dropped"
            # The bridge that reaped it says so in its log, as a warning an operator can find.
            reaped = [
                json.loads(line)
                for line in bridge.output().split("\n")[:-1]
                if doomed["taskId"] in line and '"bridge.transitions"' in line
            ]
            assert any(
                e["level"] == "warning" and e["status"] == "failed" and e["tool"] == "sleep"
                for e in reaped
            ), reaped
            figure(f"whole worker SIGKILLed -> failed in {took} s (lease 2 s, reaper every 0.2 s)")

            lost = await stateless.wait_status(modern_task, TERMINAL, timeout=10)
            await http.aclose()
            assert lost["status"] == "failed", lost
            assert lost["error"]["data"] == {
                "reason": "worker_lost",
                "worker": lost["statusMessage"].removeprefix("worker lost (").split("): ")[0],
                "cause": "lease expired",
            }


@pytest.mark.timeout(90)
async def test_with_late_acks_the_redelivered_message_of_a_reaped_task_never_runs(
    own_env: dict[str, str],
    log_dir: Path,
    redis_client: redis.Redis,
    figure: Callable[[str], None],
) -> None:
    env = {
        **own_env,
        **LEASE,
        "MCP_BRIDGE_ACKS_LATE": "true",
        # A new worker hands back, at start, unacked messages older than this.
        "MCP_BRIDGE_VISIBILITY_TIMEOUT_S": "1",
    }
    keys = keys_of(env)
    with running_bridge(env, log_dir, "bridge-acks-late") as bridge:
        async with connect(bridge.url) as client:
            with celery_worker(env, log_dir, concurrency=1, name="lateack1") as worker:
                task = await client.create_task("sleep", {"seconds": 60, "steps": 1})
                task_id = task["taskId"]
                await running_pid(client, task_id)
                await eventually(lambda: redis_client.hget(keys.task(task_id), "runs"), 5, "lease")
                os.killpg(worker.popen.pid, signal.SIGKILL)
                worker.popen.wait(5)
            final = await client.wait_status(task_id, TERMINAL, timeout=10)
            assert final["status"] == "failed", final
            assert "lease expired" in final["statusMessage"]

            celery_id = str(redis_client.hget(keys.task(task_id), "celery_id"))
            restarted = time.monotonic()
            with celery_worker(env, log_dir, concurrency=1, name="lateack2") as second:

                def dropped() -> bool:
                    return f"mcp.sleep[{celery_id}] ignored" in second.output()

                await eventually(dropped, 20, "the redelivered message to be dropped")
                took = figure_time(restarted)
                assert f"Task mcp.sleep[{celery_id}] received" in second.output()
            again = await client.get_task(task_id)
            assert again == final, "the redelivered message changed a terminal task"
            assert redis_client.hget(keys.task(task_id), "runs") == "1", "the tool body ran again"
            figure(f"late ack: redelivered message dropped {took} s after a new worker was started")


@pytest.mark.timeout(90)
async def test_with_late_acks_a_lost_child_reruns_the_task_until_max_runs(
    own_env: dict[str, str],
    log_dir: Path,
    redis_client: redis.Redis,
    figure: Callable[[str], None],
) -> None:
    env = {**own_env, "MCP_BRIDGE_ACKS_LATE": "true", "MCP_BRIDGE_MAX_RUNS": "2"}
    keys = keys_of(env)
    with (
        celery_worker(env, log_dir, concurrency=1, name="rerun") as worker,
        running_bridge(env, log_dir, "bridge-rerun") as bridge,
    ):
        async with connect(bridge.url) as client:
            task = await client.create_task("sleep", {"seconds": 60, "steps": 1})
            task_id = task["taskId"]
            _, first = await running_pid(client, task_id)
            await eventually(lambda: redis_client.hget(keys.task(task_id), "runs"), 5, "lease")
            os.kill(first, signal.SIGKILL)
            started = time.monotonic()

            # The message is requeued, not failed: a new pool child runs the task again.
            async def rerun() -> int | None:
                _, pid = await running_pid(client, task_id)
                return pid if pid != first else None

            second = await eventually(rerun, 20, "the task to run again")
            rerun_after = figure_time(started)
            assert parent_pid(second) == worker.popen.pid
            assert (await client.get_task(task_id))["status"] == "working"
            await eventually(
                lambda: redis_client.hget(keys.task(task_id), "runs") == "2", 5, "run 2"
            )

            os.kill(second, signal.SIGKILL)
            final = await client.wait_status(task_id, TERMINAL, timeout=20)
            assert final["status"] == "failed", final
            assert re.match(r"^gave up after 2 runs", final["statusMessage"]), final
            figure(f"late ack: lost child -> rerun after {rerun_after} s; failed after max runs")


@pytest.mark.timeout(60)
async def test_bridges_reaping_at_once_fail_a_lost_task_once_and_a_renewal_wins(
    own_env: dict[str, str], log_dir: Path, redis_client: redis.Redis
) -> None:
    # No worker consumes this queue: the tasks stay queued, and the test plays the dead
    # worker by planting their leases in Redis.
    settings = Settings(
        redis_url=own_env["MCP_BRIDGE_REDIS_URL"],
        key_prefix=own_env["MCP_BRIDGE_KEY_PREFIX"],
        queue=own_env["MCP_BRIDGE_QUEUE"],
    )
    keys = Keys.of(settings)
    client = async_client(settings.redis_url)
    try:
        # The bridge's own reaper stays out of the way: the racers are the test's.
        quiet = {**own_env, "MCP_BRIDGE_REAPER_INTERVAL_S": "3600"}
        with running_bridge(quiet, log_dir, "bridge-reapers") as bridge:
            async with connect(bridge.url) as mcp:
                lost = (await mcp.create_task("sleep", {"seconds": 1}))["taskId"]
                alive = (await mcp.create_task("sleep", {"seconds": 1}))["taskId"]
                seconds, micros = redis_client.time()
                now_ms = seconds * 1000 + micros // 1000
                redis_client.hset(keys.task(lost), "holder", "w@h (pid 1)")
                # Both in the one lease set of their owner's shard.
                leases = keys.leases_of(lost)
                assert keys.leases_of(alive) == leases
                redis_client.zadd(leases, {lost: now_ms - 1, alive: now_ms + 60_000})

                reapers = [Registry(settings, client) for _ in range(8)]
                outcomes = []

                async def reap(registry: Registry, task_id: str) -> None:
                    outcomes.append((task_id, await registry.fail_lost(task_id)))

                async with anyio.create_task_group() as tg:
                    for registry in reapers:
                        tg.start_soon(reap, registry, lost)
                        tg.start_soon(reap, registry, alive)

                applied = [task_id for task_id, outcome in outcomes if outcome.applied]
                assert applied == [lost], outcomes
                final = await mcp.get_task(lost)
                assert final["status"] == "failed", final
                assert final["statusMessage"] == "worker lost (w@h (pid 1)): lease expired"
                assert (await mcp.get_task(alive))["status"] == "working"
                assert redis_client.zscore(leases, lost) is None
                assert redis_client.zscore(leases, alive) is not None, "a live lease is kept"
                owner = f"session:{mcp.session_id}"
                events = cast(
                    list[tuple[str, dict[str, str]]],
                    redis_client.xrange(keys.events(owner)),
                )
                failed = [e for _, e in events if '"status":"failed"' in e["task"]]
                assert len(failed) == 1, failed
    finally:
        await client.aclose()
