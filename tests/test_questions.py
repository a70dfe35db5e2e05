"""Where a tool's questions reach the client, and how they end: several questions at once
keep the task input_required until each is answered (both eras); a 2025-11-25 question
reaches the tasks/result stream and GET streams opened after it was asked, again until it
is answered; a question withdrawn unanswered (timeout, cancel) is taken back with
notifications/cancelled (2025-11-25) or leaves inputRequests (2026-07-28)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import EventSource
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.context import RequestContext

from tests import schema
from tests.client import ModernClient, RawClient, connect
from tests.inproc import AsyncTransport, sdk_http

pytestmark = pytest.mark.anyio

ELICITATION: dict[str, Any] = {"elicitation": {"form": {}}}
Messages = AsyncIterator[dict[str, Any]]


def _related(message: dict[str, Any]) -> str | None:
    meta = message.get("params", {}).get("_meta", {})
    related = meta.get("io.modelcontextprotocol/related-task")
    return related["taskId"] if related else None


async def _messages(events: AsyncIterator[tuple[str, dict[str, Any]]]) -> Messages:
    async for _, message in events:
        yield message


async def _next(
    messages: Messages, task_id: str, method: str, timeout: float = 20
) -> dict[str, Any]:
    """The next message ``method`` about ``task_id`` (other messages are skipped)."""
    with anyio.fail_after(timeout):
        async for message in messages:
            if message.get("method") == method and (
                _related(message) == task_id or message.get("params", {}).get("taskId") == task_id
            ):
                return message
    raise AssertionError("the stream ended")


async def _answer(client: RawClient, question: dict[str, Any], text: str) -> None:
    result = {"action": "accept", "content": {"text": text, "confirm": True}}
    response = await client.post({"jsonrpc": "2.0", "id": question["id"], "result": result})
    assert response.status_code == 202, response.text


@contextlib.asynccontextmanager
async def _streamed(
    client: RawClient, request_id: str, method: str, params: dict[str, Any]
) -> AsyncIterator[Messages]:
    """A request answered as SSE, as its messages (schema-checked); the response is the
    message whose id is ``request_id``."""
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    async with client.http.stream(
        "POST",
        client.url,
        content=json.dumps(body),
        headers=client.headers(),
        timeout=httpx.Timeout(5, read=None),
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")

        async def messages() -> Messages:
            async for event in EventSource(response).aiter_sse():
                if not event.data:
                    continue
                message = json.loads(event.data)
                if message.get("id") == request_id and "method" not in message:
                    schema.check_response(method, message)
                else:
                    schema.check_server_message(message)
                yield message

        yield messages()


def _result_stream(
    client: RawClient, task_id: str
) -> contextlib.AbstractAsyncContextManager[Messages]:
    """``tasks/result`` answered as SSE; the response is the message with id "result"."""
    return _streamed(client, "result", "tasks/result", {"taskId": task_id})


async def _response(messages: Messages) -> dict[str, Any]:
    with anyio.fail_after(20):
        async for message in messages:
            if message.get("id") == "result" and "method" not in message:
                return message
    raise AssertionError("the stream ended without the response")


# -- several questions at once (item 3) ------------------------------------------------------
async def test_two_questions_at_once_keep_the_task_waiting(fast_bridge: str) -> None:
    async with connect(fast_bridge, capabilities=ELICITATION) as client, client.stream() as events:
        messages = _messages(events)
        task = await client.create_task("ask_two", {"first": "First?", "second": "Second?"})
        task_id = task["taskId"]
        asked = [await _next(messages, task_id, "elicitation/create") for _ in range(2)]
        by_text = {q["params"]["message"]: q for q in asked}
        assert set(by_text) == {"First?", "Second?"}
        await _answer(client, by_text["First?"], "one")
        while True:  # the worker's report once it has the first answer
            status = (await _next(messages, task_id, "notifications/tasks/status"))["params"]
            if status["statusMessage"] == "1 of 2 answered":
                break
        # The second question is still pending: the task still waits for input.
        assert status["status"] == "input_required"
        assert (await client.get_task(task_id))["status"] == "input_required"
        await _answer(client, by_text["Second?"], "two")
        result = await client.call("tasks/result", {"taskId": task_id})
    assert result["content"][0]["text"] == "First?=one; Second?=two"


async def test_two_questions_at_once_modern(fast_bridge: str) -> None:
    async with httpx.AsyncClient(timeout=30, transport=AsyncTransport()) as http:
        client = ModernClient(fast_bridge, http, elicitation=True)
        created = await client.request(
            "tools/call", {"name": "ask_two", "arguments": {"first": "First?", "second": "Sec?"}}
        )
        task_id = created["taskId"]
        with anyio.fail_after(20):
            while (
                len(
                    (task := await client.request("tasks/get", {"taskId": task_id})).get(
                        "inputRequests", {}
                    )
                )
                < 2
            ):
                await anyio.sleep(0.05)
        assert task["status"] == "input_required"
        keys = {r["params"]["message"]: k for k, r in task["inputRequests"].items()}
        first = {"action": "accept", "content": {"text": "one"}}
        await client.request(
            "tasks/update", {"taskId": task_id, "inputResponses": {keys["First?"]: first}}
        )
        with anyio.fail_after(20):
            while (task := await client.request("tasks/get", {"taskId": task_id})).get(
                "statusMessage"
            ) != "1 of 2 answered":
                await anyio.sleep(0.05)
        # The snapshot of every question still outstanding.
        assert task["status"] == "input_required"
        assert set(task["inputRequests"]) == {keys["Sec?"]}
        second = {"action": "accept", "content": {"text": "two"}}
        await client.request(
            "tasks/update", {"taskId": task_id, "inputResponses": {keys["Sec?"]: second}}
        )
        final = await client.wait_status(task_id, {"completed", "failed", "cancelled"})
    assert final["result"]["content"][0]["text"] == "First?=one; Sec?=two"


# -- where questions are delivered (item 5) ------------------------------------------------
async def test_tasks_result_carries_the_question(fast_bridge: str) -> None:
    # The spec's sequence, without a GET stream: see input_required, call tasks/result.
    async with connect(fast_bridge, capabilities=ELICITATION) as client:
        task = await client.create_task("confirm", {"question": "Via result?"})
        await client.wait_status(task["taskId"], {"input_required"})
        async with _result_stream(client, task["taskId"]) as messages:
            question = await _next(messages, task["taskId"], "elicitation/create")
            assert question["params"]["message"] == "Via result?"
            await _answer(client, question, "yes")
            response = await _response(messages)
    assert response["result"]["content"][0]["text"] == "confirmed"


async def test_get_streams_opened_later_get_the_question_until_it_is_answered(
    fast_bridge: str, fast_bridge_b: str
) -> None:
    async with connect(fast_bridge, capabilities=ELICITATION) as client:
        task_id = (await client.create_task("confirm", {"question": "Late?"}))["taskId"]
        await client.wait_status(task_id, {"input_required"})
        # Opened after the question was asked, without Last-Event-ID.
        async with client.stream() as events:
            first = await _next(_messages(events), task_id, "elicitation/create")
        assert first["params"]["message"] == "Late?"
        # Not answered: a reconnect (here to another bridge process) gets it again.
        other = RawClient(fast_bridge_b, client.http)
        other.session_id, other.version = client.session_id, client.version
        async with other.stream() as events:
            again = await _next(_messages(events), task_id, "elicitation/create")
        assert again["id"] == first["id"]
        await _answer(client, again, "yes")
        await _answer(client, first, "no")  # the first answer counted
        result = await client.call("tasks/result", {"taskId": task_id})
        assert result["content"][0]["text"] == "confirmed"
        # Answered: a new stream does not carry it; the next question it carries is a new one.
        async with client.stream() as events:
            messages = _messages(events)
            task = await client.create_task("confirm", {"question": "Next?"})
            with anyio.fail_after(20):
                async for message in messages:
                    if message.get("method") == "elicitation/create":
                        break
            assert message["params"]["message"] == "Next?"
            await client.call("tasks/cancel", {"taskId": task["taskId"]})


async def test_a_resumed_get_stream_gets_the_question_again(fast_bridge: str) -> None:
    async with connect(fast_bridge, capabilities=ELICITATION) as client:
        async with client.stream() as events:
            task_id = (await client.create_task("confirm", {"question": "Resume?"}))["taskId"]
            while True:
                event_id, message = await anext(events)
                params = message.get("params", {})
                if params.get("taskId") == task_id and params.get("status") == "input_required":
                    break
        # Resumed after the event that announced it: the question is still pending.
        async with client.stream(last_event_id=event_id) as events:
            question = await _next(_messages(events), task_id, "elicitation/create")
        assert question["params"]["message"] == "Resume?"
        await _answer(client, question, "yes")
        result = await client.call("tasks/result", {"taskId": task_id})
    assert result["content"][0]["text"] == "confirmed"


# -- withdrawn questions (item 7) ---------------------------------------------------------
async def test_a_cancel_withdraws_the_question(fast_bridge: str) -> None:
    async with connect(fast_bridge, capabilities=ELICITATION) as client, client.stream() as events:
        messages = _messages(events)
        task_id = (await client.create_task("confirm", {"question": "Cancel me?"}))["taskId"]
        question = await _next(messages, task_id, "elicitation/create")
        await client.call("tasks/cancel", {"taskId": task_id})
        withdrawn = await _next(messages, task_id, "notifications/cancelled")
        assert withdrawn["params"]["requestId"] == question["id"]
        assert withdrawn["params"]["reason"].startswith("the question was withdrawn")
        status = await _next(messages, task_id, "notifications/tasks/status")
        assert status["params"]["status"] == "cancelled"


async def test_a_timeout_withdraws_the_question_on_the_result_stream(fast_bridge: str) -> None:
    async with connect(fast_bridge, capabilities=ELICITATION) as client:
        task = await client.create_task("confirm", {"question": "Too slow?", "timeout": 3})
        async with _result_stream(client, task["taskId"]) as messages:
            question = await _next(messages, task["taskId"], "elicitation/create")
            withdrawn = await _next(messages, task["taskId"], "notifications/cancelled")
            assert withdrawn["params"]["requestId"] == question["id"]
            assert "no answer within 3 s" in withdrawn["params"]["reason"]
            response = await _response(messages)
    assert response["result"]["isError"] is True
    assert "InputTimeout" in response["result"]["content"][0]["text"]


async def test_a_timed_out_question_leaves_input_requests_modern(fast_bridge: str) -> None:
    async with httpx.AsyncClient(timeout=30, transport=AsyncTransport()) as http:
        client = ModernClient(fast_bridge, http, elicitation=True)
        arguments = {"first": "Stay?", "second": "Go?", "second_timeout": 2}
        created = await client.request("tools/call", {"name": "ask_two", "arguments": arguments})
        task_id = created["taskId"]
        with anyio.fail_after(20):
            while (
                len(
                    (task := await client.request("tasks/get", {"taskId": task_id})).get(
                        "inputRequests", {}
                    )
                )
                < 2
            ):
                await anyio.sleep(0.05)
        keys = {r["params"]["message"]: k for k, r in task["inputRequests"].items()}
        with anyio.fail_after(20):
            while (task := await client.request("tasks/get", {"taskId": task_id})).get(
                "statusMessage"
            ) != "1 of 2 answered":
                await anyio.sleep(0.05)
        # "Go?" timed out and was withdrawn; "Stay?" is still wanted.
        assert task["status"] == "input_required"
        assert set(task["inputRequests"]) == {keys["Stay?"]}
        late = {"action": "accept", "content": {"text": "late"}}
        answer = {"action": "accept", "content": {"text": "here"}}
        responses = {keys["Go?"]: late, keys["Stay?"]: answer}
        await client.request("tasks/update", {"taskId": task_id, "inputResponses": responses})
        final = await client.wait_status(task_id, {"completed", "failed", "cancelled"})
    assert final["result"]["content"][0]["text"] == "Stay?=here; Go?=no answer"


# -- a plain call's questions (2025-11-25): on the call's own response stream ----------------


def _plain_call(
    client: RawClient, tool: str, arguments: dict[str, Any]
) -> contextlib.AbstractAsyncContextManager[Messages]:
    """A plain ``tools/call`` answered as SSE; the response is the message with id "call"."""
    return _streamed(client, "call", "tools/call", {"name": tool, "arguments": arguments})


async def test_a_plain_call_asks_on_its_response_stream(fast_bridge: str) -> None:
    async with connect(fast_bridge, capabilities=ELICITATION) as client:
        async with _plain_call(client, "ask_once", {"question": "Name?"}) as messages:
            question = await anext(messages)
            assert question["method"] == "elicitation/create"
            assert question["params"]["message"] == "Name?"
            # A plain call has no task the client knows: its question names none.
            assert "_meta" not in question["params"]
            await _answer(client, question, "Ada")
            response = await anext(messages)
    assert response["result"]["content"][0]["text"] == "accept: Ada"


async def test_a_plain_calls_question_is_withdrawn_before_its_response(fast_bridge: str) -> None:
    async with connect(fast_bridge, capabilities=ELICITATION) as client:
        async with _plain_call(client, "ask_once", {"question": "Q?", "timeout": 1}) as messages:
            question = await anext(messages)
            withdrawn = await anext(messages)
            response = await anext(messages)
    assert withdrawn["method"] == "notifications/cancelled"
    assert withdrawn["params"]["requestId"] == question["id"]
    assert response["result"]["content"][0]["text"] == "no answer"


async def test_a_plain_call_asks_nobody_without_elicitation(fast_bridge: str) -> None:
    async with connect(fast_bridge) as client:
        result = await client.call(
            "tools/call", {"name": "ask_once", "arguments": {"question": "?"}}
        )
    assert result["content"][0]["text"] == "nobody to ask"


async def test_the_sdk_client_answers_a_plain_call(fast_bridge: str) -> None:
    asked: list[str] = []

    async def elicit(
        context: RequestContext[ClientSession, Any], params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"text": "from the SDK"})

    async with (
        streamable_http_client(fast_bridge, http_client=sdk_http()) as (read, write, _),
        ClientSession(read, write, elicitation_callback=elicit) as session,
    ):
        await session.initialize()
        result = await session.call_tool("ask_once", {"question": "Who?"})
    assert asked == ["Who?"]
    assert isinstance(result.content[0], types.TextContent)
    assert result.content[0].text == "accept: from the SDK"
