"""What a caller may reach or learn that is not its own (issue 15, items 7 to 11): another
session's tasks by id, sub-keys and timing behind a task id, control characters into logs
and the operator's tables, unbounded streams and listen ids, Redis's and the broker's own
error texts, probes read through any Host, and sessions kept alive by refused requests. On
in-process apps (the fast tier)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis

from tests.client import ACCEPT, ModernClient, RawClient, RpcError, connect
from tests.inline import InlineWorker
from tests.inproc import AppServer, AsyncTransport, app_server, settings_of
from tests.services import free_port, keys_of
from tests.test_admin import cli

pytestmark = pytest.mark.anyio

ELICITATION = {"elicitation": {"form": {}}}
#: A clientInfo and a method that would clear an operator's screen, plant a link, set the
#: terminal's title and break a log line, if printed raw.
HOSTILE = "\x1b[2J\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\\x1b]0;owned\x07"
RAW_CONTROLS = ("\x1b", "\x07", "\x0b", "\x85", "\x9b", "\u2028", "\u202e")


async def _asking_task(client: RawClient) -> str:
    """The id of a task of ``client`` that waits for an answer."""
    task = await client.create_task("confirm", {"question": "Ship it?", "timeout": 15})
    await client.wait_status(task["taskId"], {"input_required"})
    return str(task["taskId"])


def _modern_with_session(
    modern: ModernClient, session_id: str, method: str, params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    body, headers = modern.build(method, params)
    return body, {**headers, "Mcp-Session-Id": session_id}


# -- item 7: a session's task is not reachable statelessly by its id alone -------------------
async def test_a_session_task_is_not_reachable_by_a_stateless_caller(
    fast_bridge: str, http: httpx.AsyncClient, redis_client: redis.Redis, fast_env: dict[str, str]
) -> None:
    stranger = ModernClient(fast_bridge, http)
    async with connect(fast_bridge, capabilities=ELICITATION) as owner:
        task_id = await _asking_task(owner)
        key = next(iter(redis_client.hkeys(keys_of(fast_env).inputs(task_id))))
        # Every way in, from a stateless request without the session: "not found".
        for method, params in (
            ("tasks/get", {"taskId": task_id}),
            ("tasks/update", {"taskId": task_id, "inputResponses": {key: {"action": "decline"}}}),
            ("tasks/cancel", {"taskId": task_id}),
        ):
            _, message = await stranger.send(*stranger.build(method, params))
            assert message.get("error", {}).get("code") == -32602, (method, message)
        async with stranger.listen([task_id]) as messages:
            ack = await anext(messages)
            assert ack["params"]["notifications"] == {}, "listen acknowledged another's task"
        # Nothing was answered or cancelled.
        assert (await owner.get_task(task_id))["status"] == "input_required"

        # A stateless request naming the session (a client that moved to the new era but
        # still holds its session) does reach it, as the tasks extension asks of dual servers.
        body, headers = _modern_with_session(
            stranger, owner.session_id or "", "tasks/get", {"taskId": task_id}
        )
        _, message = await stranger.send(body, headers)
        assert message["result"]["status"] == "input_required"
        body, headers = _modern_with_session(
            stranger, owner.session_id or "", "tasks/cancel", {"taskId": task_id}
        )
        _, message = await stranger.send(body, headers)
        assert "result" in message
        assert (await owner.wait_status(task_id, {"cancelled"}, 10))["status"] == "cancelled"


# -- item 8: the id's form is checked, and the owner before the record -----------------------
async def test_a_sub_key_shaped_id_is_not_found(fast_bridge: str, http: httpx.AsyncClient) -> None:
    modern = ModernClient(fast_bridge, http)
    async with (
        connect(fast_bridge, capabilities=ELICITATION) as owner,
        connect(fast_bridge) as other,
    ):
        asking = await _asking_task(owner)
        quiet = await owner.create_task("echo", {"text": "hi"})
        await owner.wait_status(quiet["taskId"], {"completed"})
        # `<id>:inputs` names the hash of pending questions: it answered -32603 (a traceback
        # in the log) when one was pending, -32602 when none was: an oracle for questions.
        for task_id in (asking, quiet["taskId"]):
            for suffix in (":inputs", ":answer:x", ""):
                with pytest.raises(RpcError) as caught:
                    await other.get_task(task_id + suffix)
                assert caught.value.code == -32602, (suffix, caught.value.message)
                _, message = await modern.send(
                    *modern.build("tasks/get", {"taskId": task_id + suffix})
                )
                assert message["error"]["code"] == -32602, (suffix, message)
        await owner.call("tasks/cancel", {"taskId": asking})


async def test_another_owners_task_answers_as_fast_as_an_unknown_one(
    fast_bridge: str, http: httpx.AsyncClient
) -> None:
    async with connect(fast_bridge) as owner, connect(fast_bridge) as other:
        # A large record: reading all of it before the owner check took measurably longer.
        big = await owner.create_task("blob", {"size": 3_000_000})
        await owner.wait_status(big["taskId"], {"completed"}, 30)
        unknown = "A" * 32

        async def timed(task_id: str) -> float:
            started = time.perf_counter()
            with pytest.raises(RpcError) as caught:
                await other.get_task(task_id)
            assert caught.value.code == -32602
            return time.perf_counter() - started

        theirs, nobodys = [], []
        for _ in range(25):
            theirs.append(await timed(big["taskId"]))
            nobodys.append(await timed(unknown))
        t, n = statistics.median(theirs) * 1000, statistics.median(nobodys) * 1000
        print(f"median tasks/get: another's 3 MB task {t:.1f} ms, an unknown id {n:.1f} ms")
        # Before: the whole 3 MB record was read and parsed first (tens of milliseconds).
        assert t < n * 1.5 + 3, (t, n)


# -- item 9: control characters never reach a terminal raw -----------------------------------
@pytest.fixture(scope="module")
def text_bridge(fast_env: dict[str, str], log_dir: Path, inline: InlineWorker) -> Iterator[str]:
    settings = settings_of({**fast_env, "MCP_BRIDGE_LOG_FORMAT": "text"})
    with app_server(settings, log_dir / "bridge-text.log") as server:
        yield server.url


async def test_control_characters_are_escaped_in_text_logs_and_tables(
    text_bridge: str, http: httpx.AsyncClient, fast_env: dict[str, str], log_dir: Path
) -> None:
    client = RawClient(text_bridge, http)
    response = await client.post(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": HOSTILE, "version": "1\x0b\x85\u2028\u202e"},
            },
        }
    )
    client.session_id = response.headers["mcp-session-id"]
    # A method name and a request id land in the request's log line.
    hostile = {"jsonrpc": "2.0", "id": HOSTILE + "\x9b", "method": "x\u2028" + HOSTILE}
    assert (await client.post(hostile)).json()["error"]["code"] == -32601

    log = log_dir / "bridge-text.log"
    with anyio.fail_after(10):
        while "error=-32601" not in log.read_text():
            await anyio.sleep(0.05)
    text = log.read_text()
    assert not [c for c in RAW_CONTROLS if c in text], "raw control characters in the log"
    assert "\\x1b[2J" in text  # escaped, still readable

    table = await cli(fast_env, "sessions", "list", "--limit", "0")
    assert table.returncode == 0, table.stderr
    assert client.session_id[:8] in table.stdout
    found = [c for c in RAW_CONTROLS if c in table.stdout]
    assert not found, f"raw control characters in the operator's table: {found}"
    assert "\\x1b" in table.stdout


# -- item 10: bounded streams per session and ids per listen ---------------------------------
async def test_get_streams_per_session_are_capped(
    fast_bridge: str, http: httpx.AsyncClient
) -> None:
    async with connect(fast_bridge) as client, connect(fast_bridge) as neighbour:
        headers = client.headers(Accept="text/event-stream")
        headers.pop("Content-Type")
        async with AsyncExitStack() as stack:
            for _ in range(10):  # the default MAX_STREAMS_PER_SESSION
                response = await stack.enter_async_context(
                    http.stream(
                        "GET", fast_bridge, headers=headers, timeout=httpx.Timeout(5, read=None)
                    )
                )
                assert response.status_code == 200
            async with http.stream(
                "GET", fast_bridge, headers=headers, timeout=httpx.Timeout(5, read=None)
            ) as refused:
                assert refused.status_code == 429, "an 11th stream was opened"
                assert json.loads(await refused.aread())["error"]["code"] == -32000
            async with neighbour.stream():  # another session is not affected
                pass
        # Closed streams are counted off: the session may open one again.
        with anyio.fail_after(10):
            while True:
                async with http.stream(
                    "GET", fast_bridge, headers=headers, timeout=httpx.Timeout(5, read=None)
                ) as response:
                    if response.status_code == 200:
                        break
                await anyio.sleep(0.05)


async def test_listen_ids_are_capped_and_looked_up_at_once(
    fast_bridge: str, http: httpx.AsyncClient, inproc: AppServer
) -> None:
    modern = ModernClient(fast_bridge, http)
    too_many = {"notifications": {"taskIds": [f"{i:032d}" for i in range(101)]}}
    body, headers = modern.build("subscriptions/listen", too_many)
    async with http.stream("POST", fast_bridge, json=body, headers=headers) as response:
        assert response.headers["content-type"] == "application/json", "a stream was opened"
        error = json.loads(await response.aread())["error"]
    assert error["code"] == -32602
    assert error["data"] == {"limit": "listen-task-ids", "max": 100}

    # 100 unknown ids: one audit line for the request, not one per id.
    body, headers = modern.build(
        "subscriptions/listen", {"notifications": {"taskIds": [f"{i:032d}" for i in range(100)]}}
    )
    body["id"] = request_id = f"listen-{time.time_ns()}"
    async with http.stream("POST", fast_bridge, json=body, headers=headers) as response:
        assert response.status_code == 200

    def audit_lines() -> list[dict[str, Any]]:
        lines = inproc.log.read_text().splitlines()
        entries = [json.loads(line) for line in lines if "task.lookup_failed" in line]
        return [e for e in entries if e.get("request") == request_id]

    with anyio.fail_after(10):
        while not audit_lines():
            await anyio.sleep(0.05)
    (line,) = audit_lines()
    assert line["refused"] == 100


# -- item 11: no internal error texts, probes behind the Host check, no renewal by a 404 -----
async def test_redis_error_texts_do_not_reach_clients(
    fast_bridge: str, redis_client: redis.Redis, fast_env: dict[str, str]
) -> None:
    async with connect(fast_bridge) as client:
        # A key of the wrong type where the create script counts this owner's creations:
        # Redis answers WRONGTYPE inside a script, with the script's sha and line.
        keys, owner = keys_of(fast_env), f"session:{client.session_id}"
        minute = int(time.time() // 60)
        for m in (minute, minute + 1):
            redis_client.hset(keys.rate(owner, m), "x", "1")
        with pytest.raises(RpcError) as caught:
            await client.create_task("echo", {"text": "x"})
    assert caught.value.code == -32603
    assert caught.value.message == "Internal error", caught.value.message


async def test_broker_error_texts_do_not_reach_clients(
    fast_env: dict[str, str], log_dir: Path, inline: InlineWorker
) -> None:
    port = free_port()  # nothing listens there
    broken = {**fast_env, "MCP_BRIDGE_BROKER_URL": f"redis://127.0.0.1:{port}/0"}
    with app_server(settings_of(broken), log_dir / "bridge-no-broker.log") as server:
        async with connect(server.url) as client:
            with pytest.raises(RpcError) as caught:
                await client.create_task("echo", {"text": "x"})
    assert caught.value.code == -32603
    assert str(port) not in caught.value.message, caught.value.message
    assert caught.value.message == "Internal error: the task queue is unavailable"
    assert str(port) in (log_dir / "bridge-no-broker.log").read_text(), "the log has the cause"


async def test_metrics_and_readiness_check_the_host(
    fast_bridge: str, http: httpx.AsyncClient
) -> None:
    base = fast_bridge.removesuffix("/mcp")
    rebound = {"Host": "evil.example"}
    for path in ("/metrics", "/readyz"):
        assert (await http.get(base + path, headers=rebound)).status_code == 403, path
        assert (await http.get(base + path)).status_code in (200, 503), path
    # Liveness stays open to probes by pod address: it says nothing but "ok".
    assert (await http.get(base + "/healthz", headers=rebound)).json() == {"status": "ok"}


async def test_a_refused_request_does_not_renew_a_session(
    token_bridge: str, redis_client: redis.Redis, fast_env: dict[str, str]
) -> None:
    async with connect(token_bridge, token="tok-alice") as alice:
        key = keys_of(fast_env).session(alice.session_id or "")
        redis_client.pexpire(key, 100_000)
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {
            "Accept": ACCEPT,
            "Content-Type": "application/json",
            "Mcp-Session-Id": alice.session_id or "",
            "Authorization": "Bearer tok-bob",
        }
        async with httpx.AsyncClient(timeout=30, transport=AsyncTransport()) as http:
            refused = await http.post(token_bridge, json=ping, headers=headers)
        assert refused.status_code == 404
        assert 0 < redis_client.pttl(key) <= 100_000, "bob's 404 renewed alice's session"
        await alice.call("ping")
        assert redis_client.pttl(key) > 100_000, "alice's own request renews it"
