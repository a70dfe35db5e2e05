"""Publishing a tool call. With the broker in the registry's Redis, the create script pushes
the message the bridge built itself; it must be the message Celery's producer would write.
With another broker the bridge publishes through Celery."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio

from mcp_celery_bridge.bridge.catalogue import Catalogue
from mcp_celery_bridge.bridge.eras import modern_methods as modern
from mcp_celery_bridge.bridge.events import EventHub
from mcp_celery_bridge.bridge.publisher import Publisher
from mcp_celery_bridge.bridge.service import TaskService
from mcp_celery_bridge.bridge.shared.clients import async_client
from mcp_celery_bridge.bridge.shared.errors import DispatchError, LimitExceeded
from mcp_celery_bridge.bridge.shared.records import TaskRecord
from mcp_celery_bridge.bridge.shared.registry import Registry
from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.workers import examples
from mcp_celery_bridge.workers.tools import Tool, catalogue
from tests import schema
from tests.client import connect
from tests.inline import InlineWorker
from tests.services import RedisServer, bridge_server, celery_worker, find_tasks


def echo_tool() -> Tool:
    return catalogue()[examples.echo.__name__]


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


@dataclass
class Parts:
    """A registry and a publisher on the test Redis, to record and queue calls directly."""

    settings: Settings
    client: redis.asyncio.Redis
    registry: Registry
    publisher: Publisher

    def new_id(self, owner: str = "session:abc") -> str:
        """A task id in ``owner``'s shard, as the bridge makes them (``Keys.new_id``): with
        shards, the scripts find an owner's other tasks only there."""
        return self.registry.keys.new_id(uuid.uuid4().hex, owner)

    async def create(
        self, task_id: str, celery_id: str, *, tool: str = "echo", owner: str = "session:abc"
    ) -> TaskRecord:
        headers = {"mcp_task_id": task_id, "mcp_owner": owner, "mcp_tool": tool}
        return await self.registry.create(
            task_id=task_id,
            owner=owner,
            tool=tool,
            celery_id=celery_id,
            ttl_ms=60_000,
            queue=self.settings.queue,
            # Any tool name, known or not: the message names the task ``mcp.<tool>``.
            celery_message=self.publisher.inline_message(
                dataclasses.replace(echo_tool(), name=tool), celery_id, {}, headers
            ),
        )


@contextlib.asynccontextmanager
async def parts(settings: Settings, *, private_keys: bool = True) -> AsyncIterator[Parts]:
    """``private_keys``: the settings' key prefix is this test's own: delete its keys after."""
    client = async_client(settings.redis_url)
    publisher = Publisher(settings)
    try:
        yield Parts(settings, client, Registry(settings, client), publisher)
    finally:
        publisher.close()
        if private_keys:
            keys = [k async for k in client.scan_iter(f"{settings.key_prefix}:*")]
            if keys:
                await client.delete(*keys)
        await client.aclose()


@pytest.mark.fast
async def test_the_inline_message_is_the_one_celery_would_publish(settings: Settings) -> None:
    publisher = Publisher(settings)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        assert publisher.inline
        celery_id = str(uuid.uuid4())
        await publisher.publish(echo_tool(), celery_id, ARGUMENTS, HEADERS)
        published = _decoded(client.rpop(settings.queue) or b"")
        ours = _decoded(publisher.inline_message(echo_tool(), celery_id, ARGUMENTS, HEADERS))
    finally:
        publisher.close()
        client.close()
    # Per-message or per-process values (the delivery tag, the producer's name and reply
    # queue) differ; everything a worker or Flower reads is the same.
    for message in (published, ours):
        del message["properties"]["delivery_tag"], message["properties"]["reply_to"]
        assert message["headers"].pop("origin").startswith("gen")
    assert ours == published
    assert ours["body"][1]["arguments"] == ARGUMENTS


@pytest.mark.fast
def test_celerys_own_broker_setting_turns_the_inline_path_off(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workers configured through Celery's environment consume from that broker: a message
    # pushed into the registry's Redis would never run.
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://guest@127.0.0.1//")
    publisher = Publisher(settings)
    try:
        assert not publisher.inline
    finally:
        publisher.close()


@pytest.mark.fast
async def test_a_refused_create_queues_nothing(settings: Settings) -> None:
    limited = settings.model_copy(update={"max_inflight_per_owner": 1})
    async with parts(limited) as p:
        await p.create(p.new_id(), str(uuid.uuid4()))
        with pytest.raises(LimitExceeded):
            await p.create(p.new_id(), str(uuid.uuid4()))
        assert await p.client.llen(limited.queue) == 1


@pytest.mark.timeout(90)
async def test_another_broker_gets_the_call_through_celery(
    env: dict[str, str], log_dir: Path, own_redis: RedisServer
) -> None:
    private = {
        **env,
        "MCP_BRIDGE_BROKER_URL": own_redis.url,
        "MCP_BRIDGE_QUEUE": env["MCP_BRIDGE_QUEUE"] + "-broker",
    }
    with (
        celery_worker(private, log_dir, concurrency=1, name="broker"),
        bridge_server(private, log_dir, "bridge-broker") as url,
    ):
        async with connect(url) as client:
            task = await client.create_task("echo", {"text": "via celery"})
            result = await client.call("tasks/result", {"taskId": task["taskId"]})
    assert result["content"][0]["text"] == "via celery"


@pytest.mark.fast
async def test_a_retried_create_queues_its_message_once(settings: Settings) -> None:
    # redis-py retries a script whose reply was lost to a dropped connection: the second
    # run must find the first one's work done, not queue the call again.
    celery_id = str(uuid.uuid4())
    async with parts(settings) as p:
        task_id = p.new_id()
        first = await p.create(task_id, celery_id)
        again = await p.create(task_id, celery_id)
        assert first.created == again.created
        assert await p.client.llen(settings.queue) == 1


@pytest.mark.timeout(60)
async def test_a_call_no_worker_knows_fails_its_task(
    fast_env: dict[str, str], inline: InlineWorker
) -> None:
    # A bridge that declares a tool its workers lack (a rolling deploy): the worker rejects
    # the unknown Celery task, and the MCP task must fail rather than stay "working".
    env = fast_env
    settings = Settings(
        redis_url=env["MCP_BRIDGE_REDIS_URL"],
        queue=env["MCP_BRIDGE_QUEUE"],
        key_prefix=env["MCP_BRIDGE_KEY_PREFIX"],
    )
    # The worker reads the registry under the session's key prefix: leave its keys be.
    async with parts(settings, private_keys=False) as p:
        task_id = p.new_id("session:unknown")
        await p.create(task_id, str(uuid.uuid4()), tool="gone", owner="session:unknown")
        with anyio.fail_after(30):
            while (record := await p.registry.get(task_id)) is None or not record.status.terminal:
                await anyio.sleep(0.05)
        assert record.status.value == "failed"
        assert "no worker on this queue knows the tool task 'mcp.gone'" in record.message
        # Not a tool result: a JSON-RPC error, so ``failed`` in the 2026-07-28 view too.
        assert record.error is not None and record.error["data"]["reason"] == "unknown_task"
        view = modern.render_task(record)
        assert view["status"] == "failed" and view["error"] == record.error
        schema.check_modern("DetailedTask", view)


@pytest.mark.fast
@pytest.mark.timeout(60)
async def test_a_call_that_cannot_be_queued_fails_with_an_error(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # A broker nobody listens on: the record exists first, then the publish fails.
    down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    async with parts(down) as p:
        assert not p.publisher.inline
        echo = Catalogue.load(down).tool("echo")
        tasks = TaskService(down, p.registry, p.publisher, EventHub(down, p.client))
        with pytest.raises(DispatchError):
            await tasks.start(
                "session:abc", echo, {"text": "x"}, era="legacy", ttl=60_000, listed=True
            )
        [task_id] = find_tasks(redis_client, p.registry.keys)
        record = await p.registry.get(task_id)
    assert record is not None and record.status.value == "failed"
    assert record.error is not None and record.error["data"]["reason"] == "not_queued"
    assert record.result is None
    assert modern.render_task(record)["status"] == "failed"
