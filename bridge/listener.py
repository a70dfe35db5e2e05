"""The pub/sub connection of one bridge process, subscribed only to the event channels of the
owners something in this process holds (``Keys.owner_channel``): an open GET or
``subscriptions/listen`` stream, a waiter, the metrics' tasks in flight. A process serving
nobody of an owner neither receives nor decodes that owner's events.

``hold`` returns once Redis has confirmed the subscription, so a consumer that reads the
stream's backlog or the registry after it misses nothing published since. A channel nobody
holds any more is unsubscribed after ``LINGER_S`` (an owner whose tasks come one after
another is not subscribed again for each). The deployment-wide ``Keys.channel`` stays
subscribed (nothing is published there): it keeps the connection in pub/sub mode (redis-py
would otherwise health-check it with a PING read, which must not race the reader).

This loop owns reconnection: the connection's retries are off, so every failure ends in
``on_lost`` (streams end and resume with ``Last-Event-ID``, waiters re-read the registry)
and a new connection subscribing every held channel, which holders waiting meanwhile await.

On a Redis Cluster the events are published on shard channels instead, to the node of their
owner's slot: ``bridge.shard_listener``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mcp_celery_bridge.bridge.shared.errors import StoreUnavailable
from mcp_celery_bridge.bridge.shared.keys import Keys

log = logging.getLogger(__name__)

#: A channel nobody holds is unsubscribed after this long.
LINGER_S = 5.0
#: Least time between two looks for channels to unsubscribe.
SWEEP_EVERY_S = 1.0
#: How long ``hold`` waits for Redis to confirm a subscription (the listener may be
#: reconnecting) before the caller is told the store is unavailable.
CONFIRM_TIMEOUT_S = 10.0
NO_RETRY = Retry(NoBackoff(), 0)


class WatchedPubSub(PubSub):
    """A pub/sub connection that says when redis-py reconnected it behind our back."""

    def __init__(self, pool: ConnectionPool, on_reconnect: Callable[[], None]) -> None:
        super().__init__(pool, ignore_subscribe_messages=False)
        self._on_reconnect = on_reconnect

    async def on_connect(self, connection: Connection) -> None:
        if self.channels or self.shard_channels:
            # Subscribed before, so this is a reconnect (in redis-py's failure handling,
            # before it raises): whatever was published in between never reaches us.
            self._on_reconnect()
        await super().on_connect(connection)


@dataclass(eq=False)
class Channel:
    name: str
    confirmed: asyncio.Future[None]
    refs: int = 0
    idle_since: float = 0.0
    #: The connection the SUBSCRIBE was sent on (None: not sent on the current one).
    sent_on: PubSub | None = field(default=None)


class Listener:
    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        on_message: Callable[[str], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.redis = client
        self.keys = keys
        self._on_message = on_message
        self._on_lost = on_lost
        self._channels: dict[str, Channel] = {}  # by channel name
        self._pubsub: PubSub | None = None
        self._lock = asyncio.Lock()  # one sender of (UN)SUBSCRIBE at a time
        self._swept = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mcp-event-listener")

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            # ``wait``: see ``Reaper.stop``; and the loop ends on its own should the
            # cancellation be lost (cpython#86296).
            await asyncio.wait({self._task})
        for channel in self._channels.values():
            if not channel.confirmed.done():
                channel.confirmed.set_result(None)  # holders go on and find the hub stopped

    def channel_count(self) -> int:
        """Owner channels subscribed or being subscribed (the deployment's one not counted)."""
        return len(self._channels)

    def hears(self, owner: str) -> bool:
        return self.keys.owner_channel(owner) in self._channels

    # -- holding ---------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Whether the pub/sub connection is up (its channels subscribed)."""
        return self._pubsub is not None

    async def hold(self, owner: str) -> None:
        """Receive ``owner``'s events from the moment this returns until ``release``."""
        if self._task is None or self._stopped:
            raise StoreUnavailable("task store unavailable: the event listener is not running")
        name = self.keys.owner_channel(owner)
        channel = self._channels.get(name)
        if channel is None:
            channel = Channel(name, asyncio.get_running_loop().create_future())
            self._channels[name] = channel
        channel.refs += 1
        if channel.confirmed.done():
            return  # subscribed on the current connection (a loss resets the confirmation)
        try:
            if channel.sent_on is None:
                async with self._lock:
                    pubsub = self._pubsub
                    # Else the listener's next connection subscribes it with every other.
                    if pubsub is not None and channel.sent_on is not pubsub:
                        await pubsub.subscribe(name)
                        channel.sent_on = pubsub
            async with asyncio.timeout(CONFIRM_TIMEOUT_S):
                while not channel.confirmed.done():
                    await asyncio.shield(channel.confirmed)
        except (RedisError, OSError, TimeoutError) as exc:
            # A failed send broke the connection: the loop reconnects; this caller fails.
            self._release(channel)
            raise StoreUnavailable(f"task store unavailable: {type(exc).__name__}") from exc
        except BaseException:
            self._release(channel)
            raise

    def release(self, owner: str) -> None:
        channel = self._channels.get(self.keys.owner_channel(owner))
        if channel is not None:
            self._release(channel)

    def _release(self, channel: Channel) -> None:
        channel.refs -= 1
        if channel.refs <= 0:
            channel.idle_since = time.monotonic()

    # -- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.1
        while self._task is None or not self._task.cancelling():
            pubsub: PubSub | None = None
            connection: Connection | None = None
            retry: Any = None
            try:
                pubsub = WatchedPubSub(self.redis.connection_pool, self._reconnected)
                await pubsub.connect()  # type: ignore[no-untyped-call]
                connection = pubsub.connection
                assert connection is not None
                retry, connection.retry = connection.retry, NO_RETRY
                async with self._lock:
                    channels = list(self._channels.values())
                    await pubsub.subscribe(self.keys.channel(), *[c.name for c in channels])
                    for channel in channels:
                        channel.sent_on = pubsub
                    self._pubsub = pubsub
                backoff = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._handle(message)
                    await self._sweep(pubsub)
            except (RedisError, OSError) as exc:
                log.warning("event listener lost Redis (%s); streams end, retrying", exc)
                self._lost()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self._pubsub = None
                if connection is not None and retry is not None:
                    connection.retry = retry  # back to the pool as it came
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            self._on_message(message["data"])
        elif kind == "subscribe":
            channel = self._channels.get(message["channel"])
            if channel is not None and not channel.confirmed.done():
                channel.confirmed.set_result(None)

    async def _sweep(self, pubsub: PubSub) -> None:
        """Unsubscribe the channels nobody has held for ``LINGER_S``, looked for at most once
        a second (a scan per message would cost a CPU at thousands of channels). Under the
        lock, so a holder coming now either keeps the channel or subscribes it again after."""
        now = time.monotonic()
        if now - self._swept < SWEEP_EVERY_S:
            return
        self._swept = now
        if not any(self._idle(c, now) for c in self._channels.values()):
            return
        async with self._lock:
            idle = [c for c in self._channels.values() if self._idle(c, now)]
            for channel in idle:
                del self._channels[channel.name]
            if idle:
                await pubsub.unsubscribe(*[c.name for c in idle])

    @staticmethod
    def _idle(channel: Channel, now: float) -> bool:
        return (
            channel.refs <= 0 and channel.confirmed.done() and now - channel.idle_since > LINGER_S
        )

    def _reconnected(self) -> None:
        log.warning("event listener reconnected to Redis; open streams end and resume")
        self._lost()

    def _lost(self) -> None:
        """Events may have been missed: consumers are told, and a holder coming from now on
        waits for the next connection's confirmation."""
        for channel in self._channels.values():
            channel.sent_on = None
            if channel.confirmed.done():
                channel.confirmed = asyncio.get_running_loop().create_future()
        self._on_lost()
