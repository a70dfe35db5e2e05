"""The 2026-07-28 era on the same endpoint: stateless requests, server/discover, the tasks
extension and subscriptions/listen, with every message checked against the 2026-07-28 and
extension schemas. On the bridge's app in process (the fast tier); a cancel that must stop a
tool which never checks for one runs on a real worker."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import redis

from tests.client import EXT, VERSION, ModernClient, RpcError, connect
from tests.inproc import AppServer
from tests.services import find_tasks, keys_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def client(fast_bridge: str, http: httpx.AsyncClient) -> ModernClient:
    return ModernClient(fast_bridge, http)


@pytest.fixture
async def real_client(bridge: str) -> AsyncIterator[ModernClient]:
    """A client of the bridge process (real workers behind it)."""
    async with httpx.AsyncClient(timeout=30) as http:
        yield ModernClient(bridge, http)


async def test_discover(client: ModernClient) -> None:
    result = await client.request("server/discover")
    assert VERSION in result["supportedVersions"]
    assert "2025-11-25" in result["supportedVersions"]
    assert result["capabilities"]["extensions"] == {EXT: {}}
    assert "tasks" not in result["capabilities"], "no legacy tasks capability in this era"
    assert result["cacheScope"] == "public" and result["ttlMs"] > 0


async def test_tools_list_is_cacheable_and_has_no_task_support_field(client: ModernClient) -> None:
    result = await client.request("tools/list")
    names = {t["name"] for t in result["tools"]}
    assert {"echo", "sleep", "spin", "fail"} <= names
    assert all("execution" not in t for t in result["tools"])
    assert result["cacheScope"] == "public" and result["ttlMs"] > 0


async def test_required_tool_becomes_a_durable_task(client: ModernClient) -> None:
    created = await client.request(
        "tools/call", {"name": "sleep", "arguments": {"seconds": 0.2, "steps": 2}}
    )
    assert created["resultType"] == "task"
    assert created["status"] == "working"
    assert created["ttlMs"] > 0 and created["pollIntervalMs"] > 0
    # Durable before the answer: the very next tasks/get finds it.
    first = await client.request("tasks/get", {"taskId": created["taskId"]})
    assert first["resultType"] == "complete"
    final = await client.wait_status(created["taskId"], {"completed", "failed", "cancelled"})
    assert final["status"] == "completed"
    assert final["result"]["content"][0]["text"].startswith("slept")


async def test_optional_tool_runs_plainly_for_a_client_without_the_extension(
    fast_bridge: str, http: httpx.AsyncClient
) -> None:
    plain = ModernClient(fast_bridge, http, tasks=False)
    result = await plain.request("tools/call", {"name": "echo", "arguments": {"text": "now"}})
    assert result["resultType"] == "complete"
    assert result["content"] == [{"type": "text", "text": "now"}]
    with_ext = ModernClient(fast_bridge, http)
    created = await with_ext.request("tools/call", {"name": "echo", "arguments": {"text": "later"}})
    assert created["resultType"] == "task"


async def test_required_tool_without_the_extension_is_missing_capability(
    fast_bridge: str, http: httpx.AsyncClient
) -> None:
    plain = ModernClient(fast_bridge, http, tasks=False)
    with pytest.raises(RpcError) as err:
        await plain.request("tools/call", {"name": "sleep", "arguments": {"seconds": 0}})
    assert (err.value.status, err.value.code) == (400, -32021)
    assert err.value.data == {"requiredCapabilities": {"extensions": {EXT: {}}}}
    with pytest.raises(RpcError) as err:
        await plain.request("tasks/get", {"taskId": "whatever"})
    assert (err.value.status, err.value.code) == (400, -32021)


async def test_a_tool_error_is_completed_in_this_era(client: ModernClient) -> None:
    created = await client.request("tools/call", {"name": "fail", "arguments": {"message": "nope"}})
    final = await client.wait_status(created["taskId"], {"completed", "failed", "cancelled"})
    assert final["status"] == "completed"
    assert final["result"]["isError"] is True
    assert "nope" in final["result"]["content"][0]["text"]


async def test_cancel_acknowledges_and_stops_the_work(real_client: ModernClient) -> None:
    client = real_client
    created = await client.request("tools/call", {"name": "spin", "arguments": {"seconds": 30}})
    ack = await client.request("tasks/cancel", {"taskId": created["taskId"]})
    assert set(ack) == {"resultType", "_meta"} and ack["resultType"] == "complete"
    final = await client.wait_status(created["taskId"], {"completed", "failed", "cancelled"}, 5)
    assert final["status"] == "cancelled"
    # Cooperative, eventually consistent: cancelling again, or a finished task, is no error.
    await client.request("tasks/cancel", {"taskId": created["taskId"]})
    with pytest.raises(RpcError) as err:
        await client.request("tasks/cancel", {"taskId": "no-such-task"})
    assert err.value.code == -32602


async def test_update_acknowledges_and_checks_its_params(client: ModernClient) -> None:
    created = await client.request("tools/call", {"name": "echo", "arguments": {"text": "x"}})
    ack = await client.request(
        "tasks/update",
        {"taskId": created["taskId"], "inputResponses": {"unknown": {"action": "decline"}}},
    )
    assert ack["resultType"] == "complete"
    with pytest.raises(RpcError) as err:
        await client.request("tasks/update", {"taskId": "nope", "inputResponses": {}})
    assert err.value.code == -32602
    with pytest.raises(RpcError) as err:
        await client.request("tasks/update", {"taskId": created["taskId"]})
    assert err.value.code == -32602


@pytest.mark.parametrize(
    "method", ["tasks/result", "tasks/list", "ping", "initialize", "nope/nope"]
)
async def test_methods_outside_this_era_are_404(client: ModernClient, method: str) -> None:
    with pytest.raises(RpcError) as err:
        await client.request(method, {"taskId": "x"} if method == "tasks/result" else {})
    assert (err.value.status, err.value.code) == (404, -32601)


async def _error(
    client: ModernClient, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, int]:
    status, message = await client.send(body, headers)
    assert "error" in message, message
    return status, message["error"]["code"]


async def test_headers_must_match_the_body(client: ModernClient) -> None:
    body, headers = client.build("tools/call", {"name": "echo", "arguments": {"text": "h"}})
    cases: list[dict[str, str | None]] = [
        {"MCP-Protocol-Version": None},
        {"MCP-Protocol-Version": "2025-11-25"},
        {"Mcp-Method": None},
        {"Mcp-Method": "tools/list"},
        {"Mcp-Name": None},
        {"Mcp-Name": "sleep"},
        {"Mcp-Name": "=?base64?!!!?="},
    ]
    for change in cases:
        changed = {k: v for k, v in {**headers, **change}.items() if v is not None}
        assert await _error(client, body, changed) == (400, -32020), change
    # A base64-encoded name is decoded before comparing.
    encoded = {**headers, "Mcp-Name": "=?base64?ZWNobw==?="}
    status, message = await client.send(body, encoded)
    assert status == 200 and "result" in message

    get_body, get_headers = client.build("tasks/get", {"taskId": "abc"})
    assert await _error(client, get_body, {**get_headers, "Mcp-Name": "abd"}) == (400, -32020)
    # A missing Mcp-Name on tasks/* is tolerated (fastmcp-tasks 4.1.4 sends none); the
    # request is then judged on its body: here an unknown task.
    without = {k: v for k, v in get_headers.items() if k != "Mcp-Name"}
    assert await _error(client, get_body, without) == (200, -32602)


async def test_unsupported_version_and_missing_meta(client: ModernClient) -> None:
    body, headers = client.build("tools/list")
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "1999-01-01"
    status, message = await client.send(body, {**headers, "MCP-Protocol-Version": "1999-01-01"})
    assert (status, message["error"]["code"]) == (400, -32022)
    assert message["error"]["data"]["requested"] == "1999-01-01"
    assert VERSION in message["error"]["data"]["supported"]

    body, headers = client.build("tools/list")
    del body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"]
    assert await _error(client, body, headers) == (400, -32602)

    body, headers = client.build("tools/list")
    del body["params"]
    assert await _error(client, body, headers) == (400, -32602)


async def test_notifications_are_accepted_and_responses_refused(
    fast_bridge: str, http: httpx.AsyncClient
) -> None:
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": VERSION,
    }
    notification = {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": 1},
    }
    response = await http.post(fast_bridge, content=json.dumps(notification), headers=headers)
    assert response.status_code == 202 and response.content == b""
    reply = {"jsonrpc": "2.0", "id": 1, "result": {}}
    response = await http.post(fast_bridge, content=json.dumps(reply), headers=headers)
    assert response.status_code == 400


async def _statuses_until_terminal(
    messages: AsyncIterator[dict[str, Any]], task_id: str, subscription: int
) -> list[dict[str, Any]]:
    seen = []
    with anyio.fail_after(20):
        async for message in messages:
            assert (
                message["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == subscription
            )
            if message["method"] != "notifications/tasks":
                continue
            assert message["params"]["taskId"] == task_id
            seen.append(message["params"])
            if message["params"]["status"] in ("completed", "failed", "cancelled"):
                return seen
    raise AssertionError("listen stream ended")


async def test_listen_streams_task_notifications(client: ModernClient) -> None:
    created = await client.request(
        "tools/call", {"name": "sleep", "arguments": {"seconds": 0.5, "steps": 5}}
    )
    async with client.listen([created["taskId"], "not-a-task"]) as messages:
        ack = await anext(messages)
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["notifications"] == {"taskIds": [created["taskId"]]}
        subscription = ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"]
        seen = await _statuses_until_terminal(messages, created["taskId"], subscription)
    assert seen[-1]["status"] == "completed"
    assert seen[-1]["result"]["content"][0]["text"].startswith("slept")
    assert all("progress" not in m for m in seen)


async def test_listen_on_another_bridge_process(
    client: ModernClient, inproc_b: AppServer, http: httpx.AsyncClient
) -> None:
    # Another app instance (its own event hub and Redis connections), in this process.
    bridge_b = inproc_b.url
    created = await client.request(
        "tools/call", {"name": "sleep", "arguments": {"seconds": 0.3, "steps": 3}}
    )
    other = ModernClient(bridge_b, http)
    async with other.listen([created["taskId"]]) as messages:
        ack = await anext(messages)
        subscription = ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"]
        seen = await _statuses_until_terminal(messages, created["taskId"], subscription)
    assert seen[-1]["status"] == "completed"


async def test_listen_for_tasks_needs_the_extension(
    fast_bridge: str, http: httpx.AsyncClient
) -> None:
    plain = ModernClient(fast_bridge, http, tasks=False)
    body, headers = plain.build("subscriptions/listen", {"notifications": {"taskIds": ["x"]}})
    status, message = await plain.send(body, headers)
    assert (status, message["error"]["code"]) == (400, -32021)


async def test_one_registry_two_views(fast_bridge: str, http: httpx.AsyncClient) -> None:
    modern = ModernClient(fast_bridge, http)
    async with connect(fast_bridge) as legacy:
        # A legacy task, fetched and cancelled statelessly (the extension says dual servers
        # SHOULD allow it) by a request that names its session: the task is the session's.
        # ``sleep``, not ``spin``: inline, a cancel stops only a tool that checks for it.
        legacy_task = await legacy.create_task("sleep", {"seconds": 30, "steps": 300}, ttl=60_000)
        named = {"Mcp-Session-Id": legacy.session_id or ""}
        body, headers = modern.build("tasks/get", {"taskId": legacy_task["taskId"]})
        _, fetched = await modern.send(body, {**headers, **named})
        assert fetched["result"]["ttlMs"] == 60_000 == legacy_task["ttl"]
        body, headers = modern.build("tasks/cancel", {"taskId": legacy_task["taskId"]})
        _, cancelled = await modern.send(body, {**headers, **named})
        assert "result" in cancelled
        assert (await legacy.wait_status(legacy_task["taskId"], {"cancelled"}, 5))[
            "status"
        ] == "cancelled"

        # A stateless task whose tool raised: completed (with isError) in this era, failed in
        # the legacy view of the same record.
        created = await modern.request(
            "tools/call", {"name": "fail", "arguments": {"message": "both"}}
        )
        modern_view = await modern.wait_status(created["taskId"], {"completed"})
        assert modern_view["result"]["isError"] is True
        legacy_view = await legacy.wait_status(created["taskId"], {"failed"})
        assert "both" in legacy_view["statusMessage"]
        result = await legacy.call("tasks/result", {"taskId": created["taskId"]})
        assert result["isError"] is True
        # Stateless tasks are not listed in a session.
        listed = {t["taskId"] for t in (await legacy.call("tasks/list"))["tasks"]}
        assert created["taskId"] not in listed and legacy_task["taskId"] in listed


@pytest.mark.timeout(30)
async def test_closing_the_response_stream_cancels_a_plain_call(
    fast_bridge: str, http: httpx.AsyncClient, redis_client: redis.Redis, fast_env: dict[str, str]
) -> None:
    plain = ModernClient(fast_bridge, http, tasks=False)
    body, headers = plain.build("tools/call", {"name": "nap", "arguments": {"seconds": 30}})
    keys = keys_of(fast_env)

    def running() -> str | None:
        def napping(record: dict[str, str]) -> bool:
            return record.get("tool") == "nap" and record.get("message", "").startswith(
                "running on"
            )

        found = find_tasks(redis_client, keys, napping, limit=1)
        return keys.task(found[0]) if found else None

    key = None
    async with http.stream(
        "POST", fast_bridge, content=json.dumps(body), headers=headers
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        with anyio.fail_after(10):
            while (key := running()) is None:
                await anyio.sleep(0.05)
    # The stream is closed: the call must be cancelled.
    with anyio.fail_after(10):
        while redis_client.hget(key, "status") != "cancelled":
            await anyio.sleep(0.05)


# -- Mcp-Param-* headers (SEP-2243) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "params", "expected"),
    [
        ({"region": "eu-west"}, {"Region": "eu-west"}, (200, None)),
        ({"region": "eu-west"}, {"region": "eu-west"}, (200, None)),  # any case of the name
        ({"region": "zürich"}, {"Region": "=?base64?esO8cmljaA==?="}, (200, None)),
        # Without the exact wrapper a value is literal.
        ({"region": "ZXU="}, {"Region": "ZXU="}, (200, None)),
        ({"region": "eu", "shard": 42}, {"Region": "eu", "Shard": "42.0"}, (200, None)),
        ({"region": "eu"}, {}, (400, -32020)),
        ({"region": "eu"}, {"Region": "us"}, (400, -32020)),
        ({"region": "eu", "shard": 42}, {"Region": "eu"}, (400, -32020)),
        ({"region": "eu", "shard": 42}, {"Region": "eu", "Shard": "43"}, (400, -32020)),
        ({"region": "Hello"}, {"Region": "=?base64?SGVsbG8?="}, (400, -32020)),
        ({"region": "Hello"}, {"Region": "=?base64?SGVs!!!bG8=?="}, (400, -32020)),
    ],
)
async def test_mirrored_arguments_must_match_their_headers(
    fast_bridge: str,
    http: httpx.AsyncClient,
    arguments: dict[str, Any],
    params: dict[str, str],
    expected: tuple[int, int | None],
) -> None:
    plain = ModernClient(fast_bridge, http, tasks=False)
    body, headers = plain.build("tools/call", {"name": "regional", "arguments": arguments})
    headers.update({f"Mcp-Param-{k}": v for k, v in params.items()})
    status, message = await plain.send(body, headers)
    code = message["error"]["code"] if "error" in message else None
    assert (status, code) == expected, message
    if status == 200:
        assert message["result"]["content"][0]["text"].startswith(arguments["region"])
