"""Flower sees every MCP task: a Flower subprocess against the test Redis finds the task by
its MCP task id (in the Celery task's kwargs) and sees its progress as a PROGRESS state."""

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
from tests.services import ROOT, Process, free_port, wait_for

pytestmark = pytest.mark.anyio


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
                "workers",
                "flower",
                "--address=127.0.0.1",
                f"--port={port}",
            ],
            cwd=ROOT,
            env={**os.environ, **env, "FLOWER_UNAUTHENTICATED_API": "true"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/healthcheck", timeout=1).status_code == 200
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
    async with connect(bridge) as client, httpx.AsyncClient(timeout=10) as http:
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
        assert "'tool': 'sleep'" in info["kwargs"] and client.session_id in info["kwargs"]
        assert "PROGRESS" in states, states
        # And back: the Celery id Flower shows is the one the registry keeps for the task.
        assert (await client.get_task(task_id))["status"] == "completed"
        key = f"{env['MCP_BRIDGE_KEY_PREFIX']}:task:{task_id}"
        assert redis_client.hget(key, "celery_id") == celery_id
