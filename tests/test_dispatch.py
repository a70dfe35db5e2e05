"""Publishing a tool call. With the broker in the registry's Redis, the create script pushes
the message the bridge built itself; it must be the message Celery's producer would write.
With another broker the bridge publishes through Celery."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from bridge.dispatch import Dispatcher
from bridge.errors import LimitExceeded
from bridge.registry import Registry
from bridge.settings import Settings
from tests.client import connect
from tests.services import bridge_server, celery_worker

pytestmark = pytest.mark.anyio

HEADERS = {"mcp_task_id": "t" * 32, "mcp_owner": "session:abc", "mcp_tool": "echo"}
ARGUMENTS = {"text": "héllo", "n": [1, 2.5, None]}


@pytest.fixture
def settings(env: dict[str, str]) -> Iterator[Settings]:
    queue = f"dispatch-{uuid.uuid4().hex[:8]}"
    yield Settings(redis_url=env["MCP_BRIDGE_REDIS_URL"], queue=queue, key_prefix=queue)
    redis.Redis.from_url(env["MCP_BRIDGE_REDIS_URL"]).delete(queue)


def _decoded(raw: bytes) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


async def test_the_inline_message_is_the_one_celery_would_publish(settings: Settings) -> None:
    dispatcher = Dispatcher(settings)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        assert dispatcher.inline
        celery_id = str(uuid.uuid4())
        await dispatcher.publish("mcp.echo", celery_id, ARGUMENTS, HEADERS)
        published = _decoded(client.rpop(settings.queue) or b"")
        ours = _decoded(dispatcher.inline_message("mcp.echo", celery_id, ARGUMENTS, HEADERS))
    finally:
        dispatcher.close()
        client.close()
    # Per-message or per-process values (the delivery tag, the producer's name and reply
    # queue) differ; everything a worker or Flower reads is the same.
    for message in (published, ours):
        del message["properties"]["delivery_tag"], message["properties"]["reply_to"]
        assert message["headers"].pop("origin").startswith("gen")
    assert ours == published
    assert ours["body"][1]["arguments"] == ARGUMENTS


async def test_a_refused_create_queues_nothing(settings: Settings) -> None:
    limited = settings.model_copy(update={"max_inflight_per_owner": 1})
    client = redis.asyncio.Redis.from_url(settings.redis_url)
    registry = Registry(limited, client)
    dispatcher = Dispatcher(limited)
    try:

        async def create() -> None:
            celery_id = str(uuid.uuid4())
            await registry.create(
                task_id=uuid.uuid4().hex,
                owner="session:limits",
                tool="echo",
                celery_id=celery_id,
                ttl_ms=60_000,
                queue=limited.queue,
                celery_message=dispatcher.inline_message("mcp.echo", celery_id, {}, HEADERS),
            )

        await create()
        with pytest.raises(LimitExceeded):
            await create()
        assert await client.llen(limited.queue) == 1
    finally:
        dispatcher.close()
        keys = [k async for k in client.scan_iter(f"{limited.key_prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.mark.timeout(90)
async def test_another_broker_gets_the_call_through_celery(
    env: dict[str, str], log_dir: Path
) -> None:
    db = (int(os.environ.get("MCP_TEST_REDIS_DB", "13")) + 2) % 16
    broker = f"redis://127.0.0.1:6379/{db}"
    private = {
        **env,
        "MCP_BRIDGE_BROKER_URL": broker,
        "MCP_BRIDGE_QUEUE": env["MCP_BRIDGE_QUEUE"] + "-broker",
    }
    try:
        with (
            celery_worker(private, log_dir, concurrency=1, name="broker"),
            bridge_server(private, log_dir, "bridge-broker") as url,
        ):
            async with connect(url) as client:
                task = await client.create_task("echo", {"text": "via celery"})
                result = await client.call("tasks/result", {"taskId": task["taskId"]})
        assert result["content"][0]["text"] == "via celery"
    finally:
        redis.Redis.from_url(broker).flushdb()
