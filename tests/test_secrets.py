"""No Redis password in what the bridge prints: CLI errors, the dev banner, its Redis help."""

from __future__ import annotations

import sys

import anyio
import pytest

from mcp_celery_bridge.bridge import dev
from mcp_celery_bridge.bridge.shared.settings import Settings
from tests.services import ROOT, free_port

SECRET = "s3cret-pa55"


def _url() -> str:
    # A port nothing listens on: every command fails to reach it.
    return f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"


@pytest.mark.anyio
async def test_the_operator_cli_masks_the_password_when_redis_is_unreachable() -> None:
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-m", "mcp_celery_bridge.bridge.cli", "tasks", "list"],
            cwd=ROOT,
            env={"MCP_BRIDGE_REDIS_URL": _url(), "PATH": "/usr/bin:/bin"},
            check=False,
        )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 1, output
    assert "Redis at redis://:**@127.0.0.1:" in output
    assert SECRET not in output


@pytest.mark.fast
def test_dev_shows_the_redis_url_without_its_password() -> None:
    url = _url()
    problem = dev.redis_problem(url)
    assert problem is not None and "redis://:**@127.0.0.1:" in problem
    assert SECRET not in problem
    shown = dev.banner(Settings(redis_url=url), "http://127.0.0.1:8000/mcp", None)
    assert "redis://:**@127.0.0.1:" in shown and SECRET not in shown
