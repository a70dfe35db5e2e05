"""Redis over TLS (``rediss://``) with a private CA: with MCP_BRIDGE_REDIS_CA_FILE the bridge
and the worker check the server's certificate against it and work; without it, both refuse
the server (neither skips the check), and /readyz says why."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests import services
from tests.client import connect
from tests.services import bridge_server, celery_worker, wait_for
from tests.topologies import TlsRedis, tls_redis

pytestmark = pytest.mark.anyio


def _env(server: TlsRedis, ca: bool) -> dict[str, str]:
    env = services.test_env(server.url)
    if ca:
        env["MCP_BRIDGE_REDIS_CA_FILE"] = str(server.ca)
    return env


async def test_a_task_runs_over_tls_with_the_private_ca(tmp_path: Path) -> None:
    with tls_redis(tmp_path / "redis") as server:
        env = _env(server, ca=True)
        with (
            celery_worker(env, tmp_path, concurrency=1, name="tls"),
            bridge_server(env, tmp_path, "bridge-tls") as url,
        ):
            async with connect(url) as client:
                created = await client.create_task("echo", {"text": "over TLS"})
                task = await client.wait_status(created["taskId"], {"completed", "failed"})
                result = await client.call("tasks/result", {"taskId": created["taskId"]})
                readyz = (await client.http.get(url.removesuffix("/mcp") + "/readyz")).json()
    assert task["status"] == "completed"
    assert result["content"][0]["text"] == "over TLS"
    assert readyz["redis"] == "ok"


def test_without_the_ca_neither_the_bridge_nor_the_worker_skips_the_check(
    tmp_path: Path,
) -> None:
    with tls_redis(tmp_path / "redis") as server:
        env = _env(server, ca=False)
        with (
            # Celery keeps retrying its broker connection, saying why each time.
            celery_worker(
                env,
                tmp_path,
                concurrency=1,
                name="tls-untrusted",
                ready=lambda proc: "CERTIFICATE_VERIFY_FAILED" in proc.output(),
            ) as worker,
            bridge_server(env, tmp_path, "bridge-tls-untrusted") as url,
        ):
            body = wait_for(
                lambda: httpx.get(url.removesuffix("/mcp") + "/readyz", timeout=10).json(),
                20,
                "a readiness answer",
            )
            assert " ready." not in worker.output()
    assert body["status"] == "unready"
    assert body["redis"] == (
        "unreachable: ConnectionError: its TLS certificate is not trusted "
        "(MCP_BRIDGE_REDIS_CA_FILE)"
    )
