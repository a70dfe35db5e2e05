"""Probes: ``/healthz`` (the process serves) and ``/readyz`` (Redis takes a write, the lease
reaper's last pass worked, and at least one Celery worker answers a ping). A PING is not
enough: a replica answers it, and after a failover every request would fail while the probe
said ready. The readiness answer is cached briefly, so frequent probes from many places cost
one check per interval."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio.to_thread
from redis.exceptions import ClusterDownError, ReadOnlyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcp_celery_bridge.bridge.events import EventHub
from mcp_celery_bridge.bridge.publisher import Publisher
from mcp_celery_bridge.bridge.reaper import Reaper
from mcp_celery_bridge.bridge.shared.clients import REDIS_ERRORS, AsyncRedis
from mcp_celery_bridge.bridge.shared.keys import Keys

#: How long a readiness answer is reused.
CACHE_S = 2.0
#: Lifetime of the key the probe writes.
PROBE_TTL_MS = 10_000
#: How long workers get to answer the ping.
PING_TIMEOUT_S = 1.0
#: How long a probe waits for the ping, connecting to the broker included (kombu retries a
#: broker it cannot reach for 10-15 s; a probe must answer sooner).
PING_WAIT_S = 3.0


class Health:
    def __init__(
        self,
        client: AsyncRedis,
        publisher: Publisher,
        keys: Keys,
        reaper: Reaper,
        hub: EventHub,
    ) -> None:
        self.redis = client
        self.publisher = publisher
        self.keys = keys
        self.reaper = reaper
        self.hub = hub
        self._cached: tuple[float, int, dict[str, Any]] | None = None
        self._pinging: asyncio.Future[list[str]] | None = None
        self._lock = anyio.Lock()

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        async with self._lock:  # concurrent probes share one check
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > CACHE_S:
                status, body = await self._check()
                self._cached = (time.monotonic(), status, body)
            _, status, body = self._cached
        return JSONResponse(body, status_code=status)

    async def _ping(self) -> list[str]:
        """The workers that answer the broadcast ping, within ``PING_WAIT_S``. The ping runs
        in a thread, which cannot be stopped: one still running from an earlier probe is
        waited on again rather than joined by another."""
        if self._pinging is None or self._pinging.done():
            self._pinging = asyncio.ensure_future(
                anyio.to_thread.run_sync(self.publisher.ping, PING_TIMEOUT_S)
            )
            # Its failure is read by a probe, or by nobody once no probe waits any more.
            self._pinging.add_done_callback(lambda f: f.cancelled() or f.exception())
        async with asyncio.timeout(PING_WAIT_S):
            return await asyncio.shield(self._pinging)

    async def _check(self) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {}
        try:
            await self.redis.set(self.keys.probe(), "1", px=PROBE_TTL_MS)
            body["redis"] = "ok"
        except ReadOnlyError:
            body["redis"] = "read-only: a replica, not the primary"
        except ClusterDownError:
            body["redis"] = "cluster down: a slot has no primary that answers"
        except REDIS_ERRORS as exc:
            body["redis"] = f"unreachable: {type(exc).__name__}"
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                body["redis"] += ": its TLS certificate is not trusted (MCP_BRIDGE_REDIS_CA_FILE)"
        body["reaper"] = "ok" if self.reaper.trouble is None else f"failing: {self.reaper.trouble}"
        # Streams and waits hear events through it: while it reconnects they cannot.
        body["events"] = "ok" if self.hub.listening else "reconnecting"
        try:
            body["workers"] = sorted(await self._ping())
        except TimeoutError:
            body["workers"] = []
            body["broker"] = f"unreachable: no answer within {PING_WAIT_S:g} s"
        except Exception as exc:  # the broker's own errors vary by transport
            body["workers"] = []
            body["broker"] = f"unreachable: {type(exc).__name__}"
        ready = (
            body["redis"] == "ok"
            and body["reaper"] == "ok"
            and body["events"] == "ok"
            and bool(body["workers"])
        )
        body["status"] = "ready" if ready else "unready"
        return (200 if ready else 503), body
