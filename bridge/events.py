"""Task events: one Redis pub/sub listener per bridge process (``bridge.listener``), subscribed
to the channels of the owners this process holds something of, fans out to the open SSE
streams of this process through bounded queues, and wakes local waiters (``tasks/result``,
plain tool calls). Each consumer names the owner whose events it needs, and is registered
only once Redis confirmed that owner's subscription: what it reads after that (a stream's
backlog, the registry) and the events it then receives leave no gap.

Every announced transition is also in the owner's Redis Stream (``Keys.events``); its entry
id is the SSE event id, so a client that reconnects with ``Last-Event-ID`` is replayed from
the stream whichever process it reaches. A subscriber whose queue fills is dropped (its
stream ends) rather than letting memory grow: it resumes with ``Last-Event-ID``. So does
every open stream when the listener's connection to Redis breaks: pub/sub does not replay
what was published meanwhile, the stream does.
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

from mcp_celery_bridge.bridge.listener import Listener
from mcp_celery_bridge.bridge.shard_listener import ShardListener
from mcp_celery_bridge.bridge.shared.clients import AsyncRedis, translated
from mcp_celery_bridge.bridge.shared.keys import Keys
from mcp_celery_bridge.bridge.shared.records import TaskRecord
from mcp_celery_bridge.bridge.shared.schema import STREAM_FIELD
from mcp_celery_bridge.bridge.shared.settings import Settings

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
    def __init__(self, settings: Settings, client: AsyncRedis) -> None:
        self.settings = settings
        self.keys = Keys.of(settings)
        self.redis = client
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._task_subs: dict[str, set[Subscription]] = defaultdict(set)
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.listener: Listener | ShardListener = (
            ShardListener(client, self.keys, self._dispatch, self._end_all)
            if isinstance(client, redis.asyncio.RedisCluster)
            else Listener(client, self.keys, self._dispatch, self._end_all)
        )
        #: Called with every task event heard (the metrics of this process).
        self.on_event: Callable[[Event], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()
        self._end_all()

    async def hold(self, owner: str) -> None:
        """Hear ``owner``'s events from the moment this returns until ``release``
        (``Listener.hold``); for a consumer of its own (the metrics' tasks in flight)."""
        await self.listener.hold(owner)

    def release(self, owner: str) -> None:
        self.listener.release(owner)

    @contextlib.asynccontextmanager
    async def _holding(self, owners: frozenset[str]) -> AsyncIterator[None]:
        held: list[str] = []
        try:
            for owner in sorted(owners):
                await self.listener.hold(owner)
                held.append(owner)
            yield
        finally:
            for owner in held:
                self.listener.release(owner)

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
            await self.redis.execute_command(
                self.keys.publish, self.keys.owner_channel(owner), message
            )

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
            async with self._holding(frozenset({owner})):
                yield sub
        finally:
            subs = self._subs.get(owner)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[owner]

    @contextlib.asynccontextmanager
    async def subscribe_tasks(
        self, task_ids: frozenset[str], owners: frozenset[str]
    ) -> AsyncIterator[Subscription]:
        """Events of ``task_ids``, whose owners are among ``owners``."""
        sub = Subscription("", asyncio.Queue(self.settings.subscriber_queue_size), False, task_ids)
        for task_id in task_ids:
            self._task_subs[task_id].add(sub)
        try:
            async with self._holding(owners):
                yield sub
        finally:
            for task_id in task_ids:
                subs = self._task_subs.get(task_id)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._task_subs[task_id]

    async def _latest(self, owner: str) -> str:
        with translated():
            newest = cast(
                list[tuple[str, dict[str, str]]],
                await self.redis.xrevrange(self.keys.events(owner), count=1),
            )
        return newest[0][0] if newest else "0-0"

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
        if last_event_id is None:
            # "From now on" starts at the owner's latest event, read before subscribing: the
            # owner's channel may take a round trip to subscribe, and what is published
            # meanwhile is replayed from the stream rather than lost.
            last_event_id = await self._latest(owner)
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
    async def watch(self, task_id: str, owner: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever ``task_id`` (of ``owner``) changes; enter it before reading
        the record."""
        waiter = asyncio.Event()
        self._waiters[task_id].add(waiter)
        try:
            async with self._holding(frozenset({owner})):
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

    def channel_count(self) -> int:
        """Owners whose events this process hears (``Listener.channel_count``)."""
        return self.listener.channel_count()

    @property
    def listening(self) -> bool:
        """Whether events can be heard now (the pub/sub connection is up)."""
        return self.listener.connected

    def hears(self, owner: str) -> bool:
        """Whether this process listens to ``owner``'s events (or is subscribing)."""
        return self.listener.hears(owner)
