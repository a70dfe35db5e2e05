"""Flower sees every MCP task: a Flower subprocess against the test Redis finds the task by
its MCP task id (in the Celery task's kwargs) and sees its progress as a PROGRESS state; but
it sees no tool arguments, no owner and no result, and it asks for a password."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis

from tests.client import connect
from tests.services import (
    ROOT,
    Process,
    RedisServer,
    bridge_server,
    celery_worker,
    free_port,
    keys_of,
    tls,
    wait_for,
)
from tests.services import (
    test_env as deployment_env,
)

pytestmark = pytest.mark.anyio

FLOWER_LOGIN = ("ops", "flower-test-password")


@pytest.fixture(scope="module")
def flower(env: dict[str, str], log_dir: Path, worker: Process) -> Iterator[str]:
    port = free_port()
    log = log_dir / "flower.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "mcp_celery_bridge.workers",
                "flower",
                "--address=127.0.0.1",
                f"--port={port}",
            ],
            cwd=ROOT,
            env={**os.environ, **env, "FLOWER_BASIC_AUTH": ":".join(FLOWER_LOGIN)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            answer = httpx.get(f"{url}/healthcheck", timeout=1, verify=tls())
            return answer.status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, 30, "Flower", every=0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


async def test_flower_finds_the_task_by_its_mcp_id_and_shows_progress(
    bridge: str, flower: str, redis_client: redis.Redis, env: dict[str, str]
) -> None:
    async with connect(bridge) as client, httpx.AsyncClient(timeout=10, auth=FLOWER_LOGIN) as http:
        # Flower turns events on in the workers when it starts; wait until it knows them.
        with anyio.fail_after(20):
            while not (await http.get(f"{flower}/api/workers", params={"refresh": 1})).json():
                await anyio.sleep(0.2)
        created = await client.create_task("sleep", {"seconds": 3, "steps": 6})
        task_id = created["taskId"]

        async def row() -> tuple[str, dict[str, Any]] | None:
            tasks = (await http.get(f"{flower}/api/tasks", params={"limit": 1000})).json()
            for celery_id, info in tasks.items():
                if task_id in str(info.get("kwargs")):
                    return celery_id, info
            return None

        states = set()
        with anyio.fail_after(30):
            while True:
                found = await row()
                if found is not None:
                    states.add(found[1]["state"])
                    if found[1]["state"] == "SUCCESS":
                        break
                await anyio.sleep(0.1)
        celery_id, info = found
        assert info["name"] == "mcp.sleep"
        assert "'tool': 'sleep'" in info["kwargs"]
        assert "PROGRESS" in states, states
        # And back: the Celery id Flower shows is the one the registry keeps for the task.
        assert (await client.get_task(task_id))["status"] == "completed"
        assert redis_client.hget(keys_of(env).task(task_id), "celery_id") == celery_id


async def _workers_known(http: httpx.AsyncClient, flower: str) -> None:
    # Flower turns events on in the workers when it starts; wait until it knows them.
    with anyio.fail_after(20):
        while not (await http.get(f"{flower}/api/workers", params={"refresh": 1})).json():
            await anyio.sleep(0.2)


async def _flower_row(
    http: httpx.AsyncClient, flower: str, task_id: str, state: str
) -> dict[str, Any]:
    """Flower's row of the Celery task behind MCP task ``task_id``, once in ``state``."""
    with anyio.fail_after(30):
        while True:
            tasks = (await http.get(f"{flower}/api/tasks", params={"limit": 1000})).json()
            for celery_id, info in tasks.items():
                if task_id in str(info.get("kwargs")) and info["state"] == state:
                    detail = (await http.get(f"{flower}/api/task/info/{celery_id}")).json()
                    return {**info, **detail}
            await anyio.sleep(0.1)


async def test_flower_shows_no_arguments_owner_or_result(bridge: str, flower: str) -> None:
    secret = "s3cret-" + os.urandom(6).hex()
    async with connect(bridge) as client, httpx.AsyncClient(timeout=10, auth=FLOWER_LOGIN) as http:
        await _workers_known(http, flower)
        ok = await client.create_task("echo", {"text": secret + "-ok"})
        bad = await client.create_task("fail", {"message": secret + "-bad"})
        ok_row = await _flower_row(http, flower, ok["taskId"], "SUCCESS")
        bad_row = await _flower_row(http, flower, bad["taskId"], "FAILURE")
        # The bridge still has it all, for the task's owner.
        result = await client.call("tasks/result", {"taskId": ok["taskId"]})
        assert result["content"][0]["text"] == secret + "-ok"
        failed = await client.call("tasks/result", {"taskId": bad["taskId"]})
        assert failed["isError"] is True and secret + "-bad" in failed["content"][0]["text"]
        assert (await client.get_task(bad["taskId"]))["status"] == "failed"
        # Flower tells success from failure, by the MCP ids, and shows nothing else.
        everything = (await http.get(f"{flower}/api/tasks", params={"limit": 1000})).text
        for row in (ok_row, bad_row):
            shown = str(row)
            assert secret not in shown, shown
            assert client.session_id not in shown, shown
        assert secret not in everything and client.session_id not in everything
        assert "'tool': 'echo'" in ok_row["kwargs"]
        assert "ToolFailed" in bad_row["exception"], bad_row["exception"]

        # A plain Celery call (no MCP ids), here published through Flower's API, still runs
        # and returns its result as before.
        applied = await http.post(
            f"{flower}/api/task/async-apply/mcp.echo",
            json={"kwargs": {"arguments": {"text": "plain"}}},
        )
        assert applied.status_code == 200, applied.text
        plain_id = applied.json()["task-id"]
        with anyio.fail_after(30):
            while True:
                info = (await http.get(f"{flower}/api/task/info/{plain_id}")).json()
                if info.get("state") == "SUCCESS":
                    break
                await anyio.sleep(0.1)
        assert "plain" in str(info["result"])


async def test_flower_asks_for_a_password(flower: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for path in ("/", "/api/tasks", "/api/workers"):
            assert (await http.get(flower + path)).status_code == 401, path
        assert (await http.get(flower + "/healthcheck")).status_code == 200


async def test_flower_shows_progress_and_the_end_of_a_cancelled_task(
    bridge: str, flower: str
) -> None:
    async with connect(bridge) as client, httpx.AsyncClient(timeout=10, auth=FLOWER_LOGIN) as http:
        await _workers_known(http, flower)
        created = await client.create_task("sleep", {"seconds": 30, "steps": 60})
        # While it runs: PROGRESS, with the progress where the task page shows it (result).
        running = await _flower_row(http, flower, created["taskId"], "PROGRESS")
        assert "step " in str(running["result"]), running
        await client.call("tasks/cancel", {"taskId": created["taskId"]})
        # Celery ranks REVOKED below a custom state: the worker says CANCELLED instead.
        cancelled = await _flower_row(http, flower, created["taskId"], "CANCELLED")
        assert (await client.get_task(created["taskId"]))["status"] == "cancelled"
        assert cancelled["name"] == "mcp.sleep"


async def test_flower_shows_a_task_cancelled_while_no_worker_ran_as_cancelled(
    flower: str, redis_server: RedisServer, log_dir: Path
) -> None:
    # A deployment of its own (prefix, queue) on the run's Redis, which Flower watches: its
    # task is cancelled before any worker runs, so no worker hears the revoke.
    env = deployment_env(redis_server.url)
    async with httpx.AsyncClient(timeout=10, auth=FLOWER_LOGIN) as http:
        with bridge_server(env, log_dir, "bridge-flower") as url:
            async with connect(url) as client:
                created = await client.create_task("echo", {"text": "never"})
                await client.call("tasks/cancel", {"taskId": created["taskId"]})
                # The worker that comes later takes the message and drops it (the registry
                # says cancelled): Flower must not show it STARTED for ever.
                with celery_worker(env, log_dir, concurrency=1, name="flower-late"):
                    row = await _flower_row(http, flower, created["taskId"], "CANCELLED")
                assert (await client.get_task(created["taskId"]))["status"] == "cancelled"
        assert row["name"] == "mcp.echo"
