"""A 2026-07-28 plain tool call that asks the user: multi round-trip requests (SEP-2322,
``bridge.rounds``), against two in-process apps with tools run inline (the fast tier), over
raw HTTP."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import redis
import redis.asyncio

from mcp_celery_bridge.bridge.request_state import RequestStates
from mcp_celery_bridge.bridge.shared.errors import InvalidParams
from mcp_celery_bridge.bridge.shared.settings import Settings
from tests.client import ModernClient, RpcError, connect
from tests.services import keys_of

pytestmark = pytest.mark.anyio

ELICIT = "elicitation/create"


def _client(url: str, http: httpx.AsyncClient) -> ModernClient:
    # A client of the tasks extension would get a task for these optional tools: without
    # it, each call is plain and asks in rounds.
    return ModernClient(url, http, tasks=False, elicitation=True)


def _accept(text: str) -> dict[str, Any]:
    return {"action": "accept", "content": {"text": text}}


def _questions(result: dict[str, Any]) -> dict[str, str]:
    """An InputRequiredResult's questions, as key -> message."""
    assert result["resultType"] == "input_required", result
    assert isinstance(result["requestState"], str) and result["requestState"]
    asked = result["inputRequests"]
    assert all(request["method"] == ELICIT for request in asked.values())
    return {key: request["params"]["message"] for key, request in asked.items()}


def _text(result: dict[str, Any]) -> str:
    assert result["resultType"] == "complete", result
    text: str = result["content"][0]["text"]
    return text


async def _call(client: ModernClient, arguments: dict[str, Any], **more: Any) -> dict[str, Any]:
    return await client.request("tools/call", {"name": "ask_many", "arguments": arguments, **more})


async def test_one_round_across_two_bridges(
    fast_bridge: str, fast_bridge_b: str, http: httpx.AsyncClient
) -> None:
    first = await _client(fast_bridge, http).request(
        "tools/call", {"name": "ask_once", "arguments": {"question": "Name?"}}
    )
    [(key, message)] = _questions(first).items()
    assert message == "Name?"
    # The first response has ended, and the call goes on: the other bridge continues it.
    final = await _client(fast_bridge_b, http).request(
        "tools/call",
        {
            "name": "ask_once",
            "arguments": {"question": "Name?"},
            "inputResponses": {key: _accept("Ada"), "unasked": _accept("ignored")},
            "requestState": first["requestState"],
        },
    )
    assert _text(final) == "accept: Ada"


async def test_two_rounds(fast_bridge: str, http: httpx.AsyncClient) -> None:
    client = _client(fast_bridge, http)
    arguments = {"questions": ["First?", "Second?"]}
    first = await _call(client, arguments)
    assert _questions(first) == {"q0": "First?"}
    second = await _call(
        client,
        arguments,
        inputResponses={"q0": _accept("one")},
        requestState=first["requestState"],
    )
    assert _questions(second) == {"q1": "Second?"}
    assert second["requestState"] != first["requestState"]
    final = await _call(
        client,
        arguments,
        inputResponses={"q1": _accept("two")},
        requestState=second["requestState"],
    )
    assert _text(final) == "one; two"


async def test_several_questions_in_one_round(fast_bridge: str, http: httpx.AsyncClient) -> None:
    client = _client(fast_bridge, http)
    arguments = {"questions": ["A?", "B?", "C?"], "together": True}
    first = await _call(client, arguments)
    assert _questions(first) == {"q0": "A?", "q1": "B?", "q2": "C?"}
    # Answering only some: the others are asked again, not refused (the spec's SHOULD).
    again = await _call(
        client,
        arguments,
        inputResponses={"q1": _accept("b")},
        requestState=first["requestState"],
    )
    assert _questions(again) == {"q0": "A?", "q2": "C?"}
    final = await _call(
        client,
        arguments,
        inputResponses={"q0": _accept("a"), "q2": _accept("c")},
        requestState=again["requestState"],
    )
    assert _text(final) == "a; b; c"


async def test_a_first_call_may_carry_its_answers(
    fast_bridge: str, http: httpx.AsyncClient
) -> None:
    result = await _call(
        _client(fast_bridge, http), {"questions": ["Known?"]}, inputResponses={"q0": _accept("yes")}
    )
    assert _text(result) == "yes"


async def test_bad_input_responses_are_refused_before_anything_runs(
    fast_bridge: str, http: httpx.AsyncClient
) -> None:
    client = _client(fast_bridge, http)
    for responses in (None, [], {"q0": 5}, {"q0": {"action": "maybe"}}):
        with pytest.raises(RpcError) as refused:
            await _call(client, {"questions": ["?"]}, inputResponses=responses)
        assert refused.value.code == -32602


def _tampered(state: str) -> list[str]:
    body, _, mac = state.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["o"] = "someone else"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return [state + "-TAMPERED", f"{forged}.{mac}", state[:-2], "", "x" * 5000]


async def test_a_tampered_or_foreign_request_state_is_refused(
    token_bridge: str, http: httpx.AsyncClient
) -> None:
    ann = ModernClient(token_bridge, http, tasks=False, elicitation=True)
    bob = ModernClient(token_bridge, http, tasks=False, elicitation=True)
    arguments = {"questions": ["Secret?"]}
    ann_headers = {"Authorization": "Bearer tok-ann"}
    bob_headers = {"Authorization": "Bearer tok-bob"}

    async def call(who: ModernClient, headers: dict[str, str], **more: Any) -> dict[str, Any]:
        body, mirrored = who.build("tools/call", {"name": "ask_many", **more})
        status, message = await who.send(body, {**mirrored, **headers})
        if "error" in message:
            raise RpcError(message["error"], status)
        result: dict[str, Any] = message["result"]
        return result

    first = await call(ann, ann_headers, arguments=arguments)
    state = first["requestState"]
    answer = {"q0": _accept("mine")}
    refusals = [
        # Another caller presenting Ann's state, untouched.
        call(bob, bob_headers, arguments=arguments, inputResponses=answer, requestState=state),
        # Ann's state for another call (other arguments).
        call(
            ann,
            ann_headers,
            arguments={"questions": ["Other?"]},
            inputResponses=answer,
            requestState=state,
        ),
    ] + [
        call(ann, ann_headers, arguments=arguments, inputResponses=answer, requestState=bad)
        for bad in _tampered(state)
    ]
    for refusal in refusals:
        with pytest.raises(RpcError) as refused:
            await refusal
        assert refused.value.code == -32602, refused.value
    # Nothing was delivered or cancelled: the rightful holder still continues the call.
    final = await call(
        ann, ann_headers, arguments=arguments, inputResponses=answer, requestState=state
    )
    assert _text(final) == "mine"


async def test_a_follow_up_after_the_question_timed_out(
    fast_bridge: str, http: httpx.AsyncClient, fast_env: dict[str, str], redis_client: redis.Redis
) -> None:
    client = _client(fast_bridge, http)
    arguments = {"questions": ["Quick?"], "timeout": 1}
    first = await _call(client, arguments)
    assert _questions(first) == {"q0": "Quick?"}
    # Abandoned, the call does not hold its worker: the ask's timeout ends it.
    body = first["requestState"].partition(".")[0]
    task_id = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["t"]
    key = keys_of(fast_env).task(task_id)
    with anyio.fail_after(20):
        while redis_client.hget(key, "status") != "completed":
            await anyio.sleep(0.05)
    # A late follow-up gets the call's outcome; its answer goes nowhere.
    late = await _call(
        client,
        arguments,
        inputResponses={"q0": _accept("late")},
        requestState=first["requestState"],
    )
    assert _text(late) == "no answer"


async def test_without_elicitation_nobody_is_asked(
    fast_bridge: str, http: httpx.AsyncClient
) -> None:
    client = ModernClient(fast_bridge, http, tasks=False)
    result = await client.request(
        "tools/call", {"name": "ask_once", "arguments": {"question": "?"}}
    )
    assert _text(result) == "nobody to ask"


async def test_a_2025_11_25_plain_call_still_asks_on_its_stream(fast_bridge: str) -> None:
    """The legacy era keeps its elicitation/create on the call's response stream, and the
    2026-07-28 parameters mean nothing there."""
    async with connect(fast_bridge, capabilities={"elicitation": {"form": {}}}) as client:
        body = {
            "jsonrpc": "2.0",
            "id": "call",
            "method": "tools/call",
            "params": {
                "name": "ask_once",
                "arguments": {"question": "Legacy?"},
                "inputResponses": {"q0": _accept("ignored")},
                "requestState": "not-a-state",
            },
        }
        async with client.http.stream(
            "POST", client.url, content=json.dumps(body), headers=client.headers()
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            with anyio.fail_after(20):
                question = await _next_message(lines)
                assert question["method"] == ELICIT
                assert question["params"]["message"] == "Legacy?"
                answer = {"action": "accept", "content": {"text": "old"}}
                posted = await client.post(
                    {"jsonrpc": "2.0", "id": question["id"], "result": answer}
                )
                assert posted.status_code == 202
                final = await _next_message(lines)
    assert "resultType" not in final["result"]
    assert final["result"]["content"][0]["text"] == "accept: old"


async def _next_message(lines: AsyncIterator[str]) -> dict[str, Any]:
    async for line in lines:
        if line.startswith("data:") and line[5:].strip():
            message: dict[str, Any] = json.loads(line[5:])
            return message
    raise AssertionError("the stream ended")


@pytest.mark.fast
async def test_request_states_are_shared_by_replicas_and_expire(fast_env: dict[str, str]) -> None:
    """Two bridges on one Redis (no secret configured) accept each other's states; a bridge
    with another secret does not; a state is refused once expired."""
    settings = Settings(
        redis_url=fast_env["MCP_BRIDGE_REDIS_URL"],
        key_prefix=fast_env["MCP_BRIDGE_KEY_PREFIX"] + "-states",
        request_state_ttl_s=1,
    )
    client = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        one, two = RequestStates(settings, client), RequestStates(settings, client)
        other = RequestStates(settings.model_copy(update={"request_state_secret": "x"}), client)
        state = await one.seal("ann", "task-1", "tool", {"a": 1})
        assert await two.open(state, "ann", "tool", {"a": 1}) == "task-1"
        with pytest.raises(InvalidParams, match="verification"):
            await other.open(state, "ann", "tool", {"a": 1})
        with anyio.fail_after(10):
            while True:
                try:
                    await two.open(state, "ann", "tool", {"a": 1})
                except InvalidParams as exc:
                    assert "expired" in str(exc)
                    break
                await anyio.sleep(0.1)
    finally:
        await client.aclose()
