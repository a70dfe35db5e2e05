"""The task schema (``bridge.shared.schema``): the Lua scripts load with its prelude, Python
and Lua agree on it, and the scripts spell no status nor build an event of their own."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio

from mcp_celery_bridge.bridge.shared import schema
from mcp_celery_bridge.bridge.shared.clients import async_client
from mcp_celery_bridge.bridge.shared.keys import Keys
from mcp_celery_bridge.bridge.shared.records import TaskRecord, TaskStatus
from mcp_celery_bridge.bridge.shared.registry import Registry
from mcp_celery_bridge.bridge.shared.schema import TaskStatus as SchemaStatus
from mcp_celery_bridge.bridge.shared.scripts import source
from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.bridge.shared.sync_registry import SyncRegistry

pytestmark = [pytest.mark.fast, pytest.mark.anyio, pytest.mark.timeout(30)]

SCRIPTS = sorted(
    p.name.removesuffix(".lua")
    for p in files("mcp_celery_bridge.bridge.shared").joinpath("lua").iterdir()
    if p.name.endswith(".lua")
)


def _lua(name: str) -> str:
    return files("mcp_celery_bridge.bridge.shared").joinpath("lua", f"{name}.lua").read_text()


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_loads_with_the_prelude(redis_client: redis.Redis, name: str) -> None:
    text = source(name)
    assert text.startswith(schema.lua_prelude())
    sha = redis_client.script_load(text)
    assert redis_client.script_exists(sha) == [True]


@pytest.mark.parametrize("name", SCRIPTS)
def test_no_script_spells_a_status_or_builds_an_event(name: str) -> None:
    code = "\n".join(line.split("--", 1)[0] for line in _lua(name).splitlines())
    for status in TaskStatus:
        assert f"'{status.value}'" not in code and f'"{status.value}"' not in code, status
    assert not re.search(r"'(XADD|PUBLISH|TIME)'", code, re.IGNORECASE)
    assert "error_reply('LIMIT" not in code


def test_python_and_lua_agree_on_the_statuses(redis_client: redis.Redis) -> None:
    probe = schema.lua_prelude() + (
        "local terminal, statuses, final = {}, {}, {}\n"
        "for status in pairs(TERMINAL) do terminal[#terminal + 1] = status end\n"
        "for _, status in pairs(STATUS) do statuses[#statuses + 1] = status end\n"
        "table.sort(terminal)\n"
        "table.sort(statuses)\n"
        "for _, status in ipairs(statuses) do\n"
        "  if is_terminal(status) then final[#final + 1] = status end\n"
        "end\n"
        "return {terminal, statuses, final, is_terminal(false) and 1 or 0}\n"
    )
    terminal, statuses, final, gone = redis_client.eval(probe, 0)
    assert terminal == final == sorted(s.value for s in schema.TERMINAL)
    assert statuses == sorted(s.value for s in TaskStatus)
    assert gone == 0
    assert {s for s in TaskStatus if s.terminal} == schema.TERMINAL
    assert TaskStatus is SchemaStatus


def test_task_view_and_refusal_are_the_python_shapes(redis_client: redis.Redis) -> None:
    key = Keys(f"schema-{uuid.uuid4().hex}").task("t1")
    fields = {
        "id": "t1",
        "status": "working",
        "message": "queued",
        "created": "1",
        "updated": "2",
        "ttl": "3",
        "poll": "4",
        "owner": "session:x",
    }
    redis_client.hset(key, mapping=fields)
    try:
        raw = redis_client.eval(
            schema.lua_prelude() + "return cjson.encode(task_view(KEYS[1]))", 1, key
        )
        gone = redis_client.eval(
            schema.lua_prelude() + "return task_view(KEYS[1]) == nil and 1 or 0", 1, key + "x"
        )
    finally:
        redis_client.delete(key)
    view: dict[str, Any] = json.loads(str(raw))
    assert list(sorted(view)) == sorted(name for name, _ in schema.VIEW_FIELDS)
    assert TaskRecord.from_event(view) == TaskRecord(
        id="t1", status=TaskStatus.WORKING, message="queued", created=1, updated=2, ttl=3, poll=4
    )
    assert gone == 1
    refused = redis_client.eval(schema.lua_prelude() + "return refused('bytes', '500')", 0)
    assert schema.refusal(refused) == ("bytes", 500)
    assert schema.refusal([1, 2]) is None and schema.refusal([1, 2, 3]) is None


def test_question_ids_round_trip() -> None:
    request_id = schema.input_request_id("abc_-", "k.1")
    assert request_id == "mcp-input:abc_-:k.1"
    assert schema.parse_input_request_id(request_id) == ("abc_-", "k.1")
    for other in (7, None, "mcp-input:", "mcp-input:abc", "mcp-input::k", "other:abc:k"):
        assert schema.parse_input_request_id(other) is None


# -- a record's life, through both views of the registry ---------------------------------------
@pytest.fixture
async def stores(env: dict[str, str]) -> AsyncIterator[tuple[Registry, SyncRegistry]]:
    settings = Settings(redis_url=env["MCP_BRIDGE_REDIS_URL"], key_prefix=uuid.uuid4().hex)
    client = async_client(settings.redis_url)
    sync = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield Registry(settings, client), SyncRegistry(settings, sync)
    for key in sync.scan_iter(f"{settings.key_prefix}:*"):
        sync.delete(key)
    sync.close()
    await client.aclose()


async def test_a_record_holds_only_schema_fields_and_its_era(
    stores: tuple[Registry, SyncRegistry],
) -> None:
    registry, worker = stores
    owner = "session:schema"
    created = await registry.create(
        task_id=registry.keys.new_id("t" * 32, owner),
        owner=owner,
        tool="echo",
        celery_id="c1",
        ttl_ms=60_000,
        progress_token="tok",
        era="modern",
    )
    assert created.era == "modern" and created.listed
    status, runs, busy = worker.take_lease(created.id, owner, "w1", "w1 (pid 7)", 60_000, 3)
    assert (status, runs, busy) == (TaskStatus.WORKING, 1, False)
    progress = worker.transition(
        created.id, owner, TaskStatus.WORKING, "half", progress=(1, 2), only_if_changed=True
    )
    assert progress.applied
    done = await registry.transition(
        created.id, owner, TaskStatus.COMPLETED, "done", result={"content": []}
    )
    assert done.applied and done.status is TaskStatus.COMPLETED
    late = worker.transition(created.id, owner, TaskStatus.FAILED, "late")
    assert not late.applied and late.status is TaskStatus.COMPLETED

    h = await registry.redis.hgetall(registry.keys.task(created.id))
    assert set(h) <= set(schema.TASK_FIELDS), set(h) - set(schema.TASK_FIELDS)
    record = await registry.get(created.id)
    assert record is not None
    assert (record.era, record.holder, record.worker) == ("modern", "w1 (pid 7)", "w1")

    # The stream carries the run's start with its holder as a field, the message unchanged.
    entries = await registry.redis.xrange(registry.keys.events(owner))
    events = [TaskRecord.from_event(json.loads(f[schema.STREAM_FIELD])) for _, f in entries]
    started = [e for e in events if e.holder]
    assert [(e.holder, e.message) for e in started] == [("w1 (pid 7)", "running on w1 (pid 7)")]
    assert events[-1].status is TaskStatus.COMPLETED and not events[-1].holder

    # Without an era, a listed task is a legacy one and an unlisted one a modern one.
    legacy = await registry.create(
        task_id=registry.keys.new_id("l" * 32, owner),
        owner=owner,
        tool="echo",
        celery_id="c2",
        ttl_ms=60_000,
    )
    plain = await registry.create(
        task_id=registry.keys.new_id("p" * 32, owner),
        owner=owner,
        tool="echo",
        celery_id="c3",
        ttl_ms=60_000,
        hidden=True,
    )
    assert (legacy.era, plain.era) == ("legacy", "modern")
    for task_id, era in ((legacy.id, "legacy"), (plain.id, "modern")):
        stored = await registry.get(task_id)
        assert stored is not None and stored.era == era


async def test_a_lost_run_is_failed_once_and_leaves_no_lease(
    stores: tuple[Registry, SyncRegistry],
) -> None:
    registry, worker = stores
    owner = "session:lost"
    task = await registry.create(
        task_id=registry.keys.new_id("x" * 32, owner),
        owner=owner,
        tool="sleep",
        celery_id="c1",
        ttl_ms=60_000,
    )
    assert worker.take_lease(task.id, owner, "w1", "w1 (pid 9)", 1, 3)[:2] == (
        TaskStatus.WORKING,
        1,
    )
    with anyio.fail_after(5):
        while await registry.expired_leases(10) != [task.id]:
            await anyio.sleep(0.01)
    lost = await registry.fail_lost(task.id)
    assert lost.applied and lost.status is TaskStatus.FAILED
    assert not (await registry.fail_lost(task.id)).applied
    record = await registry.get(task.id)
    assert record is not None and record.error is not None
    assert record.error["data"]["worker"] == "w1 (pid 9)"
    assert await registry.redis.zrange(registry.keys.leases_of(task.id), 0, -1) == []
    assert await registry.redis.zrange(registry.keys.running(owner), 0, -1) == []


async def test_only_an_owner_answers_a_question_even_on_a_hidden_record(
    stores: tuple[Registry, SyncRegistry],
) -> None:
    registry, worker = stores
    owner = "session:asker"
    plain = await registry.create(
        task_id=registry.keys.new_id("q" * 32, owner),
        owner=owner,
        tool="confirm",
        celery_id="c",
        ttl_ms=60_000,
        hidden=True,
    )
    request = {"method": "elicitation/create", "params": {"message": "sure?"}}
    assert worker.ask(plain.id, owner, "k1", request, "asking").applied
    # Another owner (or an ownerless caller) cannot answer, and the question stays pending.
    refused = await registry.answer(plain.id, "k1", {"action": "accept"}, frozenset({"", "b"}))
    assert refused is False
    record = await registry.get(plain.id)
    assert record is not None and set(record.inputs) == {"k1"}
    # The owner can, once.
    answer = {"action": "accept", "content": {"ok": True}}
    assert await registry.answer(plain.id, "k1", answer, frozenset({"", owner})) is True
    assert await registry.answer(plain.id, "k1", answer, frozenset({"", owner})) is False
    assert worker.wait_answer(plain.id, "k1", 1) == answer


def test_any_text_survives_as_a_lua_string(redis_client: redis.Redis) -> None:
    # The prelude's strings come from Python constants: whatever they hold, Lua reads back
    # exactly that (a newline or a quote would otherwise break every script).
    for value in ["a\nb", "it's", "back\\slash", "é ✓", "\r\t\0", ""]:
        assert redis_client.eval(f"return {schema._lua_string(value)}", 0) == value


async def test_a_change_naming_another_owner_than_the_tasks_changes_nothing(
    stores: tuple[Registry, SyncRegistry],
) -> None:
    # The owner's keys come from the caller (declared KEYS, as a Cluster needs): a caller
    # naming the wrong owner must not charge, notify or lease for that owner.
    registry, worker = stores
    owner, other = "session:right", "session:wrong"
    task = await registry.create(
        task_id=registry.keys.new_id("o" * 32, owner),
        owner=owner,
        tool="echo",
        celery_id="c1",
        ttl_ms=60_000,
    )
    assert worker.take_lease(task.id, other, "w1", "w1 (pid 1)", 60_000, 3) == (None, 0, False)
    assert not await registry.redis.exists(registry.keys.running(other))
    wrong = worker.transition(task.id, other, TaskStatus.COMPLETED, "done", result={"content": []})
    assert not wrong.applied and wrong.status is TaskStatus.WORKING
    assert not await registry.redis.exists(registry.keys.events(other))
    assert not await registry.redis.exists(registry.keys.usage(other))
    # The task's own owner still can.
    assert worker.take_lease(task.id, owner, "w1", "w1 (pid 1)", 60_000, 3)[:2] == (
        TaskStatus.WORKING,
        1,
    )
    right = await registry.transition(task.id, owner, TaskStatus.COMPLETED, "done")
    assert right.applied and right.status is TaskStatus.COMPLETED


async def test_a_retried_run_releases_its_lease_only_while_no_later_run_holds_it(
    stores: tuple[Registry, SyncRegistry],
) -> None:
    registry, worker = stores
    owner = "session:retry"
    task = await registry.create(
        task_id=registry.keys.new_id("r" * 32, owner),
        owner=owner,
        tool="echo",
        celery_id="c1",
        ttl_ms=60_000,
    )
    assert worker.take_lease(task.id, owner, "w1", "w1 (pid 1)", 60_000, 5)[1] == 1
    # The retry's next run (a countdown of 0) took the lease before the first one let go.
    assert worker.take_lease(task.id, owner, "w1", "w1 (pid 2)", 60_000, 5)[1] == 2
    assert not worker.release_lease(task.id, owner, 1)
    assert await registry.redis.zscore(registry.keys.leases_of(task.id), task.id) is not None
    assert await registry.redis.zscore(registry.keys.running(owner), task.id) is not None
    assert worker.release_lease(task.id, owner, 2)
    assert await registry.redis.zscore(registry.keys.leases_of(task.id), task.id) is None
    assert await registry.redis.zscore(registry.keys.running(owner), task.id) is None


async def test_an_owners_tasks_are_numbered_in_order_even_after_its_counter_is_lost(
    stores: tuple[Registry, SyncRegistry],
) -> None:
    # Tasks are numbered per owner (no deployment-wide counter); a counter that expired,
    # or a list made by the old deployment-wide one, goes on from the owner's last task.
    registry, _ = stores
    owner = "session:order"

    async def create(n: int) -> str:
        record = await registry.create(
            task_id=registry.keys.new_id(f"{n:032d}", owner),
            owner=owner,
            tool="echo",
            celery_id=f"c{n}",
            ttl_ms=60_000,
        )
        return record.id

    first = [await create(n) for n in range(3)]
    other = await registry.create(
        task_id=registry.keys.new_id("o" * 32, "session:other"),
        owner="session:other",
        tool="echo",
        celery_id="co",
        ttl_ms=60_000,
    )
    assert int(await registry.redis.hget(registry.keys.task(other.id), "seq")) == 1
    # As an upgrade finds it: the list numbered far ahead, no counter of the owner's.
    await registry.redis.zadd(registry.keys.owner_tasks(owner), {first[-1]: 500})
    await registry.redis.delete(registry.keys.owner_seq(owner))
    later = await create(3)
    assert int(await registry.redis.hget(registry.keys.task(later), "seq")) == 501
    page = await registry.list_page(owner, 0, 10)
    assert [t.id for t in page.tasks] == [*first, later]
