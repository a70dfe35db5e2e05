"""The session's GET notification stream across bridge processes, Last-Event-ID resumption,
and a plain tool call cancelled by its client's disconnect."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import redis

from mcp_celery_bridge.bridge.shared.keys import Keys
from tests.client import RawClient, connect, next_status
from tests.inproc import AsyncTransport
from tests.schema import check
from tests.services import find_tasks, keys_of

pytestmark = pytest.mark.anyio

Event = tuple[str, dict[str, Any]]


def order(event_id: str) -> tuple[int, int]:
    """Redis stream ids ("ms-seq") in stream order."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


def twin(client: RawClient, url: str, http: httpx.AsyncClient) -> RawClient:
    """A client of the same session, talking to another bridge process."""
    other = RawClient(url, http)
    other.session_id = client.session_id
    other.version = client.version
    return other


async def collect_until(
    events: AsyncIterator[Event], task_id: str, status: str, timeout: float = 15
) -> list[Event]:
    """Every status notification of the stream up to and including ``task_id`` reaching
    ``status``."""
    seen: list[Event] = []
    with anyio.fail_after(timeout):
        async for event_id, message in events:
            assert message["method"] == "notifications/tasks/status", message
            seen.append((event_id, message))
            params = message["params"]
            if params["taskId"] == task_id and params["status"] == status:
                return seen
    raise AssertionError(f"the stream ended before {task_id} was {status}: {seen}")


def of_task(events: list[Event], task_id: str) -> list[tuple[str, str | None]]:
    return [
        (m["params"]["status"], m["params"].get("statusMessage"))
        for _, m in events
        if m["params"]["taskId"] == task_id
    ]


def assert_strictly_after(events: list[Event], mark: str) -> None:
    ids = [event_id for event_id, _ in events]
    assert all(ids), f"an event without an id: {events}"
    assert len(set(ids)) == len(ids), f"an event delivered twice: {ids}"
    assert [order(i) for i in ids] == sorted(order(i) for i in ids), ids
    assert all(order(i) > order(mark) for i in ids), (mark, ids)


# -- one session, two bridge processes ---------------------------------------------------------


async def test_notifications_reach_a_stream_on_another_bridge(
    fast_bridge: str, fast_bridge_b: str
) -> None:
    async with (
        connect(fast_bridge) as a,
        httpx.AsyncClient(timeout=30, transport=AsyncTransport()) as http_b,
    ):
        b = twin(a, fast_bridge_b, http_b)
        async with b.stream() as events:
            task = await a.create_task("sleep", {"seconds": 0.3, "steps": 2})
            task_id = task["taskId"]
            working_id, working = await next_status(events, task_id, "working", timeout=15)
            done_id, done = await next_status(events, task_id, "completed", timeout=15)
        assert working["params"]["taskId"] == task_id
        assert order(working_id) < order(done_id)
        assert done["params"]["statusMessage"] == "completed"

        got = await b.get_task(task_id)
        assert got["taskId"] == task_id
        assert got["status"] == "completed"
        result = await b.call("tasks/result", {"taskId": task_id})
        assert result["content"][0]["text"].startswith("slept")
        listed = await b.call("tasks/list")
        assert task_id in [t["taskId"] for t in listed["tasks"]]


# -- Last-Event-ID -------------------------------------------------------------------------------


async def test_resume_with_last_event_id_replays_what_was_missed(
    fast_bridge: str, fast_bridge_b: str
) -> None:
    async with connect(fast_bridge) as client:
        async with client.stream() as events:
            task = await client.create_task("sleep", {"seconds": 1, "steps": 5})
            task_id = task["taskId"]
            before: list[Event] = []
            with anyio.fail_after(15):
                async for event_id, message in events:
                    before.append((event_id, message))
                    params = message["params"]
                    if params["taskId"] == task_id and params.get("statusMessage") == "step 1/5":
                        break
        mark = before[-1][0]
        assert mark, "the notification has no event id"
        assert of_task(before, task_id)[-1] == ("working", "step 1/5")

        final = await client.wait_status(task_id, {"completed", "failed", "cancelled"}, 15)
        assert final["status"] == "completed", final

        expected = [
            ("working", "step 2/5"),
            ("working", "step 3/5"),
            ("working", "step 4/5"),
            ("working", "step 5/5"),
            ("completed", "completed"),
        ]

        # Resume on the same bridge; a task created after reconnecting arrives live, after
        # the replay, and shows that nothing of the replay comes twice.
        async with client.stream(last_event_id=mark) as events:
            sentinel = await client.create_task("echo", {"text": "sentinel"})
            resumed = await collect_until(events, sentinel["taskId"], "completed")
        assert of_task(resumed, task_id) == expected
        assert of_task(resumed, sentinel["taskId"])[-1][0] == "completed"
        assert_strictly_after(resumed, mark)

        # Resume from the same point on the other bridge process: the same events, same ids.
        async with httpx.AsyncClient(timeout=30, transport=AsyncTransport()) as http_b:
            b = twin(client, fast_bridge_b, http_b)
            async with b.stream(last_event_id=mark) as events:
                replayed = await collect_until(events, sentinel["taskId"], "completed")
                later = await b.create_task("echo", {"text": "later"})
                live = await collect_until(events, later["taskId"], "completed")
        assert [event_id for event_id, _ in replayed] == [event_id for event_id, _ in resumed]
        assert of_task(replayed, task_id) == expected
        assert of_task(live, task_id) == []
        assert of_task(live, sentinel["taskId"]) == []
        assert_strictly_after(replayed + live, mark)


async def test_resume_from_the_last_event_replays_nothing(fast_bridge: str) -> None:
    async with connect(fast_bridge) as client:
        async with client.stream() as events:
            first = await client.create_task("echo", {"text": "one"})
            seen = await collect_until(events, first["taskId"], "completed")
        mark = seen[-1][0]
        async with client.stream(last_event_id=mark) as events:
            second = await client.create_task("echo", {"text": "two"})
            after = await collect_until(events, second["taskId"], "completed")
        assert of_task(after, first["taskId"]) == []
        assert_strictly_after(after, mark)


@pytest.mark.parametrize(
    "last",
    [
        "abc",
        "1-2-3",
        "-1",
        "1-",
        "1700000000000-x",
        "9" * 30,
        "18446744073709551616-0",  # digits, but beyond a 64-bit stream id
        "1-18446744073709551616",
    ],
)
async def test_malformed_last_event_id_is_400(fast_bridge: str, last: str) -> None:
    async with connect(fast_bridge) as client:
        headers = {
            "Accept": "text/event-stream",
            "Mcp-Session-Id": str(client.session_id),
            "MCP-Protocol-Version": client.version,
            "Last-Event-ID": last,
        }
        async with client.http.stream(
            "GET", client.url, headers=headers, timeout=httpx.Timeout(5)
        ) as response:
            assert response.status_code == 400, (response.status_code, response.headers)
            body = json.loads(await response.aread())
        assert body["error"]["code"] == -32600
        check("JSONRPCErrorResponse", body)


# -- a plain call whose client goes away ---------------------------------------------------------


def _running_plain_sleep(client: redis.Redis, keys: Keys, owner: str) -> str | None:
    def running(h: dict[str, str]) -> bool:
        return (
            h.get("tool") == "sleep"
            and h.get("owner") == owner
            and h.get("hidden") == "1"
            and h.get("message", "").startswith("running on")
        )

    found = find_tasks(client, keys, running, limit=1)
    return keys.task(found[0]) if found else None


async def test_plain_call_is_cancelled_when_the_client_disconnects(
    fast_bridge: str, redis_client: redis.Redis, fast_env: dict[str, str]
) -> None:
    keys = keys_of(fast_env)
    async with connect(fast_bridge, version="2025-06-18") as client:
        owner = f"session:{client.session_id}"
        body = {
            "jsonrpc": "2.0",
            "id": 1000,
            "method": "tools/call",
            # Steps of 3 s: the "running on" status lasts until the first step's report, and
            # a scan of a registry the fuzz tests filled takes a while.
            "params": {"name": "sleep", "arguments": {"seconds": 30, "steps": 10}},
        }
        key: str | None = None
        async with client.http.stream(
            "POST", client.url, content=json.dumps(body), headers=client.headers()
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            with anyio.fail_after(10):
                while key is None:
                    key = _running_plain_sleep(redis_client, keys, owner)
                    if key is None:
                        await anyio.sleep(0.05)
            assert redis_client.hget(key, "status") == "working"
        # Leaving the block closes the connection before the answer came.

        with anyio.fail_after(10):
            while (record := redis_client.hgetall(key))["status"] != "cancelled":
                assert record["status"] == "working", record
                await anyio.sleep(0.05)
        assert record["message"] == "the client disconnected", record

        # The session is still usable, and the cancelled call is not one of its tasks.
        assert await client.call("ping") == {}
