"""The pub/sub side of one bridge process on a Redis Cluster: as ``bridge.listener``, but on
shard channels (Redis 7's SSUBSCRIBE), each held at the primary serving its slot.

A Cluster forwards a classic PUBLISH to every node over its bus, whoever subscribed where;
a shard channel's message stays on the node (and replicas) of its slot. The scripts publish
an owner's events on its shard channel (``Keys.owner_channel``, in the owner's slot), so a
bridge process holds one connection per primary that serves an owner it holds, and hears
only those owners.

The promises are those of ``bridge.channels``; whatever may lose a message ends every link
at once, tells the consumers and subscribes every held channel again, on the nodes the
Cluster names then. That covers a failed node, a failover, and a slot moved elsewhere (the
node then unsubscribes its channels by itself: ``sunsubscribe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from redis.asyncio.client import PubSub
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import RedisError

from mcp_celery_bridge.bridge.channels import SWEEP_EVERY_S, Channel, Channels
from mcp_celery_bridge.bridge.listener import NO_RETRY, WatchedPubSub
from mcp_celery_bridge.bridge.shared.clients import lost_connection
from mcp_celery_bridge.bridge.shared.keys import Keys

log = logging.getLogger(__name__)


class _Broken(Exception):
    """A link failed or a node gave a channel up: every link starts again."""


def _log_loss(what: str, exc: Exception) -> None:
    if isinstance(exc, _Broken) or lost_connection(exc):
        log.warning("%s (%s); streams end, retrying", what, exc)
    else:
        log.exception("%s; streams end, retrying", what)


@dataclass(eq=False)
class _Link:
    """The connection to one primary, and the task reading it."""

    node: str
    pool: ConnectionPool
    pubsub: PubSub
    reader: asyncio.Task[None] | None = field(default=None)


class ShardListener(Channels):
    def __init__(
        self,
        client: redis.asyncio.RedisCluster,
        keys: Keys,
        on_message: Callable[[str], None],
        on_lost: Callable[[], None],
    ) -> None:
        super().__init__(keys, on_message, on_lost)
        self.redis = client
        self._links: dict[str, _Link] = {}  # by node name
        self._broken = asyncio.Event()
        self._live = False  # links may be made (between a rebuild and the next failure)

    def start(self, name: str = "mcp-shard-listener") -> None:
        super().start(name)

    @property
    def connected(self) -> bool:
        """Whether the links are up (between a rebuild and the next failure)."""
        return self._live

    async def _send(self, channel: Channel) -> None:
        if self._live and channel.sent_on is None:
            await self._subscribe([channel])

    async def _drop(self, channels: list[Channel]) -> None:
        """Unsubscribe ``channels`` at their nodes, and close a link left with none."""
        for link in list(self._links.values()):
            names = [c.name for c in channels if c.sent_on is link.pubsub]
            if names:
                await link.pubsub.sunsubscribe(*names)
            if not any(c.sent_on is link.pubsub for c in self._channels.values()):
                del self._links[link.node]
                await self._close(link)

    def _broke(self) -> None:
        self._broken.set()  # whatever failed, the loop starts every link again

    # -- links -----------------------------------------------------------------------------
    async def _subscribe(self, channels: list[Channel]) -> None:
        """SSUBSCRIBE ``channels``, each at the primary of its slot (under the lock)."""
        by_node: dict[str, tuple[Any, list[Channel]]] = {}
        for channel in channels:
            node = self.redis.get_node_from_key(channel.name)
            if node is None:
                raise RedisError(f"no primary serves the slot of {channel.name}")
            by_node.setdefault(node.name, (node, []))[1].append(channel)
        for name, (node, group) in by_node.items():
            link = self._links.get(name)
            fresh = link is None
            if link is None:
                pool = ConnectionPool(
                    connection_class=node.connection_class, **node.connection_kwargs
                )
                link = _Link(name, pool, WatchedPubSub(pool, self._broken.set))
                self._links[name] = link
                await link.pubsub.connect()  # type: ignore[no-untyped-call]
                assert link.pubsub.connection is not None
                link.pubsub.connection.retry = NO_RETRY  # this loop owns reconnection
            await link.pubsub.ssubscribe(*[c.name for c in group])
            for channel in group:
                channel.sent_on = link.pubsub
            if fresh:
                # Started once something is subscribed: a pub/sub connection read before
                # that would be health-checked with a PING racing the reader.
                link.reader = asyncio.create_task(self._read(link), name=f"mcp-shard-{name}")

    async def _read(self, link: _Link) -> None:
        try:
            while True:
                message = await link.pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._handle(message)
        except Exception as exc:  # whatever it was, the loop starts every link again
            _log_loss(f"shard listener lost node {link.node}", exc)
            self._broken.set()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "smessage":
            self._on_message(message["data"])
        elif kind == "ssubscribe":
            self._confirm(message["channel"])
        elif kind == "sunsubscribe" and message["channel"] in self._channels:
            # Not ours (a sweep forgets a channel before it unsubscribes it): the node gave
            # the channel up, its slot moved. Events may be missed from here.
            raise _Broken(f"{message['channel']} was unsubscribed by the node (slot moved)")

    async def _close_links(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await self._close(link)

    @staticmethod
    async def _close(link: _Link) -> None:
        if link.reader is not None:
            link.reader.cancel()
            await asyncio.wait({link.reader})
        with contextlib.suppress(Exception):
            await link.pubsub.aclose()  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            await link.pool.aclose()

    # -- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.1
        while self._task is None or not self._task.cancelling():
            try:
                await self.redis.initialize()
                async with self._lock:
                    self._broken.clear()
                    await self._subscribe(list(self._channels.values()))
                    self._live = True
                backoff = 0.1
                while not self._broken.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(SWEEP_EVERY_S):
                            await self._broken.wait()
                    await self._sweep()
                raise _Broken("a link failed")
            except Exception as exc:  # never end: the bridge would stop hearing events
                _log_loss("shard listener lost Redis", exc)
                self._lost()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                # A failover or a moved slot: the nodes are learnt again.
                with contextlib.suppress(Exception):
                    await self.redis.nodes_manager.initialize()
            finally:
                self._live = False
                async with self._lock:
                    await self._close_links()
