"""Probes: ``/healthz`` (the process serves) and ``/readyz`` (Redis answers and at least one
Celery worker answers a ping). The readiness answer is cached briefly, so frequent probes
from many places cost one check per interval."""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
import redis.asyncio
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.publisher import Publisher

#: How long a readiness answer is reused.
CACHE_S = 2.0
#: How long workers get to answer the ping.
PING_TIMEOUT_S = 1.0


class Health:
    def __init__(self, client: redis.asyncio.Redis, publisher: Publisher) -> None:
        self.redis = client
        self.publisher = publisher
        self._cached: tuple[float, int, dict[str, Any]] | None = None
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

    async def _check(self) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {}
        try:
            await self.redis.ping()
            body["redis"] = "ok"
        except RedisError as exc:
            body["redis"] = f"unreachable: {type(exc).__name__}"
        try:
            replies = await anyio.to_thread.run_sync(self.publisher.ping, PING_TIMEOUT_S)
            body["workers"] = sorted(replies)
        except Exception as exc:  # the broker's own errors vary by transport
            body["workers"] = []
            body["broker"] = f"unreachable: {type(exc).__name__}"
        ready = body["redis"] == "ok" and bool(body["workers"])
        body["status"] = "ready" if ready else "unready"
        return (200 if ready else 503), body
