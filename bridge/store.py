"""Redis clients, and the one place where Redis exceptions become bridge errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from bridge.errors import StoreUnavailable

#: Retries of a command whose connection failed, at most 0.1, 0.2 and 0.4 s apart (random
#: jitter below those): enough to ride out a blip, while a request still fails within a
#: second when Redis is gone (redis-py's default, 10 retries, takes up to ~5 s: a hang).
RETRIES = 3
_BACKOFF = {"base": 0.05, "cap": 0.5}


def async_client(url: str) -> redis.asyncio.Redis:
    # Short timeouts: a request must fail fast when Redis is away, not hang.
    return redis.asyncio.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=15,
        retry=redis.asyncio.retry.Retry(ExponentialWithJitterBackoff(**_BACKOFF), RETRIES),
    )


def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=15,
        retry=redis.retry.Retry(ExponentialWithJitterBackoff(**_BACKOFF), RETRIES),
    )


@contextmanager
def translated() -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise StoreUnavailable(f"task store unavailable: {type(exc).__name__}") from exc
