"""Progress: a tool body's reports reach the client as notifications/progress with the
token of its tools/call (legacy era), increasing and stopping at the terminal status, and
as the task's statusMessage in both eras."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import EventSource
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.session import RequestResponder

from tests import schema
from tests.client import ModernClient, connect
from tests.inproc import AsyncTransport, sdk_http

pytestmark = pytest.mark.anyio


async def test_progress_notifications_carry_the_token_and_stop_at_the_end(fast_bridge: str) -> None:
    async with connect(fast_bridge) as client:
        async with client.stream() as events:
            created = await client.call(
                "tools/call",
                {
                    "name": "sleep",
                    "arguments": {"seconds": 0.5, "steps": 5},
                    "task": {},
                    "_meta": {"progressToken": "tok-1"},
                },
            )
            task_id = created["task"]["taskId"]
            seen: list[dict[str, Any]] = []
            with anyio.fail_after(20):
                async for _, message in events:
                    seen.append(message)
                    params = message["params"]
                    if params.get("taskId") == task_id and params.get("status") == "completed":
                        break
    progress = [m["params"] for m in seen if m["method"] == "notifications/progress"]
    assert [p["progress"] for p in progress] == [1, 2, 3, 4, 5]
    assert all(p["progressToken"] == "tok-1" and p["total"] == 5 for p in progress)
    assert [p["message"] for p in progress] == [f"step {i}/5" for i in range(1, 6)]
    # The last message is the terminal status; no progress follows it.
    assert seen[-1]["method"] == "notifications/tasks/status"
    statuses = [
        m["params"]["statusMessage"] for m in seen if m["method"] != "notifications/progress"
    ]
    assert "step 3/5" in statuses


async def test_no_progress_notifications_without_a_token(fast_bridge: str) -> None:
    async with connect(fast_bridge) as client, client.stream() as events:
        created = await client.create_task("sleep", {"seconds": 0.2, "steps": 2})
        methods = []
        with anyio.fail_after(20):
            async for _, message in events:
                methods.append(message["method"])
                params = message["params"]
                if params.get("taskId") == created["taskId"] and params["status"] == "completed":
                    break
    assert "notifications/progress" not in methods


async def test_the_sdk_client_sees_each_step_in_order(fast_bridge: str) -> None:
    progress: list[tuple[float, float | None, str | None]] = []
    done = anyio.Event()

    async def on_message(
        message: RequestResponder[types.ServerRequest, types.ClientResult]
        | types.ServerNotification
        | Exception,
    ) -> None:
        if isinstance(message, types.ServerNotification):
            root = message.root
            if isinstance(root, types.ProgressNotification) and root.params.progressToken == "sdk":
                progress.append((root.params.progress, root.params.total, root.params.message))
            if isinstance(root, types.TaskStatusNotification) and root.params.status == "completed":
                done.set()

    async with (
        streamable_http_client(fast_bridge, http_client=sdk_http()) as (read, write, _),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        await session.initialize()
        created = await session.experimental.call_tool_as_task(
            "sleep", {"seconds": 0.4, "steps": 4}, meta={"progressToken": "sdk"}
        )
        with anyio.fail_after(20):
            await done.wait()
        result = await session.experimental.get_task_result(
            created.task.taskId, types.CallToolResult
        )
    assert [p[0] for p in progress] == [1, 2, 3, 4]
    assert all(total == 4 for _, total, _ in progress)
    assert progress[-1][2] == "step 4/4"
    assert isinstance(result.content[0], types.TextContent)


# -- plain calls (no task): progress on the call's own response stream -------------------------


async def _stream_messages(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> list[dict[str, Any]]:
    """Every message of one POST's SSE response, to the end of the stream."""
    messages = []
    async with http.stream("POST", url, content=json.dumps(body), headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in EventSource(response).aiter_sse():
            messages.append(json.loads(event.data))
    return messages


def _check_plain_progress(messages: list[dict[str, Any]], token: Any, steps: int) -> None:
    # The answer comes last; every progress notification before it, increasing, with the
    # request's token.
    assert "result" in messages[-1], messages[-1]
    progress = [m["params"] for m in messages[:-1]]
    assert all(m["method"] == "notifications/progress" for m in messages[:-1]), messages
    assert [p["progress"] for p in progress] == list(range(1, steps + 1))
    assert all(p["progressToken"] == token and p["total"] == steps for p in progress)


async def test_a_plain_call_streams_its_progress_in_a_session(fast_bridge: str) -> None:
    async with connect(fast_bridge) as client:
        body = {
            "jsonrpc": "2.0",
            "id": 41,
            "method": "tools/call",
            "params": {
                "name": "tick",
                "arguments": {"seconds": 1, "steps": 5},
                "_meta": {"progressToken": 7},
            },
        }
        messages = await _stream_messages(client.http, fast_bridge, body, client.headers())
    for message in messages[:-1]:
        schema.check_server_message(message)
    schema.check_response("tools/call", messages[-1])
    _check_plain_progress(messages, 7, 5)


async def test_a_stateless_plain_call_streams_its_progress(fast_bridge: str) -> None:
    async with httpx.AsyncClient(timeout=30, transport=AsyncTransport()) as http:
        plain = ModernClient(fast_bridge, http, tasks=False)
        body, headers = plain.build(
            "tools/call", {"name": "tick", "arguments": {"seconds": 1, "steps": 5}}
        )
        body["params"]["_meta"]["progressToken"] = "p-1"
        messages = await _stream_messages(http, fast_bridge, body, headers)
    for message in messages[:-1]:
        schema.check_modern_notification(message)
    schema.check_modern_response("tools/call", messages[-1])
    _check_plain_progress(messages, "p-1", 5)


async def test_no_progress_on_a_plain_call_without_a_token(fast_bridge: str) -> None:
    async with connect(fast_bridge) as client:
        body = {
            "jsonrpc": "2.0",
            "id": 42,
            "method": "tools/call",
            "params": {"name": "tick", "arguments": {"seconds": 0.3, "steps": 3}},
        }
        messages = await _stream_messages(client.http, fast_bridge, body, client.headers())
    assert len(messages) == 1 and "result" in messages[0]


async def test_the_sdk_client_gets_progress_of_a_plain_call(fast_bridge: str) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with (
        streamable_http_client(fast_bridge, http_client=sdk_http()) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool(
            "tick", {"seconds": 1, "steps": 5}, progress_callback=on_progress
        )
    assert not result.isError
    assert seen == [1, 2, 3, 4, 5]
