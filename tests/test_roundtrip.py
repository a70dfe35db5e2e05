"""Each demo tool end to end: a real bridge, a real prefork worker, the real Redis."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
import redis

from tests.client import RpcError, connect
from tests.services import keys_of

pytestmark = pytest.mark.anyio


async def test_initialize_advertises_tasks(bridge: str) -> None:
    async with connect(bridge) as client:
        assert client.session_id
        result = await client.call("ping")
        assert result == {}


async def test_echo_plain_call_runs_on_a_worker(bridge: str) -> None:
    async with connect(bridge) as client:
        result = await client.call("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
        assert result == {"content": [{"type": "text", "text": "hi"}]}


async def test_echo_as_task(bridge: str) -> None:
    async with connect(bridge) as client:
        task = await client.create_task("echo", {"text": "hello"})
        assert task["status"] == "working"
        result = await client.call("tasks/result", {"taskId": task["taskId"]})
        assert result["content"] == [{"type": "text", "text": "hello"}]
        assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task["taskId"]}
        final = await client.get_task(task["taskId"])
        assert final["status"] == "completed"


async def test_sleep_reports_progress_then_completes(bridge: str) -> None:
    async with connect(bridge) as client:
        task = await client.create_task("sleep", {"seconds": 0.5, "steps": 5})
        async with client.stream() as events:
            seen = []
            async for _, message in events:
                params = message["params"]
                if params["taskId"] != task["taskId"]:
                    continue
                seen.append(params.get("statusMessage"))
                if params["status"] == "completed":
                    break
        steps = [m for m in seen if m and m.startswith("step")]
        assert steps == sorted(steps, key=lambda s: int(s.split()[1].split("/")[0]))
        assert "step 5/5" in steps
        result = await client.call("tasks/result", {"taskId": task["taskId"]})
        assert "slept" in result["content"][0]["text"]


async def test_fail_makes_the_task_failed(bridge: str) -> None:
    async with connect(bridge) as client:
        task = await client.create_task("fail", {"message": "kaboom"})
        final = await client.wait_status(task["taskId"], {"completed", "failed", "cancelled"})
        assert final["status"] == "failed"
        assert "kaboom" in final["statusMessage"]
        result = await client.call("tasks/result", {"taskId": task["taskId"]})
        assert result["isError"] is True
        assert "kaboom" in result["content"][0]["text"]


async def test_spin_completes(bridge: str) -> None:
    async with connect(bridge) as client:
        task = await client.create_task("spin", {"seconds": 0.2})
        result = await client.call("tasks/result", {"taskId": task["taskId"]})
        assert result["content"][0]["text"].startswith("spun")


async def test_required_tool_without_task_is_method_not_found(bridge: str) -> None:
    async with connect(bridge) as client:
        with pytest.raises(RpcError) as err:
            await client.call("tools/call", {"name": "sleep", "arguments": {"seconds": 0}})
        assert err.value.code == -32601


async def test_forbidden_tool_as_task_is_method_not_found(bridge: str) -> None:
    async with connect(bridge) as client:
        with pytest.raises(RpcError) as err:
            await client.create_task("add", {"a": 1, "b": 2})
        assert err.value.code == -32601
        result = await client.call("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}})
        assert result["content"][0]["text"] == "3"


async def test_invalid_arguments_are_a_tool_error(bridge: str) -> None:
    async with connect(bridge) as client:
        result = await client.call("tools/call", {"name": "echo", "arguments": {"text": 5}})
        assert result["isError"] is True
        assert "text" in result["content"][0]["text"]


async def test_invalid_arguments_as_task_make_a_failed_task(bridge: str) -> None:
    async with connect(bridge) as client:
        task = await client.create_task("echo", {"txt": "typo"})
        assert task["status"] == "failed"
        assert "txt" in task["statusMessage"]
        result = await client.call("tasks/result", {"taskId": task["taskId"]})
        assert result["isError"] is True


async def test_older_protocol_calls_required_tools_plainly(bridge: str) -> None:
    async with connect(bridge, version="2025-06-18") as client:
        tools = (await client.call("tools/list"))["tools"]
        assert all("execution" not in t for t in tools)
        result = await client.call(
            "tools/call", {"name": "sleep", "arguments": {"seconds": 0.1, "steps": 1}, "task": {}}
        )
        assert result["content"][0]["text"].startswith("slept")


async def test_notifications_cancelled_stops_a_plain_call(
    bridge: str, redis_client: redis.Redis, env: dict[str, str]
) -> None:
    async with connect(bridge, version="2025-06-18") as client:
        outcome: dict[str, Any] = {}

        async def plain_call() -> None:
            with pytest.raises(RpcError) as err:
                await client.call(
                    "tools/call", {"name": "sleep", "arguments": {"seconds": 30, "steps": 300}}
                )
            outcome["error"] = err.value

        async with anyio.create_task_group() as tg:
            tg.start_soon(plain_call)
            request_id = 1 + client.last_request_id  # the id the call is about to use
            # The bridge maps the request id to the call's hidden task before publishing it.
            owner = f"session:{client.session_id}"
            key = keys_of(env).call(owner, json.dumps(request_id))
            with anyio.fail_after(10):
                while not redis_client.exists(key):
                    await anyio.sleep(0.02)
            await client.notify(
                "notifications/cancelled", {"requestId": request_id, "reason": "changed my mind"}
            )
        assert outcome["error"].data["status"] == "cancelled"
        assert "changed my mind" in outcome["error"].message


async def test_a_finished_task_holds_no_lease(
    bridge: str, redis_client: redis.Redis, env: dict[str, str]
) -> None:
    async with connect(bridge) as client:
        task = await client.create_task("sleep", {"seconds": 0.3, "steps": 3})
        leases = keys_of(env).leases_of(task["taskId"])
        with anyio.fail_after(10):
            while redis_client.zscore(leases, task["taskId"]) is None:
                await anyio.sleep(0.02)  # leased while its body runs
        await client.call("tasks/result", {"taskId": task["taskId"]})
        # Dropped by the terminal transition itself, with no separate release.
        assert redis_client.zscore(leases, task["taskId"]) is None
