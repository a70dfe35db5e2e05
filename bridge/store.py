"""Redis clients, and the one place where Redis exceptions become bridge errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.asyncio
from redis.exceptions import RedisError

from bridge.errors import StoreUnavailable


def async_client(url: str) -> redis.asyncio.Redis:
    # Short timeouts: a request must fail fast when Redis is away, not hang.
    return redis.asyncio.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=15,
        retry_on_timeout=True,
    )


def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=15,
        retry_on_timeout=True,
    )


@contextmanager
def translated() -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise StoreUnavailable(f"task store unavailable: {type(exc).__name__}") from exc
