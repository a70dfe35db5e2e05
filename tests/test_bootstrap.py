"""scripts/bootstrap: it starts a Redis where MCP_BRIDGE_REDIS_URL points (when that is this
machine and none answers), says so and how to stop it, and installs again only when
pyproject.toml changed."""

from __future__ import annotations

import os
import subprocess

import pytest
import redis

from tests.services import ROOT, free_port


def _bootstrap(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "bootstrap")],
        cwd=ROOT,
        env={**os.environ, "MCP_BRIDGE_REDIS_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(180)
def test_bootstrap_starts_redis_where_the_url_points_and_says_how_to_stop_it() -> None:
    port = free_port()
    result = _bootstrap(f"redis://127.0.0.1:{port}/3")
    client = redis.Redis(port=port)
    try:
        assert result.returncode == 0, result.stderr
        assert f"started redis-server on 127.0.0.1:{port}" in result.stderr
        assert client.ping()
        # The project was installed already: nothing is installed again.
        assert "installing" not in result.stderr
        stop = result.stderr.split("stop it with: ")[1].split("\n")[0]
        subprocess.run(stop.split(), check=False, capture_output=True, timeout=30)
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        try:
            client.shutdown(nosave=True)
        except redis.RedisError:
            pass  # stopped already
        client.close()


@pytest.mark.timeout(60)
def test_bootstrap_starts_nothing_for_a_redis_elsewhere() -> None:
    result = _bootstrap("redis://redis.invalid:6390/0")
    assert result.returncode == 0, result.stderr
    assert "does not answer" in result.stderr and "started" not in result.stderr
