"""Limits, each a setting with a clear error: tasks in flight per owner, creations per owner
per minute, argument size, maximum TTL (the body size limit is in test_transport)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.client import ModernClient, RpcError, connect
from tests.inline import InlineWorker
from tests.inproc import app_server, async_transport, settings_of
from tests.services import bridge_server, celery_worker

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def limited(fast_env: dict[str, str], log_dir: Path, inline: InlineWorker) -> Iterator[str]:
    # The bridge's limits, on the in-process app (the fast tier); tools run inline.
    settings = {
        **fast_env,
        "MCP_BRIDGE_MAX_INFLIGHT_PER_OWNER": "2",
        "MCP_BRIDGE_MAX_ARGUMENT_BYTES": "1000",
        "MCP_BRIDGE_TASK_TTL_MAX_MS": "5000",
        "MCP_BRIDGE_TASK_TTL_DEFAULT_MS": "4000",
    }
    with app_server(settings_of(settings), log_dir / "inproc-limited.log") as server:
        yield server.url


async def test_tasks_in_flight_per_owner(limited: str) -> None:
    # ``sleep`` rather than ``spin``: inline, a cancel stops only a tool that checks for it.
    async with connect(limited) as client, connect(limited) as other:
        first = await client.create_task("sleep", {"seconds": 30, "steps": 300})
        await client.create_task("sleep", {"seconds": 30, "steps": 300})
        with pytest.raises(RpcError) as err:
            await client.create_task("echo", {"text": "third"})
        assert err.value.code == -32000
        assert err.value.data == {"limit": "tasks-in-flight", "max": 2}
        assert "Too many tasks" in err.value.message
        # Plain calls count too; another owner is not affected.
        with pytest.raises(RpcError):
            await client.call("tools/call", {"name": "echo", "arguments": {"text": "plain"}})
        await other.create_task("echo", {"text": "fine"})
        # A task that ends frees its place.
        await client.call("tasks/cancel", {"taskId": first["taskId"]})
        third = await client.create_task("echo", {"text": "third"})
        assert third["status"] == "working"
        for task in (await client.call("tasks/list"))["tasks"]:
            if task["status"] == "working":
                # A task may end between the list and the cancel (inline, the echo does).
                with contextlib.suppress(RpcError):
                    await client.call("tasks/cancel", {"taskId": task["taskId"]})


async def test_the_stateless_era_answers_429(limited: str) -> None:
    long = {"name": "sleep", "arguments": {"seconds": 30, "steps": 300}}
    async with httpx.AsyncClient(timeout=30, transport=async_transport(limited)) as http:
        modern = ModernClient(limited, http)
        created = [await modern.request("tools/call", long) for _ in range(2)]
        with pytest.raises(RpcError) as err:
            await modern.request("tools/call", long)
        assert (err.value.status, err.value.code) == (429, -32000)
        for task in created:
            await modern.request("tasks/cancel", {"taskId": task["taskId"]})


async def test_arguments_too_large(limited: str) -> None:
    async with connect(limited) as client:
        with pytest.raises(RpcError) as err:
            await client.call("tools/call", {"name": "echo", "arguments": {"text": "x" * 2000}})
        assert err.value.code == -32602
        assert "too large" in err.value.message
        small = await client.call("tools/call", {"name": "echo", "arguments": {"text": "x" * 100}})
        assert small["content"][0]["text"] == "x" * 100


async def test_ttl_is_clamped_to_the_maximum(limited: str) -> None:
    async with connect(limited) as client:
        assert (await client.create_task("echo", {"text": "a"}, ttl=10**9))["ttl"] == 5000
        assert (await client.create_task("echo", {"text": "b"}))["ttl"] == 4000
        with pytest.raises(RpcError) as err:
            await client.create_task("echo", {"text": "c"}, ttl=-5)
        assert err.value.code == -32602


async def test_creations_per_minute(
    fast_env: dict[str, str], log_dir: Path, inline: InlineWorker
) -> None:
    # A fixed window per clock minute: start well inside one.
    with anyio.fail_after(10):
        while time.time() % 60 > 50:
            await anyio.sleep(0.1)
    rated = settings_of({**fast_env, "MCP_BRIDGE_MAX_CREATES_PER_MINUTE": "3"})
    with app_server(rated, log_dir / "inproc-rate.log") as server:
        async with connect(server.url) as client, connect(server.url) as other:
            for i in range(3):
                await client.create_task("echo", {"text": str(i)})
            with pytest.raises(RpcError) as err:
                await client.create_task("echo", {"text": "one too many"})
            assert err.value.data == {"limit": "creations-per-minute", "max": 3}
            await other.create_task("echo", {"text": "someone else"})


async def test_result_too_large(env: dict[str, str], log_dir: Path) -> None:
    # A worker's setting: on a worker process of its own (the inline worker has the run's).
    small = {
        **env,
        "MCP_BRIDGE_QUEUE": env["MCP_BRIDGE_QUEUE"] + "-results",
        "MCP_BRIDGE_MAX_RESULT_BYTES": "2000",
    }
    with (
        celery_worker(small, log_dir, concurrency=1, name="results"),
        bridge_server(small, log_dir, "bridge-results") as url,
    ):
        async with connect(url) as client:
            fits = await client.call("tools/call", {"name": "blob", "arguments": {"size": 1000}})
            assert fits["content"][0]["text"] == "x" * 1000
            task = await client.create_task("blob", {"size": 5000})
            result = await client.call("tasks/result", {"taskId": task["taskId"]})
            assert result["isError"] is True
            assert "too large" in result["content"][0]["text"]
            assert (await client.get_task(task["taskId"]))["status"] == "failed"
