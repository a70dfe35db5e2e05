from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.services import (
    Process,
    RedisServer,
    bridge_server,
    celery_worker,
    outside_settings,
    test_env,
)

#: The bearer tokens ``token_bridge`` accepts, and the principal each stands for.
TOKENS = "tok-alice:alice,tok-alice-1:alice,tok-alice-2:alice,tok-ann:ann,tok-bob:bob"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _own_settings_only() -> Iterator[None]:
    # Settings built in the test process and the environment of every child it starts
    # come from the tests alone, never from the shell the suite was started in.
    with pytest.MonkeyPatch.context() as patch:
        for name in outside_settings():
            patch.delenv(name)
        yield


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (a broker no other worker listens on, say): it
    keeps nothing, so stopping it is the whole clean-up."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The run's own redis-server: database 0 holds the registry and the broker of ``env``;
    a test that needs a broker no other worker listens on takes another database."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def env(redis_server: RedisServer) -> dict[str, str]:
    return test_env(redis_server.url)


@pytest.fixture(scope="session")
def redis_client(env: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(env["MCP_BRIDGE_REDIS_URL"], decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def worker(env: dict[str, str], log_dir: Path) -> Iterator[Process]:
    with celery_worker(env, log_dir, name="main") as proc:
        yield proc


@pytest.fixture(scope="session")
def bridge(env: dict[str, str], log_dir: Path, worker: Process) -> Iterator[str]:
    with bridge_server(env, log_dir, "bridge-a") as url:
        yield url


@pytest.fixture(scope="session")
def bridge_b(env: dict[str, str], log_dir: Path, worker: Process) -> Iterator[str]:
    with bridge_server(env, log_dir, "bridge-b") as url:
        yield url


@pytest.fixture(scope="session")
def token_bridge(env: dict[str, str], log_dir: Path, worker: Process) -> Iterator[str]:
    """A bridge that asks for a bearer token (one of ``TOKENS``)."""
    with bridge_server({**env, "MCP_BRIDGE_AUTH_TOKENS": TOKENS}, log_dir, "bridge-tokens") as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client
