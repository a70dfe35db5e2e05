"""Questions to the user mid-task (input_required): the demo tool `confirm` asks, the
client answers, the task goes on; in both eras, through any bridge process, exactly once,
and decline, timeout, a caller that cannot answer and a cancel while waiting each end
cleanly."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.context import RequestContext

from tests.client import ModernClient, RawClient, connect
from tests.inproc import AsyncTransport, sdk_http

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

ELICITATION = {"elicitation": {"form": {}}}


async def _question(
    events: AsyncIterator[tuple[str, dict[str, Any]]], task_id: str
) -> dict[str, Any]:
    with anyio.fail_after(20):
        async for _, message in events:
            if message.get("method") == "elicitation/create":
                related = message["params"]["_meta"]["io.modelcontextprotocol/related-task"]
                if related["taskId"] == task_id:
                    return message
    raise AssertionError("the stream ended")


async def _answer(client: RawClient, question: dict[str, Any], result: dict[str, Any]) -> None:
    response = await client.post({"jsonrpc": "2.0", "id": question["id"], "result": result})
    assert response.status_code == 202, response.text


async def test_confirm_is_answered_through_the_session_stream(
    fast_bridge: str, fast_bridge_b: str
) -> None:
    async with connect(fast_bridge, capabilities=ELICITATION) as client, client.stream() as events:
        task = await client.create_task("confirm", {"question": "Ship it?"})
        question = await _question(events, task["taskId"])
        assert question["params"]["message"] == "Ship it?"
        assert question["params"]["requestedSchema"]["properties"]["confirm"]["type"] == "boolean"
        waiting = await client.get_task(task["taskId"])
        assert waiting["status"] == "input_required"
        assert waiting["statusMessage"] == "waiting for input: Ship it?"
        # The answer may reach any bridge process.
        other = RawClient(fast_bridge_b, client.http)
        other.session_id, other.version = client.session_id, client.version
        await _answer(other, question, {"action": "accept", "content": {"confirm": True}})
        # Exactly once: a second answer to the same question changes nothing.
        await _answer(client, question, {"action": "accept", "content": {"confirm": False}})
        result = await client.call("tasks/result", {"taskId": task["taskId"]})
    assert result["content"][0]["text"] == "confirmed"


async def test_decline(fast_bridge: str) -> None:
    async with connect(fast_bridge, capabilities=ELICITATION) as client, client.stream() as events:
        task = await client.create_task("confirm", {"question": "Delete everything?"})
        question = await _question(events, task["taskId"])
        await _answer(client, question, {"action": "decline"})
        result = await client.call("tasks/result", {"taskId": task["taskId"]})
    assert result["content"][0]["text"] == "the user chose to decline"


async def test_a_caller_without_elicitation_cannot_be_asked(fast_bridge: str) -> None:
    async with connect(fast_bridge) as client:
        task = await client.create_task("confirm", {"question": "Anyone there?"})
        final = await client.wait_status(task["taskId"], {"completed", "failed", "cancelled"})
    assert final["status"] == "failed"
    assert "InputUnavailable" in final["statusMessage"]


async def test_no_answer_in_time(fast_bridge: str) -> None:
    async with connect(fast_bridge, capabilities=ELICITATION) as client, client.stream() as events:
        task = await client.create_task("confirm", {"question": "Quick?", "timeout": 1})
        question = await _question(events, task["taskId"])
        final = await client.wait_status(task["taskId"], {"completed", "failed", "cancelled"}, 10)
        assert final["status"] == "failed"
        assert "InputTimeout" in final["statusMessage"]
        # The question was withdrawn: a late answer is ignored.
        await _answer(client, question, {"action": "accept", "content": {"confirm": True}})
        assert (await client.get_task(task["taskId"]))["status"] == "failed"


async def test_cancel_while_waiting(fast_bridge: str) -> None:
    async with connect(fast_bridge, capabilities=ELICITATION) as client, client.stream() as events:
        task = await client.create_task("confirm", {"question": "Wait?"})
        await _question(events, task["taskId"])
        cancelled = await client.call("tasks/cancel", {"taskId": task["taskId"]})
        assert cancelled["status"] == "cancelled"
        final = await client.wait_status(task["taskId"], {"cancelled", "completed", "failed"}, 5)
    assert final["status"] == "cancelled"


async def test_the_sdk_client_answers(fast_bridge: str) -> None:
    asked: list[str] = []

    async def elicit(
        context: RequestContext[ClientSession, Any], params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"confirm": True})

    async with (
        streamable_http_client(fast_bridge, http_client=sdk_http()) as (read, write, _),
        ClientSession(read, write, elicitation_callback=elicit) as session,
    ):
        await session.initialize()
        created = await session.experimental.call_tool_as_task("confirm", {"question": "SDK?"})
        with anyio.fail_after(20):
            async for status in session.experimental.poll_task(created.task.taskId):
                if status.status in ("completed", "failed", "cancelled"):
                    break
        result = await session.experimental.get_task_result(
            created.task.taskId, types.CallToolResult
        )
    assert asked == ["SDK?"]
    assert (
        isinstance(result.content[0], types.TextContent) and result.content[0].text == "confirmed"
    )


async def test_modern_input_requests_and_updates(fast_bridge: str, fast_bridge_b: str) -> None:
    async with httpx.AsyncClient(timeout=30, transport=AsyncTransport()) as http:
        client = ModernClient(fast_bridge, http, elicitation=True)
        created = await client.request(
            "tools/call", {"name": "confirm", "arguments": {"question": "Modern?"}}
        )
        waiting = await client.wait_status(created["taskId"], {"input_required"})
        ((key, request),) = waiting["inputRequests"].items()
        assert request["method"] == "elicitation/create"
        assert request["params"]["message"] == "Modern?"
        answer = {"action": "accept", "content": {"confirm": False}}
        # Through the other bridge, twice: delivered exactly once.
        other = ModernClient(fast_bridge_b, http, elicitation=True)
        for _ in range(2):
            ack = await other.request(
                "tasks/update", {"taskId": created["taskId"], "inputResponses": {key: answer}}
            )
            assert ack["resultType"] == "complete"
        final = await client.wait_status(created["taskId"], {"completed", "failed", "cancelled"})
    assert final["status"] == "completed"
    assert final["result"]["content"][0]["text"] == "not confirmed"


async def test_modern_listen_shows_the_question(fast_bridge: str) -> None:
    async with httpx.AsyncClient(timeout=30, transport=AsyncTransport()) as http:
        client = ModernClient(fast_bridge, http, elicitation=True)
        created = await client.request(
            "tools/call", {"name": "confirm", "arguments": {"question": "Listen?"}}
        )
        async with client.listen([created["taskId"]]) as messages:
            with anyio.fail_after(20):
                async for message in messages:
                    params = message.get("params", {})
                    if params.get("status") == "input_required":
                        (key,) = params["inputRequests"]
                        await client.request(
                            "tasks/update",
                            {
                                "taskId": created["taskId"],
                                "inputResponses": {key: {"action": "cancel"}},
                            },
                        )
                    if params.get("status") == "completed":
                        assert params["result"]["content"][0]["text"] == "the user chose to cancel"
                        break
        assert json.dumps(params)
