"""`mcp-celery-bridge dev`: a bridge and a worker together, both stopped by one Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.client import connect
from tests.services import ROOT, free_port, wait_for


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (exited, not yet reaped by its parent) is gone for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] == "Z"


@pytest.mark.timeout(90)
def test_dev_runs_bridge_and_worker_and_ctrl_c_stops_both(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    dev_env = {**os.environ, **env, "MCP_BRIDGE_QUEUE": env["MCP_BRIDGE_QUEUE"] + "-dev"}
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "dev", "--port", str(port)],
            cwd=ROOT,
            env=dev_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: " ready." in log.read_text(errors="replace"), 60, "the dev worker")

        async def round_trip() -> dict[str, Any]:
            with anyio.fail_after(30):
                async with connect(f"http://127.0.0.1:{port}/mcp") as client:
                    task = await client.create_task("echo", {"text": "from dev"})
                    return await client.call("tasks/result", {"taskId": task["taskId"]})

        assert anyio.run(round_trip)["content"][0]["text"] == "from dev"

        worker_main = _children(dev.pid)
        assert worker_main, "dev started no worker process"
        pool = [child for pid in worker_main for child in _children(pid)]
        assert pool, "the worker has no pool children"

        os.killpg(dev.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert dev.wait(timeout=30) == 0, log.read_text()
        for pid in worker_main + pool:
            wait_for(lambda pid=pid: _gone(pid), 20, f"process {pid} to exit")
        assert "Traceback" not in log.read_text(errors="replace")
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
