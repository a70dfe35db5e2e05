"""/healthz and /readyz: readiness follows Redis and the workers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis

from tests.inproc import AppServer, app_server, settings_of, sync_transport
from tests.services import Process, RedisServer, bridge_server, celery_worker, tls, wait_for
from tests.test_metrics import _samples


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
        assert body == {
            "redis": "ok",
            "reaper": "ok",
            "events": "ok",
            "workers": [],
            "status": "unready",
        }


def _readyz(server: AppServer) -> httpx.Response:
    with httpx.Client(transport=sync_transport(server.url)) as http:
        return http.get(server.url.removesuffix("/mcp") + "/readyz")


def test_readyz_is_unready_on_a_read_only_replica(
    fast_env: dict[str, str], own_redis: RedisServer, tmp_path: Path
) -> None:
    primary = RedisServer(tmp_path / "primary")
    primary.log_dir.mkdir()
    primary.start()
    try:
        replica = redis.Redis(port=own_redis.port)
        replica.replicaof("127.0.0.1", primary.port)
        replica.close()
        # Pointed at the replica (the old primary, after a failover): it answers a PING.
        settings = settings_of({**fast_env, "MCP_BRIDGE_REDIS_URL": own_redis.url})
        with app_server(settings, tmp_path / "replica.log") as server:
            response = _readyz(server)
        assert response.status_code == 503
        assert response.json()["redis"] == "read-only: a replica, not the primary"
    finally:
        primary.stop()


def test_readyz_and_metrics_show_the_reapers_trouble(
    fast_env: dict[str, str], own_redis: RedisServer, tmp_path: Path
) -> None:
    env = {**fast_env, "MCP_BRIDGE_REDIS_URL": own_redis.url, "MCP_BRIDGE_REAPER_INTERVAL_S": "0.1"}
    with app_server(settings_of(env), tmp_path / "reaper.log") as server:
        own_redis.stop()
        body = wait_for(
            lambda: (
                (r := _readyz(server)).status_code == 503
                and r.json()["reaper"] != "ok"
                and r.json()
            ),
            20,
            "the reaper's failure in /readyz",
        )
        assert body["reaper"] == "failing: ConnectionError"
        assert body["events"] == "reconnecting"  # the listener lost Redis too
        assert body["redis"].startswith("unreachable")
        samples = _samples(server.url)
        assert samples[("mcp_bridge_reaper_errors_total", ())] >= 1
