from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.services import Process, bridge_server, celery_worker, test_env

#: A Redis database the test run may flush; override with MCP_TEST_REDIS_DB.
REDIS_DB = int(os.environ.get("MCP_TEST_REDIS_DB", "13"))


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def env() -> Iterator[dict[str, str]]:
    client = redis.Redis(db=REDIS_DB)
    client.flushdb()
    environment = test_env(REDIS_DB)
    yield environment
    client.flushdb()
    client.close()


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
