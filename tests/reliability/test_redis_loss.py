"""Redis goes away and comes back. A private redis-server (keeping nothing) serves a bridge and
a worker; it is killed: requests fail fast with a JSON-RPC internal error, an open GET
stream ends cleanly; it is started again on the same port: the bridge and the worker
recover without a restart."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis

from tests.client import ACCEPT, TERMINAL, RawClient, RpcError, connect
from tests.reliability.harness import Recorder, figure_time
from tests.services import RedisServer, celery_worker, eventually, running_bridge

pytestmark = pytest.mark.anyio

#: A request must be answered within this while Redis is away.
FAIL_FAST_S = 3.0
INITIALIZE = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "t", "version": "1"},
}


async def post(client: RawClient, method: str, params: dict[str, Any]) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 99, "method": method, "params": params}
    return await client.http.post(
        client.url, content=json.dumps(body), headers=client.headers(), timeout=30
    )


async def completes_on_a_fresh_session(url: str) -> bool:
    """A new session can run a task to completion (the old sessions died with the data)."""
    try:
        async with connect(url) as client:
            task = await client.create_task("echo", {"text": "back"})
            done = await client.wait_status(task["taskId"], TERMINAL, timeout=10)
    except (AssertionError, RpcError, httpx.TransportError, TimeoutError):
        return False
    assert done["status"] == "completed", done
    return True


@pytest.mark.timeout(120)
async def test_redis_going_away_fails_fast_and_everything_recovers(
    own_env: dict[str, str], log_dir: Path, figure: Callable[[str], None]
) -> None:
    server = RedisServer(log_dir)
    server.start()
    # Broker, result backend and registry all live on the private server.
    env = {**own_env, "MCP_BRIDGE_REDIS_URL": server.url}
    try:
        with (
            celery_worker(env, log_dir, concurrency=1, name="redisloss"),
            running_bridge(env, log_dir, "bridge-redisloss") as bridge,
        ):
            async with connect(bridge.url) as client:
                task = await client.create_task("echo", {"text": "before"})
                done = await client.wait_status(task["taskId"], TERMINAL)
                assert done["status"] == "completed"

                # A blip: Redis drops the pub/sub connections and redis-py reconnects them
                # at once. Events published in the gap never reach the bridge, so its open
                # streams must end and resume from the notification stream.
                recorder = Recorder(client)
                async with anyio.create_task_group() as tg:
                    await tg.start(recorder.run)
                    admin = redis.Redis(port=server.port)
                    try:
                        assert admin.client_kill_filter(_type="pubsub") >= 1
                    finally:
                        admin.close()
                    await eventually(lambda: recorder.connects >= 2, 10, "the stream to resume")
                    blip = await client.create_task("echo", {"text": "after the blip"})
                    await recorder.wait_terminal({blip["taskId"]}, 10)
                    tg.cancel_scope.cancel()

                stream_open = anyio.Event()
                stream_ended = anyio.Event()

                async def hold_stream() -> None:
                    # Raises (and fails the test) if the stream breaks instead of ending.
                    async with client.stream("0-0") as events:
                        async for _ in events:
                            stream_open.set()
                    stream_ended.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(hold_stream)
                    with anyio.fail_after(10):
                        await stream_open.wait()

                    server.kill()
                    killed = time.monotonic()
                    with anyio.fail_after(10):
                        await stream_ended.wait()
                    stream_end = figure_time(killed)

                answers: list[str] = []
                for method, params in [
                    ("tasks/get", {"taskId": task["taskId"]}),
                    ("tools/call", {"name": "echo", "arguments": {"text": "x"}, "task": {}}),
                    ("tasks/list", {}),
                    ("tasks/result", {"taskId": task["taskId"]}),
                    ("tools/list", {}),
                ]:
                    begun = time.monotonic()
                    response = await post(client, method, params)
                    took = time.monotonic() - begun
                    assert took < FAIL_FAST_S, (method, took)
                    assert response.status_code != 500, response.text
                    assert response.headers["content-type"].startswith("application/json")
                    error = response.json()["error"]
                    assert error["code"] == -32603, (method, error)
                    answers.append(f"{method} {response.status_code} in {took:.2f} s")

                fresh = RawClient(bridge.url, client.http)  # no session yet
                begun = time.monotonic()
                response = await post(fresh, "initialize", INITIALIZE)
                took = time.monotonic() - begun
                assert took < FAIL_FAST_S and response.status_code != 500, response.text
                assert response.json()["error"]["code"] == -32603
                answers.append(f"initialize {response.status_code} in {took:.2f} s")
                begun = time.monotonic()
                headers = {**client.headers(), "Accept": ACCEPT}
                response = await client.http.get(bridge.url, headers=headers, timeout=30)
                assert response.status_code != 500 and time.monotonic() - begun < FAIL_FAST_S
                assert response.json()["error"]["code"] == -32603
                answers.append(f"GET {response.status_code}")

                server.start()
                restarted = time.monotonic()
                await eventually(
                    lambda: completes_on_a_fresh_session(bridge.url),
                    60,
                    "a task to complete after Redis came back",
                    every=0.2,
                )
                recovery = figure_time(restarted)
                # That Redis kept nothing: the old session is gone, and says so.
                response = await post(client, "tasks/list", {})
                assert response.status_code == 404, response.text
    finally:
        if server.proc is not None:
            server.proc.stop()
    figure(
        f"Redis killed: GET stream ended after {stream_end} s; requests answered -32603: "
        f"{'; '.join(answers)}. Restarted: a new task completed {recovery} s later"
    )
