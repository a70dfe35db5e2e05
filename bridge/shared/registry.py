"""The bridge's (asyncio) view of the task registry in Redis, the one source of truth about
every MCP task: the Redis implementation of ``bridge.shared.store.TaskStore``.

The task hash's fields are declared in ``bridge.shared.schema``; ``bridge.shared.records``
turns a hash into a ``TaskRecord``. Every change goes through one Lua script
(``bridge/shared/lua``), so a transition, its TTL and its event are one atomic step, and a
terminal status is final. The workers' side is ``bridge.shared.sync_registry``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from typing import Any, cast

import redis
import redis.asyncio

from mcp_celery_bridge.bridge.shared import logs
from mcp_celery_bridge.bridge.shared.clients import AsyncRedis, translated
from mcp_celery_bridge.bridge.shared.errors import InternalError, LimitExceeded, execution_error
from mcp_celery_bridge.bridge.shared.flows import Parts, parts
from mcp_celery_bridge.bridge.shared.keys import Keys
from mcp_celery_bridge.bridge.shared.records import Outcome, Page, TaskRecord, TaskStatus
from mcp_celery_bridge.bridge.shared.schema import refusal
from mcp_celery_bridge.bridge.shared.scripts import compact, logged, source, transition_args
from mcp_celery_bridge.bridge.shared.settings import Settings


def _record(reply: list[list[str]]) -> TaskRecord | None:
    """A record from visible.lua's reply."""
    if not reply:
        return None
    flat, inputs = reply
    record = TaskRecord.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))
    for key, value in zip(inputs[::2], inputs[1::2], strict=True):
        record.inputs[key] = json.loads(value)
    return record


def _limit_exceeded(which: str, most: int) -> LimitExceeded:
    if which == "bytes":
        return LimitExceeded(
            f"Storage budget exhausted: this caller's tasks, results and events hold close "
            f"to {most} bytes in Redis; try again when finished tasks have expired",
            {"limit": which, "max": most},
        )
    return LimitExceeded(
        f"Too many tasks: the limit of {most} {which.replace('-', ' ')} is reached; "
        "try again later",
        {"limit": which, "max": most},
    )


class Registry:
    """The bridge's (asyncio) view of the registry."""

    def __init__(self, settings: Settings, client: AsyncRedis) -> None:
        self.settings = settings
        self.keys = Keys.of(settings)
        self.redis = client
        self._create = client.register_script(source("create"))
        self._answer = client.register_script(source("answer"))
        self._transition = client.register_script(source("transition"))
        self._list = client.register_script(source("list"))

    async def create(
        self,
        *,
        task_id: str,
        owner: str,
        tool: str,
        celery_id: str,
        ttl_ms: int,
        hidden: bool = False,
        listed: bool = True,
        message: str = "",
        progress_token: str | int | None = None,
        can_ask: bool = False,
        queue: str = "",
        celery_message: bytes = b"",
        era: str = "",
    ) -> TaskRecord:
        """Record a task; with ``celery_message``, also push it onto ``queue`` (the Celery
        queue's list in this Redis), in the same atomic step. ``era`` is the protocol era
        that made it ("legacy" or "modern"); without it, a listed task is a legacy one."""
        listed = listed and not hidden
        era = era or ("legacy" if listed else "modern")
        with translated():
            try:
                reply = await self._create(
                    keys=[
                        self.keys.task(task_id),
                        self.keys.owner_tasks(owner),
                        self.keys.owner_seq(owner),
                        self.keys.inflight(owner),
                        self.keys.rate(owner, int(time.time() // 60)),
                        # Unused without a message (never so on a Cluster, which holds no
                        # broker): a key of the same slot.
                        queue or self.keys.owner_seq(owner),
                        self.keys.usage(owner),
                        self.keys.usage_expiry(owner),
                    ],
                    args=[
                        task_id,
                        owner,
                        tool,
                        celery_id,
                        ttl_ms,
                        self.settings.poll_interval_ms,
                        "1" if hidden else "0",
                        message,
                        self.settings.task_ttl_max_ms * 2,
                        "1" if listed else "0",
                        self.settings.max_inflight_per_owner,
                        self.settings.max_creates_per_minute,
                        self.keys.task_prefix(owner),
                        json.dumps(progress_token) if progress_token is not None else "",
                        "1" if can_ask else "0",
                        celery_message,
                        self.settings.max_bytes_per_owner,
                        era,
                    ],
                )
            except redis.exceptions.ResponseError as exc:
                raise InternalError(f"could not create task: {exc}") from exc
        refused = refusal(reply)
        if refused is not None:
            raise _limit_exceeded(*refused)
        created = reply[0]
        if celery_id:  # a task that will run (one made only to report a failure is not)
            logs.transition(
                task_id, TaskStatus.WORKING, message, owner=owner, celery_id=celery_id, tool=tool
            )
        return TaskRecord(
            id=task_id,
            status=TaskStatus.WORKING,
            message=message,
            created=int(created),
            updated=int(created),
            ttl=ttl_ms,
            poll=self.settings.poll_interval_ms,
            owner=owner,
            tool=tool,
            celery_id=celery_id,
            hidden=hidden,
            listed=listed,
            progress_token=progress_token,
            can_ask=can_ask,
            era=era,
        )

    async def get(self, task_id: str) -> TaskRecord | None:
        """The record, with its pending questions (one round trip)."""
        with translated():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.task(task_id))
                pipe.hgetall(self.keys.inputs(task_id))
                h, inputs = cast(list[dict[str, str]], await pipe.execute())
        if not h:
            return None
        record = TaskRecord.from_hash(h)
        if inputs:
            record.inputs.update({key: json.loads(value) for key, value in inputs.items()})
        return record

    @functools.cached_property
    def _visible(self) -> redis.commands.core.AsyncScript:
        return self.redis.register_script(source("visible"))

    async def visible(self, task_ids: list[str], owners: frozenset[str]) -> list[TaskRecord | None]:
        """Each task's record, with its pending questions, when one of ``owners`` owns it
        (``""`` among them: ownerless tasks too) and it is not hidden; else None. The owner
        is read first, in Redis: another owner's task costs as little as an unknown one.
        One round trip for all of them."""
        if not task_ids:
            return []
        args = sorted(owners)
        with translated():
            if isinstance(self.redis, redis.asyncio.RedisCluster):
                # A Cluster pipelines no scripts: concurrent calls, each to its slot's node.
                replies = await asyncio.gather(
                    *[
                        self._visible(
                            keys=[self.keys.task(task_id), self.keys.inputs(task_id)], args=args
                        )
                        for task_id in task_ids
                    ]
                )
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for task_id in task_ids:
                        await self._visible(
                            keys=[self.keys.task(task_id), self.keys.inputs(task_id)],
                            args=args,
                            client=pipe,
                        )
                    replies = await pipe.execute()
        return [_record(cast(list[list[str]], reply)) for reply in replies]

    @functools.cached_property
    def _pending(self) -> redis.commands.core.AsyncScript:
        return self.redis.register_script(source("pending"))

    async def pending(self, owner: str) -> tuple[str, list[tuple[str, str, dict[str, Any]]]]:
        """The questions pending on ``owner``'s legacy tasks, as (task id, key, request),
        and the id of the owner's latest event then: every question asked later is
        announced after that event."""
        with translated():
            raw = cast(
                list[str],
                await self._pending(
                    keys=[self.keys.asking(owner), self.keys.events(owner)],
                    args=[self.keys.task_prefix(owner)],
                ),
            )
        last, rest = str(raw[0]), raw[1:]
        return last, [
            (str(rest[i]), str(rest[i + 1]), json.loads(rest[i + 2]))
            for i in range(0, len(rest), 3)
        ]

    async def answer(
        self,
        task_id: str,
        key: str,
        answer: dict[str, Any],
        owners: frozenset[str] | None = None,
    ) -> bool:
        """Hand ``answer`` to the worker waiting on question ``key``, exactly once: False
        when that question is not pending (unknown, answered, withdrawn, or the task ended),
        or when ``owners`` are given and none of them owns the task (checked first, in
        Redis, hidden records included)."""
        with translated():
            delivered = await self._answer(
                keys=[
                    self.keys.inputs(task_id),
                    self.keys.answer(task_id, key),
                    self.keys.task(task_id),
                ],
                args=[key, compact(answer), 3_600_000, *sorted(owners or ())],
            )
        return bool(delivered)

    async def transition(
        self,
        task_id: str,
        owner: str,
        status: TaskStatus,
        message: str = "",
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        worker: str = "",
        only_if_changed: bool = False,
        progress: tuple[float, float | None] | None = None,
        log_level: int = logging.INFO,
    ) -> Outcome:
        """Move ``task_id`` (of ``owner``) to ``status`` and announce it, unless it is
        terminal already (see transition.lua for what each argument does)."""
        keys, args = transition_args(
            self.settings,
            self.keys,
            task_id,
            owner,
            status,
            message,
            result=result,
            error=error,
            worker=worker,
            only_if_changed=only_if_changed,
            progress=progress,
        )
        with translated():
            outcome = Outcome.from_reply(await self._transition(keys=keys, args=args))
        if progress is not None:
            return outcome  # a progress report, not a change of status: no log line
        return logged(task_id, outcome, message, log_level)

    async def remember_call(self, owner: str, request_id: str | int, task_id: str) -> None:
        """Map a plain call's JSON-RPC id to its hidden task, for ``notifications/cancelled``."""
        key = self.keys.call(owner, json.dumps(request_id))
        with translated():
            await self.redis.set(key, task_id, px=self.settings.task_ttl_max_ms)

    async def find_call(self, owner: str, request_id: str | int) -> str | None:
        with translated():
            found = await self.redis.get(self.keys.call(owner, json.dumps(request_id)))
        return str(found) if found else None

    async def forget_call(self, owner: str, request_id: str | int) -> None:
        with translated():
            await self.redis.delete(self.keys.call(owner, json.dumps(request_id)))

    async def list_page(self, owner: str, after: int, size: int) -> Page:
        with translated():
            raw = await self._list(
                keys=[self.keys.owner_tasks(owner)],
                args=[after, size, self.keys.task_prefix(owner)],
            )
        last, more, *items = raw
        tasks = [TaskRecord.from_event(json.loads(item)) for item in items]
        return Page(tasks, int(float(last)) if int(more) else None)

    # -- leases (the reaper) ---------------------------------------------------------------
    @functools.cached_property
    def _expired(self) -> redis.commands.core.AsyncScript:
        return self.redis.register_script(source("expired"))

    async def expired_leases(self, limit: int) -> list[str]:
        """Ids of tasks whose lease expired by the Redis clock, oldest first in each shard,
        at most ``limit`` of each."""
        with translated():
            replies = await asyncio.gather(
                *[
                    self._expired(keys=[self.keys.leases(shard)], args=[limit])
                    for shard in range(self.keys.shards)
                ]
            )
        return [str(task_id) for raw in replies for task_id in raw]

    async def workflow_parts(self, task_id: str) -> Parts:
        with translated():
            book = cast(dict[str, str], await self.redis.hgetall(self.keys.flow(task_id)))
        return parts(book)

    async def running_by_worker(self) -> dict[str, int]:
        """How many tasks each worker runs now, by the leases its runs hold (registry-wide:
        every bridge sees the same). Two round trips, the second as large as the fleet's
        running tasks."""
        with translated():
            async with self.redis.pipeline(transaction=False) as pipe:
                for shard in range(self.keys.shards):
                    pipe.zrange(self.keys.leases(shard), 0, -1)
                sets = cast(list[list[str]], await pipe.execute())
            task_ids = [task_id for leases in sets for task_id in leases]
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.hget(self.keys.task(task_id), "worker")
                workers = cast(list[str | None], await pipe.execute())
        counts: dict[str, int] = {}
        for worker in workers:
            name = worker or "unknown"
            counts[name] = counts.get(name, 0) + 1
        return counts

    async def fail_lost(self, task_id: str) -> Outcome:
        """Fail ``task_id`` because its worker stopped renewing its lease, naming that worker.
        Applies only while the lease is still expired and the task not terminal (a renewal
        or another bridge may have come first); the expired lease is dropped either way."""
        with translated():
            owner, holder, worker = cast(
                list[str | None],
                await self.redis.hmget(self.keys.task(task_id), ["owner", "holder", "worker"]),
            )
            if owner is None:
                # The record expired under a lease that was never released: drop the lease.
                await self.redis.zrem(self.keys.leases_of(task_id), task_id)
                return Outcome(False, None, "")
        lost = holder or worker or "unknown worker"
        message = f"worker lost ({lost}): lease expired"
        error = execution_error("worker_lost", message, worker=lost, cause="lease expired")
        keys, args = transition_args(
            self.settings,
            self.keys,
            task_id,
            str(owner),
            TaskStatus.FAILED,
            message,
            error=error,
            lease_of=task_id,
        )
        with translated():
            raw = await self._transition(keys=keys, args=args)
        # A warning: a worker died (or hung) with the task in hand.
        return logged(task_id, Outcome.from_reply(raw), message, logging.WARNING)
