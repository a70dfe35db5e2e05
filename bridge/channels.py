"""The event channels one bridge process holds, whatever connections carry them: the part
``bridge.listener`` (one server, one connection) and ``bridge.shard_listener`` (a Cluster,
a connection per node) share.

``hold`` returns once Redis has confirmed the subscription, so a consumer that reads the
stream's backlog or the registry after it misses nothing published since. A channel nobody
holds any more is unsubscribed after ``LINGER_S`` (an owner whose tasks come one after
another is not subscribed again for each). Each listener's loop owns reconnection: when
events may have been missed, ``_lost`` tells the consumers (streams end and resume with
``Last-Event-ID``, waiters re-read the registry) and every held channel waits for the next
connection's confirmation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.client import PubSub

from mcp_celery_bridge.bridge.shared.clients import lost_connection
from mcp_celery_bridge.bridge.shared.errors import StoreUnavailable
from mcp_celery_bridge.bridge.shared.keys import Keys

#: A channel nobody holds is unsubscribed after this long.
LINGER_S = 5.0
#: Least time between two looks for channels to unsubscribe.
SWEEP_EVERY_S = 1.0
#: How long ``hold`` waits for Redis to confirm a subscription (the listener may be
#: reconnecting) before the caller is told the store is unavailable.
CONFIRM_TIMEOUT_S = 10.0


@dataclass(eq=False)
class Channel:
    name: str
    confirmed: asyncio.Future[None]
    refs: int = 0
    idle_since: float = 0.0
    #: The connection the SUBSCRIBE was sent on (None: not sent on the current one).
    sent_on: PubSub | None = field(default=None)


class Channels:
    """The book of held channels; a listener adds how they are (un)subscribed and its loop."""

    def __init__(
        self, keys: Keys, on_message: Callable[[str], None], on_lost: Callable[[], None]
    ) -> None:
        self.keys = keys
        self._on_message = on_message
        self._on_lost = on_lost
        self._channels: dict[str, Channel] = {}  # by channel name
        self._lock = asyncio.Lock()  # one sender of (UN)SUBSCRIBE at a time
        self._swept = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    # -- what a listener adds --------------------------------------------------------------
    def _run(self) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    async def _send(self, channel: Channel) -> None:
        """Subscribe ``channel`` on the current connection, if there is one (under the lock):
        else the next connection subscribes it with every other."""
        raise NotImplementedError

    async def _drop(self, channels: list[Channel]) -> None:
        """Unsubscribe ``channels``, forgotten already (under the lock)."""
        raise NotImplementedError

    def _broke(self) -> None:
        """A send failed: the connection is not to be trusted."""

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, name: str = "mcp-event-listener") -> None:
        self._task = asyncio.create_task(self._run(), name=name)

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
                    await self._send(channel)
            async with asyncio.timeout(CONFIRM_TIMEOUT_S):
                while not channel.confirmed.done():
                    await asyncio.shield(channel.confirmed)
        except BaseException as exc:
            self._release(channel)
            if isinstance(exc, TimeoutError) or (
                isinstance(exc, Exception) and lost_connection(exc)
            ):
                # A failed send broke the connection: the loop reconnects; this caller fails.
                self._broke()
                raise StoreUnavailable(f"task store unavailable: {type(exc).__name__}") from exc
            raise

    def release(self, owner: str) -> None:
        channel = self._channels.get(self.keys.owner_channel(owner))
        if channel is not None:
            self._release(channel)

    def _release(self, channel: Channel) -> None:
        channel.refs -= 1
        if channel.refs <= 0:
            channel.idle_since = time.monotonic()

    def _confirm(self, name: str) -> None:
        channel = self._channels.get(name)
        if channel is not None and not channel.confirmed.done():
            channel.confirmed.set_result(None)

    async def _sweep(self) -> None:
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
                await self._drop(idle)

    @staticmethod
    def _idle(channel: Channel, now: float) -> bool:
        return (
            channel.refs <= 0 and channel.confirmed.done() and now - channel.idle_since > LINGER_S
        )

    def _lost(self) -> None:
        """Events may have been missed: consumers are told, and a holder coming from now on
        waits for the next connection's confirmation."""
        for channel in self._channels.values():
            channel.sent_on = None
            if channel.confirmed.done():
                channel.confirmed = asyncio.get_running_loop().create_future()
        self._on_lost()
