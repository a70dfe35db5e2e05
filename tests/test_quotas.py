"""What one caller can store in Redis is bounded (issue 15): a session keeps a bounded part
of what the client declared, sessions per principal are capped, a large ``progressToken``
is refused, retention and failure messages are capped, each owner has a byte budget, and a
resume with ``Last-Event-ID`` reads the stream in pages. Each test mounts the attack
and prints the figure it measured: on in-process apps (the fast tier), or on real bridges and
workers where a worker's setting or a process's memory is what counts."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis
from httpx_sse import EventSource

from mcp_celery_bridge.bridge.shared.settings import Settings
from tests.client import ModernClient, RpcError, connect
from tests.inline import InlineWorker
from tests.inproc import AsyncTransport, app_server, settings_of
from tests.services import Process, bridge_server, celery_worker, keys_of

pytestmark = pytest.mark.anyio

MB = 1024 * 1024
INIT_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
}


def _initialize(capabilities: dict[str, Any], client_info: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": capabilities,
            "clientInfo": client_info,
        },
    }


def _memory(client: redis.Redis, keys: list[str]) -> int:
    return sum(int(client.memory_usage(key, samples=0) or 0) for key in keys)


async def test_a_session_keeps_a_bounded_part_of_what_the_client_declared(
    fast_bridge: str, fast_env: dict[str, str], redis_client: redis.Redis
) -> None:
    keys = keys_of(fast_env)
    capabilities = {
        "elicitation": {"form": {}, "padding": "e" * MB},
        "tasks": {"list": {}, "requests": {"elicitation": {"create": {"more": "t" * MB}}}},
        "experimental": {"padding": "x" * MB},
    }
    client_info = {"name": "n" * 10_000, "version": "1.0", "padding": "i" * 1000}
    body = json.dumps(_initialize(capabilities, client_info))
    assert len(body) > 3 * MB
    before = int(redis_client.info("memory")["used_memory"])
    sids = []
    async with httpx.AsyncClient(timeout=30, transport=AsyncTransport()) as http:
        for _ in range(20):
            response = await http.post(fast_bridge, content=body, headers=INIT_HEADERS)
            assert response.status_code == 200, response.text
            sids.append(response.headers["mcp-session-id"])
        stored = _memory(redis_client, [keys.session(sid) for sid in sids])
        grown = int(redis_client.info("memory")["used_memory"]) - before
        print(f"20 initializes with 3 MB capabilities: sessions hold {stored} bytes")
        print(f"used_memory grew by {grown} bytes")
        assert stored < 20 * 1024
        session = redis_client.hgetall(keys.session(sids[0]))
        assert json.loads(session["capabilities"]) == {
            "elicitation": {"form": {}},
            "tasks": {"list": {}, "requests": {"elicitation": {"create": {}}}},
        }
        assert json.loads(session["client_info"]) == {"name": "n" * 128, "version": "1.0"}
        # The session works, and still counts as able to answer questions.
        headers = {**INIT_HEADERS, "Mcp-Session-Id": sids[0]}
        listed = await http.post(
            fast_bridge, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=headers
        )
        assert listed.json()["result"]["tools"]


@pytest.fixture(scope="module")
def few_sessions(fast_env: dict[str, str], log_dir: Path, inline: InlineWorker) -> Iterator[str]:
    settings = {
        **fast_env,
        "MCP_BRIDGE_MAX_SESSIONS_PER_PRINCIPAL": "3",
        "MCP_BRIDGE_AUTH_TOKENS": "tok-alice:alice,tok-bob:bob",
        # Sessions of this bridge are counted apart from the other tests'.
        "MCP_BRIDGE_KEY_PREFIX": fast_env["MCP_BRIDGE_KEY_PREFIX"] + "-sessions",
    }
    with app_server(settings_of(settings), log_dir / "bridge-few-sessions.log") as server:
        yield server.url


async def _open(http: httpx.AsyncClient, url: str, token: str | None = None) -> httpx.Response:
    headers = {**INIT_HEADERS, **({"Authorization": f"Bearer {token}"} if token else {})}
    body = _initialize({}, {"name": "t", "version": "1"})
    response = await http.post(url, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


async def test_sessions_per_principal_are_capped(few_sessions: str) -> None:
    async with httpx.AsyncClient(timeout=30, transport=AsyncTransport()) as http:
        opened = [await _open(http, few_sessions, "tok-alice") for _ in range(3)]
        assert all("result" in response.json() for response in opened)
        refused = (await _open(http, few_sessions, "tok-alice")).json()
        assert "mcp-session-id" not in refused
        assert refused["error"]["code"] == -32000
        assert refused["error"]["data"] == {"limit": "sessions", "max": 3}
        assert "Too many sessions" in refused["error"]["message"]
        # Another principal is not affected.
        assert "result" in (await _open(http, few_sessions, "tok-bob")).json()
        # A deleted session frees its place.
        sid = opened[0].headers["mcp-session-id"]
        deleted = await http.delete(
            few_sessions,
            headers={"Mcp-Session-Id": sid, "Authorization": "Bearer tok-alice"},
        )
        assert deleted.status_code == 200
        assert "result" in (await _open(http, few_sessions, "tok-alice")).json()


async def test_unauthenticated_callers_share_the_session_limit(
    fast_env: dict[str, str], log_dir: Path, inline: InlineWorker
) -> None:
    settings = {
        **fast_env,
        "MCP_BRIDGE_MAX_SESSIONS_PER_PRINCIPAL": "2",
        "MCP_BRIDGE_KEY_PREFIX": fast_env["MCP_BRIDGE_KEY_PREFIX"] + "-anonymous",
    }
    log = log_dir / "bridge-anonymous-sessions.log"
    with app_server(settings_of(settings), log) as server:
        url = server.url
        async with httpx.AsyncClient(timeout=30, transport=AsyncTransport()) as http:
            for _ in range(2):
                assert "result" in (await _open(http, url)).json()
            refused = (await _open(http, url)).json()
            assert refused["error"]["data"] == {"limit": "sessions", "max": 2}


async def test_a_large_progress_token_is_refused(
    fast_bridge: str, fast_env: dict[str, str], redis_client: redis.Redis
) -> None:
    keys = keys_of(fast_env)
    async with connect(fast_bridge) as client:
        stream = keys.events(f"session:{client.session_id}")
        call = {"name": "sleep", "arguments": {"seconds": 1, "steps": 100}, "task": {}}
        message = await client.request("tools/call", {**call, "_meta": {"progressToken": "p" * MB}})
        if "result" in message:  # the code before the limit: measure what it cost
            task_id = message["result"]["task"]["taskId"]
            await client.wait_status(task_id, {"completed"}, timeout=60)
        held = _memory(redis_client, [stream])
        print(f"1 MB progressToken, 100 steps: the stream holds {held} bytes")
        assert message["error"]["code"] == -32602
        assert "progressToken too large" in message["error"]["message"]
        assert redis_client.exists(stream) == 0
        # A token within the limit still gets its progress.
        fine = await client.call("tools/call", {**call, "_meta": {"progressToken": "q" * 200}})
        await client.wait_status(fine["task"]["taskId"], {"completed"}, timeout=60)
        assert '"q' in redis_client.hget(keys.task(fine["task"]["taskId"]), "ptoken")


async def test_retention_and_failure_messages_are_capped(
    fast_bridge: str, fast_env: dict[str, str], redis_client: redis.Redis
) -> None:
    async with connect(fast_bridge) as client:
        kept = await client.create_task("echo", {"text": "a"}, ttl=10**9)
        assert kept["ttl"] == 4 * 3600 * 1000
        # An exception quoting a large argument does not land in Redis three times over.
        failed = await client.create_task("fail", {"message": "m" * 900_000})
        final = await client.wait_status(failed["taskId"], {"failed"}, timeout=30)
        key = keys_of(fast_env).task(failed["taskId"])
        print(f"a failure quoting 900 kB: its record holds {_memory(redis_client, [key])} bytes")
        assert len(final["statusMessage"]) < 2_100
        assert _memory(redis_client, [key]) < 10_000


@pytest.fixture(scope="module")
def budget(env: dict[str, str], log_dir: Path) -> Iterator[str]:
    settings = {
        **env,
        "MCP_BRIDGE_QUEUE": env["MCP_BRIDGE_QUEUE"] + "-budget",
        "MCP_BRIDGE_KEY_PREFIX": env["MCP_BRIDGE_KEY_PREFIX"] + "-budget",
        "MCP_BRIDGE_MAX_RESULT_BYTES": "100000",
        "MCP_BRIDGE_MAX_ARGUMENT_BYTES": "2000",
        "MCP_BRIDGE_MAX_BYTES_PER_OWNER": "150000",
    }
    with (
        celery_worker(settings, log_dir, concurrency=1, name="budget"),
        bridge_server(settings, log_dir, "bridge-budget") as url,
    ):
        yield url


async def test_each_owner_has_a_byte_budget(budget: str) -> None:
    async with connect(budget) as client, connect(budget) as other:
        first = await client.create_task("blob", {"size": 90_000}, ttl=60_000)
        done = await client.wait_status(first["taskId"], {"completed", "failed"}, timeout=30)
        assert done["status"] == "completed"
        # The second result does not fit beside the first: the task fails, and says why.
        second = await client.create_task("blob", {"size": 90_000}, ttl=60_000)
        over = await client.wait_status(second["taskId"], {"completed", "failed"}, timeout=30)
        assert over["status"] == "failed"
        assert "exceeds the storage budget" in over["statusMessage"]
        result = await client.call("tasks/result", {"taskId": second["taskId"]})
        assert result["isError"] is True
        # Creates fail once the budget is spent (the first result alone uses most of it).
        with pytest.raises(RpcError) as err:
            for _ in range(100):
                await client.create_task("echo", {"text": "x" * 1900}, ttl=60_000)
        assert err.value.code == -32000
        assert err.value.data == {"limit": "bytes", "max": 150_000}
        assert "Storage budget exhausted" in err.value.message
        # Another owner is not affected.
        await other.create_task("echo", {"text": "fine"})


async def test_the_budget_frees_what_expired(budget: str) -> None:
    async with connect(budget) as client:
        big = await client.create_task("blob", {"size": 90_000}, ttl=1_000)
        await client.wait_status(big["taskId"], {"completed"}, timeout=30)
        with pytest.raises(RpcError):
            for _ in range(100):
                await client.create_task("echo", {"text": "x" * 1900}, ttl=1_000)
        # Once the finished tasks expire (ttl 1 s), their bytes count no more.
        with anyio.fail_after(30):
            while True:
                try:
                    await client.create_task("echo", {"text": "again"}, ttl=1_000)
                    break
                except RpcError as exc:
                    assert exc.data == {"limit": "bytes", "max": 150_000}
                    await anyio.sleep(0.2)


async def test_stateless_callers_have_a_byte_budget_too(budget: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        modern = ModernClient(budget, http)
        with pytest.raises(RpcError) as err:
            for _ in range(200):
                await modern.request("tools/call", {"name": "blob", "arguments": {"size": 40_000}})
        assert (err.value.status, err.value.code) == (429, -32000)
        assert err.value.data == {"limit": "bytes", "max": 150_000}


def _peak_rss(log: Path) -> int:
    """The bridge process's peak resident memory (bytes), found by the pid it logged."""
    found = re.search(r"Started server process \[(\d+)\]", log.read_text())
    assert found, "the bridge did not log its pid"
    status = Path(f"/proc/{found.group(1)}/status").read_text()
    peak = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert peak
    return int(peak.group(1)) * 1024


EVENTS = 2_000
RESUMES = 10


async def test_a_resume_reads_the_stream_in_pages(
    env: dict[str, str], log_dir: Path, worker: Process, redis_client: redis.Redis
) -> None:
    with bridge_server(env, log_dir, "bridge-replay") as url:
        async with connect(url) as client:
            # A long stream: written directly, as the scripts write it, to be quick.
            stream = keys_of(env).events(f"session:{client.session_id}")
            now = int(time.time() * 1000)
            ids = []
            pipe = redis_client.pipeline(transaction=False)
            for n in range(EVENTS):
                task = {"id": f"t{n}", "status": "working", "message": f"{n} " + "s" * 10_000}
                task.update(created=now, updated=now, ttl=60_000, poll=500)
                pipe.xadd(stream, {"task": json.dumps(task)})
            ids = [str(i) for i in pipe.execute()]
            before = _peak_rss(log_dir / "bridge-replay.log")

            async def resume(
                http: httpx.AsyncClient, opened: anyio.Event, go: anyio.Event
            ) -> list[str]:
                headers = client.headers(Accept="text/event-stream", **{"Last-Event-ID": "0-0"})
                headers.pop("Content-Type")
                seen = []
                async with http.stream("GET", url, headers=headers) as response:
                    assert response.status_code == 200
                    async for event in EventSource(response).aiter_sse():
                        if not event.data:
                            continue
                        message = json.loads(event.data)
                        assert message["params"]["taskId"] == f"t{len(seen)}"
                        seen.append(event.id)
                        if len(seen) == 1:
                            # All the resumes are under way before any reads on.
                            opened.set()
                            await go.wait()
                        if len(seen) == EVENTS:
                            return seen
                raise AssertionError(f"the stream ended after {len(seen)} events")

            results: list[list[str]] = []
            go = anyio.Event()
            timeout = httpx.Timeout(10, read=60)
            async with httpx.AsyncClient(timeout=timeout) as http, anyio.create_task_group() as tg:
                for _ in range(RESUMES):
                    opened = anyio.Event()

                    async def one(opened: anyio.Event = opened) -> None:
                        results.append(await resume(http, opened, go))

                    tg.start_soon(one)
                    with anyio.fail_after(60):
                        await opened.wait()
                go.set()
            grown = _peak_rss(log_dir / "bridge-replay.log") - before
            print(f"{RESUMES} resumes from 0-0 of {EVENTS} events of 10 kB: peak RSS +{grown}")
            # Every event once, in order, on every resumed stream.
            assert results == [ids] * RESUMES
            assert grown < 100 * MB


@pytest.mark.fast
def test_the_budget_must_fit_one_call() -> None:
    with pytest.raises(ValueError, match="max_bytes_per_owner"):
        Settings(max_bytes_per_owner=1000)
