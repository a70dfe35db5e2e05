"""The task registry in Redis: the one source of truth about every MCP task.

A task hash (``bridge.shared.keys.Keys.task``) holds:
``id, owner, tool, celery_id, status, message, created, updated`` (ms since the epoch),
``ttl`` and ``poll`` (ms), ``hidden`` ("1" for the record behind a plain tool call, which no
client can fetch), ``listed`` ("1" for a legacy-era task: in its owner's ``tasks/list`` index
and event stream), ``seq`` (list position), ``ptoken`` (the call's ``progressToken`` as JSON)
and ``can_ask`` ("1" when the caller declared elicitation), and once known ``worker``,
``progress`` and ``total``, ``result`` (CallToolResult JSON) and ``error`` (JSON-RPC error
JSON); ``runs`` (how many times a worker started the tool body) and ``holder``
(``<worker> (pid <n>)`` of the latest run) come with the lease (``Keys.leases``) a running
body renews. ``bridge.shared.records`` turns a hash into a ``TaskRecord``.

Every change goes through one Lua script (``bridge/shared/lua``), so a transition, its TTL and its
event are one atomic step, and a terminal status is final.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from importlib.resources import files
from typing import Any, cast

import redis
import redis.asyncio

from bridge.shared import logs
from bridge.shared.errors import InternalError, LimitExceeded, execution_error
from bridge.shared.keys import Keys
from bridge.shared.records import Outcome, Page, TaskRecord, TaskStatus
from bridge.shared.settings import Settings
from bridge.shared.store import translated


def _script(name: str) -> str:
    return files("bridge.shared").joinpath("lua", f"{name}.lua").read_text()


class _Base:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)

    @staticmethod
    def _logged(task_id: str, outcome: Outcome, message: str, level: int = logging.INFO) -> Outcome:
        # Every status change goes through the scripts behind this class, so it is logged
        # here, once, by the process that made it (``bridge.transitions``).
        if outcome.applied and outcome.status is not None:
            logs.transition(
                task_id,
                outcome.status,
                message,
                owner=outcome.owner,
                celery_id=outcome.celery_id,
                tool=outcome.tool,
                level=level,
            )
        return outcome

    def _transition_args(
        self,
        task_id: str,
        owner: str,
        status: TaskStatus,
        message: str,
        result: dict[str, Any] | None,
        error: dict[str, Any] | None,
        worker: str,
        only_if_changed: bool,
        progress: tuple[float, float | None] | None = None,
        input_request: tuple[str, dict[str, Any]] | None = None,
        lease_of: str = "",
        withdraw: str = "",
    ) -> tuple[list[str], list[str | int]]:
        return (
            [self.keys.task(task_id), self.keys.events(owner)],
            [
                status.value,
                message,
                json.dumps(result, separators=(",", ":")) if result is not None else "",
                json.dumps(error, separators=(",", ":")) if error is not None else "",
                worker,
                self.settings.stream_maxlen,
                self.settings.session_ttl_s * 1000,
                self.keys.channel(),
                "1" if only_if_changed else "0",
                repr(float(progress[0])) if progress is not None else "",
                repr(float(progress[1])) if progress and progress[1] is not None else "",
                lease_of,
                input_request[0] if input_request else "",
                json.dumps(input_request[1], separators=(",", ":")) if input_request else "",
                withdraw,
                self.settings.max_bytes_per_owner,
            ],
        )


def _record(reply: list[list[str]]) -> TaskRecord | None:
    """A record from visible.lua's reply."""
    if not reply:
        return None
    flat, inputs = reply
    record = TaskRecord.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))
    for key, value in zip(inputs[::2], inputs[1::2], strict=True):
        record.inputs[key] = json.loads(value)
    return record


class Registry(_Base):
    """The bridge's (asyncio) view of the registry."""

    def __init__(self, settings: Settings, client: redis.asyncio.Redis) -> None:
        super().__init__(settings)
        self.redis = client
        self._create = client.register_script(_script("create"))
        self._answer = client.register_script(_script("answer"))
        self._transition = client.register_script(_script("transition"))
        self._list = client.register_script(_script("list"))

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
    ) -> TaskRecord:
        """Record a task; with ``celery_message``, also push it onto ``queue`` (the Celery
        queue's list in this Redis), in the same atomic step."""
        with translated():
            try:
                created, _seq = await self._create(
                    keys=[
                        self.keys.task(task_id),
                        self.keys.owner_tasks(owner),
                        self.keys.seq(),
                        self.keys.inflight(owner),
                        self.keys.rate(owner, int(time.time() // 60)),
                        queue or self.keys.seq(),  # unused without a message
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
                        "1" if listed and not hidden else "0",
                        self.settings.max_inflight_per_owner,
                        self.settings.max_creates_per_minute,
                        self.keys.task(""),
                        json.dumps(progress_token) if progress_token is not None else "",
                        "1" if can_ask else "0",
                        celery_message,
                        self.settings.max_bytes_per_owner,
                    ],
                )
            except redis.exceptions.ResponseError as exc:
                if str(exc).startswith("LIMIT bytes "):
                    limit = str(exc).split(" ", 2)[2]
                    raise LimitExceeded(
                        f"Storage budget exhausted: this caller's tasks, results and events "
                        f"hold close to {limit} bytes in Redis; try again when finished tasks "
                        "have expired",
                        {"limit": "bytes", "max": int(limit)},
                    ) from None
                if str(exc).startswith("LIMIT "):
                    _, which, limit = str(exc).split(" ", 2)
                    raise LimitExceeded(
                        f"Too many tasks: the limit of {limit} {which.replace('-', ' ')} "
                        "is reached; try again later",
                        {"limit": which, "max": int(limit)},
                    ) from None
                raise InternalError(f"could not create task: {exc}") from exc
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
            listed=listed and not hidden,
            progress_token=progress_token,
            can_ask=can_ask,
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
        return self.redis.register_script(_script("visible"))

    async def visible(self, task_ids: list[str], owners: frozenset[str]) -> list[TaskRecord | None]:
        """Each task's record, with its pending questions, when one of ``owners`` owns it
        (``""`` among them: ownerless tasks too) and it is not hidden; else None. The owner
        is read first, in Redis: another owner's task costs as little as an unknown one.
        One round trip for all of them."""
        if not task_ids:
            return []
        with translated():
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    await self._visible(
                        keys=[self.keys.task(task_id), self.keys.inputs(task_id)],
                        args=sorted(owners),
                        client=pipe,
                    )
                replies = cast(list[list[list[str]]], await pipe.execute())
        return [_record(reply) for reply in replies]

    @functools.cached_property
    def _pending(self) -> redis.commands.core.AsyncScript:
        return self.redis.register_script(_script("pending"))

    async def pending(self, owner: str) -> tuple[str, list[tuple[str, str, dict[str, Any]]]]:
        """The questions pending on ``owner``'s legacy tasks, as (task id, key, request),
        and the id of the owner's latest event then: every question asked later is
        announced after that event."""
        with translated():
            raw = cast(
                list[str],
                await self._pending(
                    keys=[self.keys.asking(owner), self.keys.events(owner)],
                    args=[self.keys.task("")],
                ),
            )
        last, rest = str(raw[0]), raw[1:]
        return last, [
            (str(rest[i]), str(rest[i + 1]), json.loads(rest[i + 2]))
            for i in range(0, len(rest), 3)
        ]

    async def answer(self, task_id: str, key: str, answer: dict[str, Any]) -> bool:
        """Hand ``answer`` to the worker waiting on question ``key``, exactly once: False
        when that question is not pending (unknown, answered, withdrawn, or the task ended)."""
        with translated():
            delivered = await self._answer(
                keys=[self.keys.inputs(task_id), self.keys.answer(task_id, key)],
                args=[key, json.dumps(answer, separators=(",", ":")), 3_600_000],
            )
        return bool(delivered)

    async def transition(
        self,
        record: TaskRecord,
        status: TaskStatus,
        message: str = "",
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> Outcome:
        keys, args = self._transition_args(
            record.id, record.owner, status, message, result, error, "", False
        )
        with translated():
            outcome = Outcome.from_reply(await self._transition(keys=keys, args=args))
        return self._logged(record.id, outcome, message)

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
                args=[after, size, self.keys.task("")],
            )
        last, more, *items = raw
        tasks = [TaskRecord.from_event(json.loads(item)) for item in items]
        return Page(tasks, int(float(last)) if int(more) else None)

    # -- leases (the reaper) ---------------------------------------------------------------
    @functools.cached_property
    def _expired(self) -> redis.commands.core.AsyncScript:
        return self.redis.register_script(_script("expired"))

    async def expired_leases(self, limit: int) -> list[str]:
        """Ids of tasks whose lease expired by the Redis clock, oldest first."""
        with translated():
            raw = await self._expired(keys=[self.keys.leases()], args=[limit])
        return [str(task_id) for task_id in raw]

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
                await self.redis.zrem(self.keys.leases(), task_id)
                return Outcome(False, None, "")
        lost = holder or worker or "unknown worker"
        message = f"worker lost ({lost}): lease expired"
        error = execution_error("worker_lost", message, worker=lost, cause="lease expired")
        keys, args = self._transition_args(
            task_id,
            str(owner),
            TaskStatus.FAILED,
            message,
            None,
            error,
            "",
            False,
            lease_of=task_id,
        )
        with translated():
            raw = await self._transition(keys=[*keys, self.keys.leases()], args=args)
        # A warning: a worker died (or hung) with the task in hand.
        return self._logged(task_id, Outcome.from_reply(raw), message, logging.WARNING)


class SyncRegistry(_Base):
    """The workers' (blocking) view: transitions and the cooperative cancel check."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        super().__init__(settings)
        self.redis = client
        self._transition = client.register_script(_script("transition"))

    def get(self, task_id: str) -> TaskRecord | None:
        with translated():
            h = cast(dict[str, str], self.redis.hgetall(self.keys.task(task_id)))
        return TaskRecord.from_hash(h) if h else None

    def status(self, task_id: str) -> TaskStatus | None:
        with translated():
            raw = self.redis.hget(self.keys.task(task_id), "status")
        return TaskStatus(str(raw)) if raw else None

    def transition(
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
        keys, args = self._transition_args(
            task_id, owner, status, message, result, error, worker, only_if_changed, progress
        )
        with translated():
            outcome = Outcome.from_reply(cast(list[Any], self._transition(keys=keys, args=args)))
        if progress is not None:
            return outcome  # a progress report, not a change of status: no log line
        return self._logged(task_id, outcome, message, log_level)

    # -- questions to the client (input_required) ------------------------------------------
    def ask(
        self, task_id: str, owner: str, key: str, request: dict[str, Any], message: str
    ) -> Outcome:
        """Put the task in ``input_required`` with one more pending question, announced."""
        keys, args = self._transition_args(
            task_id,
            owner,
            TaskStatus.INPUT_REQUIRED,
            message,
            None,
            None,
            "",
            False,
            input_request=(key, request),
        )
        with translated():
            outcome = Outcome.from_reply(cast(list[Any], self._transition(keys=keys, args=args)))
        return self._logged(task_id, outcome, message)

    def wait_answer(self, task_id: str, key: str, timeout_s: float) -> dict[str, Any] | None:
        """The answer to question ``key``, waiting at most ``timeout_s`` (None: no answer)."""
        with translated():
            popped = self.redis.brpop([self.keys.answer(task_id, key)], timeout=timeout_s)
        if not popped:
            return None
        answer: dict[str, Any] = json.loads(cast(list[str], popped)[1])
        return answer

    def withdraw(self, task_id: str, owner: str, key: str, message: str) -> dict[str, Any] | None:
        """Take question ``key`` back, announced (the task is ``working`` with ``message``
        unless other questions are pending); returns instead the answer that came first, if
        one did."""
        keys, args = self._transition_args(
            task_id, owner, TaskStatus.WORKING, message, None, None, "", False, withdraw=key
        )
        with translated():
            outcome = Outcome.from_reply(cast(list[Any], self._transition(keys=keys, args=args)))
            if outcome.applied:
                self._logged(task_id, outcome, message)
                return None
            # Not pending any more: answered (the answer waits in its list), or the task ended.
            raw = self.redis.rpop(self.keys.answer(task_id, key))
        return json.loads(cast(str, raw)) if raw else None

    # -- leases (a running tool body) ------------------------------------------------------
    @functools.cached_property
    def _lease(self) -> redis.commands.core.Script:
        return self.redis.register_script(_script("lease"))

    def take_lease(
        self, task_id: str, owner: str, worker: str, holder: str, lease_ms: int, max_runs: int
    ) -> tuple[TaskStatus | None, int, bool]:
        """Count a run of ``task_id`` by ``holder`` (``<worker> (pid <n>)``), lease it for
        ``lease_ms``, and announce the task ``working`` "running on <holder>": the task's
        status (None when it is gone), its runs so far, and whether the run was refused
        because ``owner`` already runs ``max_running_per_owner`` other tasks. No lease is
        taken for a terminal or missing task, nor for a run beyond ``max_runs``, nor for a
        refused one. One round trip."""
        with translated():
            reply = cast(
                list[Any],
                self._lease(
                    keys=[
                        self.keys.task(task_id),
                        self.keys.leases(),
                        self.keys.events(owner),
                        self.keys.running(owner),
                    ],
                    args=[
                        task_id,
                        lease_ms,
                        holder,
                        max_runs,
                        worker,
                        self.settings.stream_maxlen,
                        self.settings.session_ttl_s * 1000,
                        self.keys.channel(),
                        f"running on {holder}",
                        self.settings.max_running_per_owner,
                        2 * self.settings.task_ttl_max_ms,
                    ],
                ),
            )
        status, runs = (TaskStatus(reply[0]) if reply[0] else None), int(reply[1])
        if len(reply) > 4:  # the owner is at its cap: no run, nothing announced
            return status, runs, True
        if len(reply) > 2:  # the run was announced
            logs.transition(
                task_id,
                TaskStatus.WORKING,
                f"running on {holder}",
                owner=owner,
                celery_id=str(reply[3]),
                tool=str(reply[2]),
                run=runs,
            )
        return status, runs, False

    def renew_lease(self, task_id: str, lease_ms: int) -> TaskStatus | None:
        """Push the lease of ``task_id`` ``lease_ms`` ahead (one round trip); the task's
        status, None when it is gone. A terminal or missing task loses its lease instead."""
        with translated():
            status, _ = cast(
                list[Any],
                self._lease(
                    keys=[self.keys.task(task_id), self.keys.leases()],
                    args=[task_id, lease_ms, "", 0],
                ),
            )
        return TaskStatus(status) if status else None

    def holder(self, task_id: str) -> str | None:
        """``<worker> (pid <n>)`` of the latest run of ``task_id``, once one took its lease."""
        with translated():
            raw = self.redis.hget(self.keys.task(task_id), "holder")
        return str(raw) if raw else None
