"""The task service: every task operation the protocol eras need (start a tool call on a
worker, run a plain call to its end, find, cancel, answer a question, list a page, wait),
over the registry and the publisher. The era adapters call nothing below it; each renders
the records it returns its own way.

It checks who may see a task (``sees``) before anything of the task is read, and it is told
the era of every task it starts (for metrics now, for the record once the store keeps it).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from mcp_celery_bridge.bridge.audit import audit
from mcp_celery_bridge.bridge.calls import Call
from mcp_celery_bridge.bridge.events import EventHub, Subscription
from mcp_celery_bridge.bridge.metrics import Metrics
from mcp_celery_bridge.bridge.publisher import Publisher
from mcp_celery_bridge.bridge.shared import logs
from mcp_celery_bridge.bridge.shared.errors import (
    BridgeError,
    InvalidParams,
    JsonRpcError,
    execution_error,
)
from mcp_celery_bridge.bridge.shared.keys import Keys
from mcp_celery_bridge.bridge.shared.records import Page, TaskRecord, TaskStatus
from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.bridge.shared.store import TaskStore
from mcp_celery_bridge.workers.tools import Tool

log = logging.getLogger(__name__)

#: A waiter re-reads the registry at least this often, in case a pub/sub message was lost.
WAIT_RECHECK_S = 5.0
#: Shortest retention a client may ask for: a result must outlive the request that made it.
MIN_TTL_MS = 1_000
#: Longest a create waits to hear its owner's events for the metrics (one round trip, or
#: none when held already); past it the task goes uncounted rather than wait for pub/sub.
METRICS_HOLD_S = 2.0
#: The form of every task id ``new_task_id`` makes. Anything else is unknown before Redis is
#: asked: an id shaped like a sub-key (``<id>:inputs``) must not read another key.
TASK_ID = re.compile(r"^[A-Za-z0-9_-]{32}(\.[0-9]{1,4})?\Z")


def sees(call: Call) -> frozenset[str]:
    """The owners whose tasks ``call`` may see: its own, ownerless tasks (made statelessly
    without authentication: their unguessable id is the capability), and the legacy session
    a stateless request names. A caller without an owner sees only ownerless tasks: a
    session's task is not reachable by its id alone."""
    return frozenset({call.owner, "", call.session.owner if call.session else ""})


def new_task_id(keys: Keys, owner: str) -> str:
    """192 random bits, URL-safe: the id cannot be guessed. Never starting with "-", so a
    command line never takes it for an option. With shards, ``.<n>`` names ``owner``'s."""
    while (task_id := secrets.token_urlsafe(24)).startswith("-"):
        pass
    return keys.new_id(task_id, owner)


class TaskService:
    def __init__(
        self,
        settings: Settings,
        registry: TaskStore,
        publisher: Publisher,
        hub: EventHub,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.settings = settings
        self.registry = registry
        self.publisher = publisher
        self.hub = hub
        self.keys = Keys.of(settings)

    def ttl(self, requested: Any) -> int:
        """The retention of a task whose client asked for ``requested`` ms (None: default)."""
        if requested is None:
            return self.settings.task_ttl_default_ms
        if isinstance(requested, bool) or not isinstance(requested, int | float) or requested < 0:
            raise InvalidParams("task.ttl must be a non-negative number of milliseconds")
        return int(min(max(requested, MIN_TTL_MS), self.settings.task_ttl_max_ms))

    # -- starting --------------------------------------------------------------------------
    async def start(
        self,
        owner: str,
        declared: Tool,
        arguments: dict[str, Any],
        *,
        era: str,
        ttl: int,
        listed: bool,
        hidden: bool = False,
        progress_token: str | int | None = None,
        can_ask: bool = False,
        task_id: str | None = None,
    ) -> TaskRecord:
        """Record the task, then publish it: the record exists before any worker can run it.
        (With the broker in the registry's Redis, both are one step: ``bridge.publisher``.)
        ``era`` names the protocol era of the request that starts it (legacy | modern)."""
        task_id = task_id or new_task_id(self.keys, owner)
        celery_id = str(uuid.uuid4())
        headers = {"mcp_task_id": task_id, "mcp_owner": owner, "mcp_tool": declared.name}
        if declared.workflow:
            # The worker follows the canvas whose result id the task returns.
            headers["mcp_workflow"] = "1"
        inline = self.publisher.inline
        message = b""
        if inline:
            message = self.publisher.inline_message(declared, celery_id, arguments, headers)
        # The metrics follow the task to its end: its owner's events are heard from before
        # it exists, so not even its first event can be missed. Best effort: a listener that
        # cannot subscribe now (Redis pub/sub reconnecting) costs this task its figures, not
        # its creation.
        followed = self.metrics is not None and await self._hold_briefly(owner)
        if followed and self.metrics is not None:
            self.metrics.follow(task_id, declared.name, owner)
        try:
            record = await self.registry.create(
                task_id=task_id,
                owner=owner,
                tool=declared.name,
                celery_id=celery_id,
                ttl_ms=ttl,
                hidden=hidden,
                listed=listed,
                message="queued",
                progress_token=progress_token,
                can_ask=can_ask,
                era=era,
                queue=self.publisher.queue if inline else "",
                celery_message=message,
            )
            if not inline:
                try:
                    await self.publisher.publish(declared, celery_id, arguments, headers)
                except BridgeError as exc:
                    await self._unpublished(record, exc)
                    raise
        except BaseException:
            if followed and self.metrics is not None:
                self.metrics.unfollow(task_id)
            raise
        if self.metrics is not None:
            self.metrics.task_created(declared.name, era)
        logs.annotate(task=task_id, celery_id=celery_id)
        return record

    async def _hold_briefly(self, owner: str) -> bool:
        """Hold ``owner``'s events for the metrics, waiting at most ``METRICS_HOLD_S``."""
        try:
            async with asyncio.timeout(METRICS_HOLD_S):
                await self.hub.hold(owner)
        except (TimeoutError, BridgeError):
            return False
        return True

    async def _unpublished(self, record: TaskRecord, exc: BridgeError) -> None:
        # The client reads this error: the broker's own words (its address) stay in the log.
        told = exc.public if isinstance(exc, JsonRpcError) else "Internal error"
        log.warning("task %s not queued: %s", record.id, exc)
        error = execution_error("not_queued", f"the call could not be queued: {told}")
        if isinstance(exc, JsonRpcError):
            error["code"] = exc.code
        await self.registry.transition(
            record.id, record.owner, TaskStatus.FAILED, error["message"], error=error
        )

    async def failed(
        self,
        owner: str,
        declared: Tool,
        result: dict[str, Any],
        *,
        era: str,
        ttl: int,
        listed: bool,
    ) -> TaskRecord:
        """A task that exists only to report ``result`` (a tool error); nothing is queued."""
        record = await self.registry.create(
            task_id=new_task_id(self.keys, owner),
            owner=owner,
            tool=declared.name,
            celery_id="",
            ttl_ms=ttl,
            listed=listed,
            era=era,
        )
        message = result["content"][0]["text"]
        await self.registry.transition(
            record.id, record.owner, TaskStatus.FAILED, message, result=result
        )
        if self.metrics is not None:  # created, if only to say why it cannot run
            self.metrics.created.labels(declared.name, era).inc()
        logs.annotate(task=record.id)
        return await self.registry.get(record.id) or record

    # -- plain calls -----------------------------------------------------------------------
    async def run_plain(
        self,
        owner: str,
        declared: Tool,
        arguments: dict[str, Any],
        request_id: Any = None,
        on_change: Callable[[TaskRecord], None] | None = None,
        *,
        era: str,
        can_ask: bool = False,
    ) -> TaskRecord:
        """Run a tool call on a worker and wait for its end, calling ``on_change`` with each
        change the worker announces (its progress reports, every one of them). If the caller
        goes away (cancellation of this coroutine), the work is cancelled: nobody could fetch
        it."""
        task_id = new_task_id(self.keys, owner)
        async with self.subscribe(frozenset({task_id}), frozenset({owner})) as events:
            # Subscribed before the call is queued: no report can come before we listen.
            record = await self.start(
                owner,
                declared,
                arguments,
                era=era,
                ttl=self.settings.plain_call_ttl_ms,
                listed=False,
                hidden=True,
                task_id=task_id,
                can_ask=can_ask,
            )
            return await self._follow(record, events, request_id, on_change)

    async def _follow(
        self,
        record: TaskRecord,
        events: Subscription,
        request_id: Any,
        on_change: Callable[[TaskRecord], None] | None,
    ) -> TaskRecord:
        owner = record.owner
        if request_id is not None:
            await self.registry.remember_call(owner, request_id, record.id)
        try:
            while on_change is not None and not events.dropped:
                try:
                    event = await asyncio.wait_for(events.get(), WAIT_RECHECK_S)
                except TimeoutError:
                    event = None  # re-read, in case an announcement was lost
                if event is not None:
                    on_change(event.task)  # a terminal one too: it may withdraw questions
                    if not event.task.status.terminal:
                        continue
                final = await self.registry.get(record.id)
                if final is None:
                    raise InvalidParams(f"Task not found: {record.id}")
                if final.status.terminal:
                    return final
            # Not following changes (or the event stream broke): wait for the end.
            return await self.wait_terminal(record)
        except asyncio.CancelledError:
            await asyncio.shield(self.cancel(record, "the client disconnected"))
            raise
        finally:
            if request_id is not None:
                await asyncio.shield(self.registry.forget_call(owner, request_id))

    async def cancel_plain_call(self, owner: str, request_id: Any, reason: str) -> None:
        """``notifications/cancelled`` for a running plain call."""
        task_id = await self.registry.find_call(owner, request_id)
        record = await self.registry.get(task_id) if task_id else None
        if record is not None and record.owner == owner and not record.status.terminal:
            await self.cancel(record, reason)

    # -- finding ---------------------------------------------------------------------------
    async def find(self, call: Call, task_id: str) -> TaskRecord:
        """The task ``call`` may see, else "not found" (-32602): another owner's task answers
        exactly like an unknown one, so existence does not leak (nor does its size: the owner
        is checked before the record is read)."""
        (record,) = await self.find_many(call, [task_id])
        if record is None:
            raise InvalidParams(f"Task not found: {task_id[:128]}")
        return record

    async def find_many(self, call: Call, task_ids: list[str]) -> list[TaskRecord | None]:
        """``find`` for several ids in one round trip: None for each one ``call`` may not
        see; a single audit line names them."""
        records = await self._visible(call, task_ids)
        refused = [t[:128] for t, r in zip(task_ids, records, strict=True) if r is None]
        if refused:
            audit("task.lookup_failed", call, task=refused[0], refused=len(refused))
        return records

    async def _visible(self, call: Call, task_ids: list[str]) -> list[TaskRecord | None]:
        wellformed = [t for t in task_ids if TASK_ID.match(t)]
        visible = await self.registry.visible(wellformed, sees(call))
        found = dict(zip(wellformed, visible, strict=True))
        return [found.get(task_id) for task_id in task_ids]

    async def current(self, task_id: str) -> TaskRecord | None:
        """A task's record as it is now, for an id its caller was already allowed to follow
        (``find``, a sealed request state, a subscription made after ``find_many``)."""
        return await self.registry.get(task_id)

    async def list_page(self, owner: str, after: int) -> Page:
        """One page of ``owner``'s listed tasks, in creation order, after position ``after``."""
        return await self.registry.list_page(owner, after, self.settings.page_size)

    def subscribe(
        self, task_ids: frozenset[str], owners: frozenset[str]
    ) -> AbstractAsyncContextManager[Subscription]:
        """The changes of these tasks (whose owners are among ``owners``), from now on, as
        announced by the workers."""
        return self.hub.subscribe_tasks(task_ids, owners)

    # -- questions -------------------------------------------------------------------------
    async def pending(self, owner: str) -> tuple[str, list[tuple[str, str, dict[str, Any]]]]:
        """The questions pending on ``owner``'s listed tasks, and the owner's latest event id
        then (``Registry.pending``)."""
        return await self.registry.pending(owner)

    async def answer(self, call: Call, task_id: str, key: str, response: dict[str, Any]) -> bool:
        """Hand ``response`` to question ``key`` of a task ``call`` may answer, exactly once;
        False when it may not, or the question is not pending. The owner is checked in Redis
        before anything of the task is read, the hidden record of a plain call included."""
        if not TASK_ID.match(task_id):
            return False
        return await self.registry.answer(task_id, key, response, sees(call))

    async def deliver(self, task_id: str, key: str, response: dict[str, Any]) -> bool:
        """``answer`` for a task its caller was already allowed to answer (found, or named
        by a sealed request state)."""
        return await self.registry.answer(task_id, key, response)

    # -- ending ----------------------------------------------------------------------------
    async def cancel(self, record: TaskRecord, message: str) -> TaskRecord:
        """Mark the task cancelled, then stop its work. Returns the record as it ends up
        (a task that finished first keeps its terminal status)."""
        # Cancel before revoke: the registry says `cancelled` before anything else happens,
        # so a worker that receives the message later drops it by its own check.
        await self.registry.transition(record.id, record.owner, TaskStatus.CANCELLED, message)
        final = await self.registry.get(record.id) or record
        if final.status is TaskStatus.CANCELLED and record.celery_id:
            # Terminate only a task a worker has started (its prerun named the worker before
            # our transition, or it never will: a later start sees `cancelled` and drops the
            # task). Terminating one that has not started would kill a pool process that is
            # about to drop it anyway, and the pool replaces killed processes slowly.
            started = bool(final.worker)
            try:
                await self.publisher.revoke(record.celery_id, terminate=started)
            except BridgeError:
                log.warning("revoke of %s not broadcast; the worker check drops it", record.id)
            try:
                # On its own: a failed broadcast for the root must not spare started parts.
                await self._revoke_parts(record)
            except BridgeError:
                log.warning("revoke of the parts of %s not broadcast", record.id)
        return final

    async def _revoke_parts(self, record: TaskRecord) -> None:
        """Revoke the Celery tasks of the workflow the task started (``workers.workflows``):
        terminate the started ones, drop the others when they reach a worker. A part
        recorded or started after this read finds the task cancelled and does not run."""
        parts = await self.registry.workflow_parts(record.id)
        if parts.started:
            await self.publisher.revoke(parts.started, terminate=True)
        if parts.waiting:
            await self.publisher.revoke(parts.waiting, terminate=False)

    async def wait_terminal(self, task: TaskRecord) -> TaskRecord:
        """``task`` (as found earlier) once it has ended."""
        task_id = task.id
        while True:
            async with self.hub.watch(task_id, task.owner) as changed:
                record = await self.registry.get(task_id)
                if record is None:
                    raise InvalidParams(f"Task not found: {task_id}")
                if record.status.terminal:
                    return record
                try:
                    await asyncio.wait_for(changed.wait(), WAIT_RECHECK_S)
                except TimeoutError:
                    pass
