"""Task events: one Redis pub/sub listener per bridge process fans out to the open SSE
streams of this process through bounded queues, and wakes local waiters (``tasks/result``,
plain tool calls).

Every announced transition is also in the owner's Redis Stream (``Keys.events``); its entry
id is the SSE event id, so a client that reconnects with ``Last-Event-ID`` is replayed from
the stream whichever process it reaches. A subscriber whose queue fills is dropped (its
stream ends) rather than letting memory grow: it resumes with ``Last-Event-ID``. So does
every open stream when the listener's connection to Redis breaks, even one redis-py mends
on its own: pub/sub does not replay what was published meanwhile, the stream does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio
from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection, ConnectionPool
from redis.exceptions import RedisError

from bridge.shared.clients import translated
from bridge.shared.keys import Keys
from bridge.shared.records import TaskRecord
from bridge.shared.schema import STREAM_FIELD
from bridge.shared.settings import Settings

log = logging.getLogger(__name__)

_EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}\Z")


def valid_event_id(value: str) -> bool:
    """A Redis Stream entry id (``ms-seq``, each an unsigned 64-bit integer)."""
    if not _EVENT_ID.match(value):
        return False
    ms, _, seq = value.partition("-")
    return int(ms) < 2**64 and int(seq) < 2**64


def _order(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


class _Listener(PubSub):
    """A pub/sub connection that says when redis-py reconnected it behind our back."""

    def __init__(self, pool: ConnectionPool, on_reconnect: Callable[[], None]) -> None:
        super().__init__(pool, ignore_subscribe_messages=True)
        self._on_reconnect = on_reconnect

    async def on_connect(self, connection: Connection) -> None:
        if self.channels:
            # Subscribed before, so this is a reconnect: redis-py re-subscribes silently,
            # and whatever was published in between never reaches this process.
            self._on_reconnect()
        await super().on_connect(connection)


@dataclass(frozen=True)
class Event:
    id: str
    owner: str
    task: TaskRecord


@dataclass(eq=False)
class Subscription:
    """Events of one owner (a legacy session's GET stream), or of some tasks (a stateless
    ``subscriptions/listen`` stream, where ``owner`` is "")."""

    owner: str
    queue: asyncio.Queue[Event | None]
    dropped: bool = field(default=False)
    task_ids: frozenset[str] = frozenset()
    #: The legacy session whose GET stream this is (several sessions may share an owner).
    session: str = ""

    async def get(self) -> Event | None:
        """The next event, or None when the stream must end (dropped, or hub stopped)."""
        return await self.queue.get()


class EventHub:
    def __init__(self, settings: Settings, client: redis.asyncio.Redis) -> None:
        self.settings = settings
        self.keys = Keys.of(settings)
        self.redis = client
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._task_subs: dict[str, set[Subscription]] = defaultdict(set)
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        #: Called with every task event heard (the metrics of this process).
        self.on_event: Callable[[Event], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mcp-event-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # ``wait``: see ``Reaper.stop``; and the loop below ends on its own should the
            # cancellation be lost (cpython#86296).
            await asyncio.wait({self._task})
        self._end_all()

    async def _run(self) -> None:
        backoff = 0.1
        while self._task is None or not self._task.cancelling():
            pubsub = _Listener(self.redis.connection_pool, self._reconnected)
            try:
                await pubsub.subscribe(self.keys.channel())
                backoff = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._dispatch(message["data"])
            except (RedisError, OSError) as exc:
                log.warning("event listener lost Redis (%s); streams end, retrying", exc)
                # Open streams may have missed events: end them so clients resume with
                # Last-Event-ID; wake waiters so they re-read the registry.
                self._end_all()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _reconnected(self) -> None:
        log.warning("event listener reconnected to Redis; open streams end and resume")
        self._end_all()

    def _end_all(self) -> None:
        for subs in [*self._subs.values(), *self._task_subs.values()]:
            for sub in list(subs):
                self._drop(sub)
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()

    def _drop(self, sub: Subscription) -> None:
        sub.dropped = True
        self._subs.get(sub.owner, set()).discard(sub)
        for task_id in sub.task_ids:
            self._task_subs.get(task_id, set()).discard(sub)
        while True:
            try:
                sub.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                sub.queue.get_nowait()

    async def close_session(self, owner: str, session: str) -> None:
        """End the open GET streams of ``session`` (of ``owner``), in every bridge process;
        other sessions of the same principal keep theirs."""
        message = json.dumps({"close": owner, "session": session})
        with translated():
            await self.redis.publish(self.keys.channel(), message)

    def _dispatch(self, raw: str) -> None:
        try:
            payload = json.loads(raw)
            if "close" in payload:
                for sub in list(self._subs.get(str(payload["close"]), ())):
                    if sub.session == payload.get("session"):
                        self._drop(sub)
                return
            task = TaskRecord.from_event(payload["task"])
            event = Event(str(payload["id"]), str(payload["owner"]), task)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed task event: %.200s", raw)
            return
        if self.on_event is not None:
            self.on_event(event)
        for waiter in self._waiters.get(task.id, ()):
            waiter.set()
        task_subs = list(self._task_subs.get(task.id, ()))
        owner_subs = list(self._subs.get(event.owner, ())) if event.id else []
        for sub in task_subs + owner_subs:
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("dropping a slow SSE subscriber of %s", event.owner)
                self._drop(sub)

    # -- subscribers -----------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def subscribe(self, owner: str, session: str = "") -> AsyncIterator[Subscription]:
        sub = Subscription(
            owner, asyncio.Queue(self.settings.subscriber_queue_size), session=session
        )
        self._subs[owner].add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(owner)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[owner]

    @contextlib.asynccontextmanager
    async def subscribe_tasks(self, task_ids: frozenset[str]) -> AsyncIterator[Subscription]:
        sub = Subscription("", asyncio.Queue(self.settings.subscriber_queue_size), False, task_ids)
        for task_id in task_ids:
            self._task_subs[task_id].add(sub)
        try:
            yield sub
        finally:
            for task_id in task_ids:
                subs = self._task_subs.get(task_id)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._task_subs[task_id]

    async def replay(self, owner: str, after: str) -> AsyncIterator[Event]:
        """Events of ``owner`` after the event id ``after`` (exclusive), oldest first, read
        ``replay_page_events`` at a time: a resume from ``0-0`` of a long stream holds one
        page in memory, and a slow reader holds back the next read."""
        while True:
            with translated():
                entries = cast(
                    list[tuple[str, dict[str, str]]],
                    await self.redis.xrange(
                        self.keys.events(owner),
                        min=f"({after}",
                        count=self.settings.replay_page_events,
                    ),
                )
            for entry_id, fields in entries:
                task = TaskRecord.from_event(json.loads(fields[STREAM_FIELD]))
                yield Event(entry_id, owner, task)
            if len(entries) < self.settings.replay_page_events:
                return
            after = entries[-1][0]

    async def stream(
        self, owner: str, last_event_id: str | None, session: str = ""
    ) -> AsyncIterator[Event]:
        """Live events of ``owner``, preceded by those after ``last_event_id`` when given;
        each once, in stream order."""
        async with self.subscribe(owner, session) as sub:
            last = last_event_id
            if last is not None:
                async for event in self.replay(owner, last):
                    yield event
                    last = event.id
            while True:
                live = await sub.get()
                if live is None:
                    return
                if last is not None and _order(live.id) <= _order(last):
                    continue
                last = live.id
                yield live

    # -- waiters ---------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def watch(self, task_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever ``task_id`` changes; register before reading the record."""
        waiter = asyncio.Event()
        self._waiters[task_id].add(waiter)
        try:
            yield waiter
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[task_id]

    def subscriber_count(self) -> int:
        streams = {
            sub for subs in [*self._subs.values(), *self._task_subs.values()] for sub in subs
        }
        return len(streams)
