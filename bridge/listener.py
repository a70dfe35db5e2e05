"""The pub/sub connection of one bridge process, subscribed only to the event channels of the
owners something in this process holds (``Keys.owner_channel``): an open GET or
``subscriptions/listen`` stream, a waiter, the metrics' tasks in flight. A process serving
nobody of an owner neither receives nor decodes that owner's events (``bridge.channels``
keeps the book of held channels). The deployment-wide ``Keys.channel`` stays subscribed
(nothing is published there): it keeps the connection in pub/sub mode (redis-py would
otherwise health-check it with a PING read, which must not race the reader).

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
from collections.abc import Callable
from typing import Any

import redis.asyncio
from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mcp_celery_bridge.bridge.channels import Channel, Channels
from mcp_celery_bridge.bridge.shared.keys import Keys

log = logging.getLogger(__name__)

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


class Listener(Channels):
    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        on_message: Callable[[str], None],
        on_lost: Callable[[], None],
    ) -> None:
        super().__init__(keys, on_message, on_lost)
        self.redis = client
        self._pubsub: PubSub | None = None

    @property
    def connected(self) -> bool:
        """Whether the pub/sub connection is up (its channels subscribed)."""
        return self._pubsub is not None

    async def _send(self, channel: Channel) -> None:
        pubsub = self._pubsub
        if pubsub is not None and channel.sent_on is not pubsub:
            await pubsub.subscribe(channel.name)
            channel.sent_on = pubsub

    async def _drop(self, channels: list[Channel]) -> None:
        if self._pubsub is not None:
            await self._pubsub.unsubscribe(*[c.name for c in channels])

    # -- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.1
        while self._task is None or not self._task.cancelling():
            pubsub = WatchedPubSub(self.redis.connection_pool, self._reconnected)
            connection: Connection | None = None
            retry: Any = None
            try:
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
                    await self._sweep()
            except (RedisError, OSError) as exc:
                log.warning("event listener lost Redis (%s); streams end, retrying", exc)
                self._lost()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self._pubsub = None
                if connection is not None and retry is not None:
                    connection.retry = retry  # back to the pool as it came
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            self._on_message(message["data"])
        elif kind == "subscribe":
            self._confirm(message["channel"])

    def _reconnected(self) -> None:
        log.warning("event listener reconnected to Redis; open streams end and resume")
        self._lost()
