"""/healthz and /readyz: readiness follows Redis and the workers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.services import (
    Process,
    RedisServer,
    bridge_server,
    celery_worker,
    tls,
    wait_for,
)


def test_healthz_answers_any_host(bridge: str) -> None:
    base = bridge.removesuffix("/mcp")
    response = httpx.get(f"{base}/healthz", headers={"Host": "10.1.2.3:8000"})
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_lists_the_workers(bridge: str, worker: Process) -> None:
    body = httpx.get(bridge.removesuffix("/mcp") + "/readyz").json()
    assert body["status"] == "ready" and body["redis"] == "ok"
    assert any(name.startswith("main@") for name in body["workers"])


@pytest.mark.timeout(90)
def test_readyz_goes_unready_when_the_worker_stops(
    env: dict[str, str], log_dir: Path, own_redis: RedisServer
) -> None:
    # A broker of its own, so no other test's worker answers the ping.
    private = {
        **env,
        "MCP_BRIDGE_BROKER_URL": own_redis.url,
        "MCP_BRIDGE_QUEUE": env["MCP_BRIDGE_QUEUE"] + "-ready",
    }
    with bridge_server(private, log_dir, "bridge-ready") as url:
        readyz = url.removesuffix("/mcp") + "/readyz"
        with celery_worker(private, log_dir, concurrency=1, name="ready"):
            wait_for(lambda: httpx.get(readyz, verify=tls()).status_code == 200, 20, "ready")
        body = wait_for(
            lambda: (r := httpx.get(readyz, verify=tls())).status_code == 503 and r.json(),
            20,
            "unready",
        )
        assert body == {"redis": "ok", "workers": [], "status": "unready"}
