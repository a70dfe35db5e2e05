"""Redis clients, and the one place where Redis exceptions become bridge errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.connection
import redis.retry
import redis.sentinel
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from mcp_celery_bridge.bridge.shared import topology
from mcp_celery_bridge.bridge.shared.errors import StoreUnavailable
from mcp_celery_bridge.bridge.shared.topology import shown

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = [
    "REDIS_ERRORS",
    "AsyncRedis",
    "SyncRedis",
    "async_client",
    "shown",
    "sync_client",
    "translated",
]

#: What redis-py raises when Redis cannot serve a command (a Cluster it cannot reach at all
#: raises RedisClusterException, which is not a RedisError).
REDIS_ERRORS = (RedisError, RedisClusterException)

#: A client of the registry: of one server (a Sentinel's primary included) or of a Cluster.
AsyncRedis = redis.asyncio.Redis | redis.asyncio.RedisCluster
SyncRedis = redis.Redis | redis.RedisCluster

#: Retries of a command whose connection failed, at most 0.1, 0.2 and 0.4 s apart (random
#: jitter below those): enough to ride out a blip, while a request still fails within a
#: second when Redis is gone (redis-py's default, 10 retries, takes up to ~5 s: a hang).
RETRIES = 3
_BACKOFF = {"base": 0.05, "cap": 0.5}


#: Connections one bridge process may hold. A burst of requests waits for a free one (up
#: to ``POOL_WAIT_S``) instead of failing: redis-py's default pool refuses past 100.
POOL_SIZE = 64
POOL_WAIT_S = 5


#: Every client's connections: short timeouts, so a request fails fast when Redis is away
#: rather than hang; a health check before reusing a connection idle for 15 s.
_CONNECTION: dict[str, Any] = {
    "decode_responses": True,
    "socket_connect_timeout": 2,
    "socket_timeout": 10,
    "health_check_interval": 15,
}

#: How long a client waits for a sentinel's answer (which primary is current).
SENTINEL_TIMEOUT_S = 2
_NO_RETRY_ASYNC = redis.asyncio.retry.Retry(NoBackoff(), 0)
_NO_RETRY_SYNC = redis.retry.Retry(NoBackoff(), 0)


def _tls(url: str, ca_file: str) -> dict[str, str]:
    # redis-py checks a rediss:// server's certificate against the system's CA store by
    # default; a private CA is added by file.
    return {"ssl_ca_certs": ca_file} if ca_file and url.startswith("rediss://") else {}


class _BlockingSentinelPool(
    redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool
):
    """The primary's connections as the sentinels name it, a burst beyond ``POOL_SIZE``
    waiting for a free one as on one server (redis-py's Sentinel pool refuses at once)."""


def async_client(url: str, *, ca_file: str = "") -> AsyncRedis:
    nodes = topology.cluster(url)
    if nodes is not None:
        return redis.asyncio.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in nodes.hosts],
            username=nodes.username,
            password=nodes.password,
            max_connections=POOL_SIZE,
            **_cluster_tls(nodes, ca_file),
            **_CONNECTION,
            retry=redis.asyncio.retry.Retry(ExponentialWithJitterBackoff(**_BACKOFF), RETRIES),
        )
    found = topology.sentinels(url)
    if found is not None:
        # The primary as the sentinels name it now, asked again when a connection to it
        # fails or it turns out a replica (a failover).
        # (redis-py's Sentinel classes are not annotated.)
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            found.hosts,
            sentinel_kwargs=_sentinel_kwargs(found, ca_file, _NO_RETRY_ASYNC),
            socket_timeout=SENTINEL_TIMEOUT_S,
        )
        client: redis.asyncio.Redis = sentinel.master_for(
            found.master,
            connection_pool_class=_BlockingSentinelPool,
            **_sentinel_tls(found, ca_file),
            db=found.db,
            username=found.username,
            password=found.password,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT_S,
            **_CONNECTION,
            retry=redis.asyncio.retry.Retry(ExponentialWithJitterBackoff(**_BACKOFF), RETRIES),
        )
        return client
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        **_tls(url, ca_file),
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT_S,
        **_CONNECTION,
        retry=redis.asyncio.retry.Retry(ExponentialWithJitterBackoff(**_BACKOFF), RETRIES),
    )
    return redis.asyncio.Redis.from_pool(pool)


def _closed_tls(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's handler of errors nobody awaits, quieter about one: uvloop reports a
    TLS connection that redis-py closed (a Cluster client replacing the connections it
    learnt its slots on) while the server's bytes were still coming in, as "Fatal error on
    SSL protocol" with a traceback. Nothing is lost there: the connection was done with."""
    exc = context.get("exception")
    if str(context.get("message", "")).startswith("Fatal error on SSL protocol") and (
        isinstance(exc, RuntimeError) and "handler is closed" in str(exc)
    ):
        log.debug("a closed TLS connection to Redis still had bytes coming: %s", exc)
        return
    loop.default_exception_handler(context)


async def prepared(client: AsyncRedis) -> None:
    """Learn a Cluster's nodes and slots before the first commands run concurrently (redis-py
    learns them on the first command, and commands sent meanwhile may meet connections it is
    closing); a Cluster that does not answer yet is learnt on first use instead."""
    if isinstance(client, redis.asyncio.RedisCluster):
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() is None:
            loop.set_exception_handler(_closed_tls)
        with contextlib.suppress(*REDIS_ERRORS):
            await client.initialize()


#: A worker's patience (``sync_client(patient=True)``): retries spread over ~15 s, enough to
#: ride out a Sentinel failover or a restart. A worker holding a result has nothing better
#: to do than wait for Redis; a bridge answering a request must fail fast instead.
PATIENT_RETRIES = 30
_PATIENT_BACKOFF = {"base": 0.1, "cap": 1.0}


#: How long a patient Cluster client goes on asking (a primary's failover takes seconds).
PATIENCE_S = 15.0


def _patiently(call: Callable[[], T], errors: tuple[type[Exception], ...], patience: float) -> T:
    """``call()``, again after a growing pause while it raises one of ``errors``, for up to
    ``patience`` seconds (0: once)."""
    deadline = time.monotonic() + patience
    pause = _PATIENT_BACKOFF["base"]
    while True:
        try:
            return call()
        except errors:
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, _PATIENT_BACKOFF["cap"])


class _PatientCluster(redis.RedisCluster):
    """A Cluster client that waits out a failover. redis-py retries a Cluster command at
    once, learning the slots again each time, with no pause between: while a replica is
    being promoted every retry fails within a second."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        def once() -> Any:
            return super(_PatientCluster, self).execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]

        return _patiently(once, redis.RedisCluster.ERRORS_ALLOW_RETRY, PATIENCE_S)


def sync_client(url: str, *, patient: bool = False, ca_file: str = "") -> SyncRedis:
    """A blocking client; one of a Cluster connects as it is made, so this may raise one of
    ``REDIS_ERRORS`` (after ``PATIENCE_S`` when ``patient``)."""
    retries, backoff = (PATIENT_RETRIES, _PATIENT_BACKOFF) if patient else (RETRIES, _BACKOFF)
    retry = redis.retry.Retry(ExponentialWithJitterBackoff(**backoff), retries)
    nodes = topology.cluster(url)
    if nodes is not None:
        # (redis-py's ClusterNode is not annotated.)
        startup = [redis.cluster.ClusterNode(h, p) for h, p in nodes.hosts]  # type: ignore[no-untyped-call]
        kind = _PatientCluster if patient else redis.RedisCluster
        # redis-py's Cluster client connects as it is made (raising RedisClusterException
        # when no node answers): a patient one keeps trying as its commands do.
        return _patiently(
            lambda: kind(
                startup_nodes=startup,
                username=nodes.username,
                password=nodes.password,
                **_cluster_tls(nodes, ca_file),
                **_CONNECTION,
                retry=retry,
            ),
            REDIS_ERRORS,
            PATIENCE_S if patient else 0,
        )
    found = topology.sentinels(url)
    if found is not None:
        sync_sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            found.hosts,
            sentinel_kwargs=_sentinel_kwargs(found, ca_file, _NO_RETRY_SYNC),
            socket_timeout=SENTINEL_TIMEOUT_S,
        )
        client: redis.Redis = sync_sentinel.master_for(  # type: ignore[no-untyped-call]
            found.master,
            **_sentinel_tls(found, ca_file),
            db=found.db,
            username=found.username,
            password=found.password,
            **_CONNECTION,
            retry=retry,
        )
        return client
    return redis.Redis.from_url(
        url,
        **_tls(url, ca_file),
        **_CONNECTION,
        retry=retry,
    )


def _cluster_tls(nodes: topology.Cluster, ca_file: str) -> dict[str, Any]:
    if not nodes.tls:
        return {}
    return {"ssl": True, "ssl_ca_certs": ca_file or None}


def _sentinel_tls(found: topology.Sentinels, ca_file: str) -> dict[str, Any]:
    """TLS to a ``sentinels://`` deployment's servers (the sentinels', the primary's and its
    replicas' certificates checked alike)."""
    if not found.tls:
        return {}
    return {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": ca_file or None}


def _sentinel_kwargs(
    found: topology.Sentinels, ca_file: str, retry: redis.retry.Retry | redis.asyncio.retry.Retry
) -> dict[str, object]:
    # No retries at a sentinel: the next sentinel is asked instead (redis-py's default, three
    # with a backoff of up to 10 s each, kept a client waiting on one refusing sentinel).
    kwargs: dict[str, object] = {"socket_connect_timeout": SENTINEL_TIMEOUT_S, "retry": retry}
    kwargs.update(_sentinel_tls(found, ca_file))
    if found.sentinel_password:
        kwargs["password"] = found.sentinel_password
    return kwargs


#: redis-py's connection code. Writing on a connection whose peer has gone (or that another
#: task is closing), its asyncio client raises a RuntimeError (uvloop), a TypeError or an
#: AttributeError instead of a ConnectionError (redis/redis-py#4287). Seen on a Cluster during
#: a failover, when the client closes the connections of a node that others still use.
_CONNECTION_CODE = frozenset({redis.connection.__file__, redis.asyncio.connection.__file__})


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` says a Redis connection is gone (as ``ConnectionError`` does)."""
    if isinstance(exc, (*REDIS_ERRORS, OSError)):
        return True
    if not isinstance(exc, RuntimeError | TypeError | AttributeError):
        return False
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename in _CONNECTION_CODE:
            return True
        frame = frame.tb_next
    return False


@contextmanager
def translated() -> Iterator[None]:
    try:
        yield
    except (*REDIS_ERRORS, RuntimeError, TypeError, AttributeError) as exc:
        if not lost_connection(exc):
            raise
        raise StoreUnavailable(f"task store unavailable: {type(exc).__name__}") from exc
