"""Redis clients, and the one place where Redis exceptions become bridge errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from kombu.utils.url import maybe_sanitize_url
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from bridge.shared.errors import StoreUnavailable

#: Retries of a command whose connection failed, at most 0.1, 0.2 and 0.4 s apart (random
#: jitter below those): enough to ride out a blip, while a request still fails within a
#: second when Redis is gone (redis-py's default, 10 retries, takes up to ~5 s: a hang).
RETRIES = 3
_BACKOFF = {"base": 0.05, "cap": 0.5}


#: Connections one bridge process may hold. A burst of requests waits for a free one (up
#: to ``POOL_WAIT_S``) instead of failing: redis-py's default pool refuses past 100.
POOL_SIZE = 64
POOL_WAIT_S = 5


def shown(url: str) -> str:
    """``url`` as logs, CLI output and health answers may show it: the password masked."""
    return str(maybe_sanitize_url(url))


def async_client(url: str) -> redis.asyncio.Redis:
    # Short timeouts: a request must fail fast when Redis is away, not hang.
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT_S,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=15,
        retry=redis.asyncio.retry.Retry(ExponentialWithJitterBackoff(**_BACKOFF), RETRIES),
    )
    return redis.asyncio.Redis.from_pool(pool)


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
