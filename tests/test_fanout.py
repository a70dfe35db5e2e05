"""Events go only to the bridge processes that hold something of their owner (issue 13): an
idle bridge hears nothing of another bridge's tasks, and a stream opened while its owner's
events flow (its bridge subscribing the owner's channel right then) misses none."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import pytest
import redis

from mcp_celery_bridge.bridge.events import Event, EventHub
from mcp_celery_bridge.bridge.metrics import Metrics
from mcp_celery_bridge.bridge.shared.keys import Keys
from tests.client import RawClient, connect, next_status
from tests.inproc import AppServer
from tests.services import eventually

pytestmark = pytest.mark.anyio


def _hub(server: AppServer) -> EventHub:
    metrics: Metrics = server.app.state.metrics
    return metrics.hub


@contextmanager
def _heard(server: AppServer) -> Iterator[set[str]]:
    """The ids of the tasks whose events ``server``'s listener hears meanwhile."""
    hub = _hub(server)
    observe = hub.on_event
    heard: set[str] = set()
    lock = threading.Lock()

    def tap(event: Event) -> None:
        with lock:
            heard.add(event.task.id)
        if observe is not None:
            observe(event)

    hub.on_event = tap
    try:
        yield heard
    finally:
        hub.on_event = observe


def _owner(client: RawClient) -> str:
    return f"session:{client.session_id}"


async def test_an_idle_bridge_hears_nothing_of_another_bridges_tasks(
    inproc: AppServer, inproc_b: AppServer
) -> None:
    with _heard(inproc) as heard_a, _heard(inproc_b) as heard_b:
        async with connect(inproc.url) as client, client.stream() as events:
            ids = []
            for text in ("a", "b", "c"):
                task = await client.create_task("echo", {"text": text})
                await next_status(events, task["taskId"], "completed")
                ids.append(task["taskId"])
            assert set(ids) <= heard_a
            assert not set(ids) & heard_b, "an idle bridge decoded another bridge's events"
            assert not _hub(inproc_b).hears(_owner(client))

            # A stream of the owner on the other bridge: it hears the owner from then on.
            async with connect(inproc_b.url) as other:
                other.session_id = client.session_id
                async with other.stream() as on_b:
                    # The response may start before the stream's subscription is confirmed
                    # (its backlog is read after, so it misses nothing either way).
                    await eventually(
                        lambda: _hub(inproc_b).hears(_owner(client)), 10, "B holds the owner"
                    )
                    task = await client.create_task("echo", {"text": "d"})
                    await next_status(on_b, task["taskId"], "completed")
                    assert task["taskId"] in heard_b
    # Nobody holds the owner on either bridge any more: its channel goes after a while.
    await eventually(
        lambda: not _hub(inproc_b).hears(_owner(client)) and not _hub(inproc).hears(_owner(client)),
        20,
        "the owner's channel unsubscribed",
    )


async def test_streams_opened_while_events_flow_miss_none(
    inproc: AppServer, inproc_b: AppServer, redis_client: redis.Redis
) -> None:
    """Sessions on one bridge run tasks one after another; meanwhile each session's stream
    is opened on the other bridge (the first hold of its owner there: a SUBSCRIBE racing the
    events) with ``Last-Event-ID: 0-0``, several times at random moments. Every stream
    carries every event of the session's Redis Stream, once, in order."""
    keys = Keys.of(inproc.settings)
    sessions, tasks_each, opens_each = 6, 8, 3
    failures: list[str] = []

    async def session_run() -> None:
        async with connect(inproc.url) as client:

            async def produce() -> None:
                for i in range(tasks_each):
                    task = await client.create_task("echo", {"text": str(i)})
                    await client.wait_status(task["taskId"], {"completed"})

            async def consume(delay: float) -> None:
                await anyio.sleep(delay)
                async with connect(inproc_b.url) as other:
                    other.session_id = client.session_id
                    got: list[str] = []
                    completed: set[str] = set()
                    async with other.stream(last_event_id="0-0") as events:
                        with anyio.fail_after(60):
                            async for event_id, message in events:
                                if event_id:
                                    got.append(event_id)
                                params = message.get("params", {})
                                if params.get("status") == "completed":
                                    completed.add(params["taskId"])
                                if len(completed) == tasks_each:
                                    break
                    stream = [
                        entry_id
                        for entry_id, _ in redis_client.xrange(keys.events(_owner(client)))  # type: ignore[union-attr]
                    ]
                    want = stream[: stream.index(got[-1]) + 1]
                    if got != want:
                        missing = sorted(set(want) - set(got))
                        failures.append(f"{_owner(client)}: {len(got)} of {len(want)}, {missing}")

            async with anyio.create_task_group() as group:
                group.start_soon(produce)
                for _ in range(opens_each):
                    group.start_soon(consume, random.uniform(0, 0.4))

    with anyio.fail_after(120):
        async with anyio.create_task_group() as group:
            for _ in range(sessions):
                group.start_soon(session_run)
    assert not failures, failures
