"""`mcp-celery-bridge dev`: a bridge, a worker and Flower together, all stopped by one
Ctrl-C; the `call` command it suggests; and the plain answer when Redis is not there."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mcp_celery_bridge.bridge import __version__
from tests.client import connect
from tests.services import ROOT, children, free_port, pid_running, tls, wait_for


def _cli(args: list[str], env: dict[str, str] | None, log: Path) -> subprocess.Popen[bytes]:
    """``mcp-celery-bridge ARGS`` in its own process group, output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mcp_celery_bridge.bridge.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _answers(url: str, auth: tuple[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, timeout=2, auth=auth, verify=tls()).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.timeout(120)
def test_dev_runs_bridge_worker_and_flower_and_ctrl_c_stops_them(
    env: dict[str, str], tmp_path: Path
) -> None:
    port, flower_port = free_port(), free_port()
    dev_env = {**os.environ, **env, "MCP_BRIDGE_QUEUE": env["MCP_BRIDGE_QUEUE"] + "-dev"}
    log = tmp_path / "dev.log"
    dev = _cli(["dev", "--port", str(port), "--flower-port", str(flower_port)], dev_env, log)
    try:
        wait_for(lambda: " ready." in log.read_text(errors="replace"), 60, "the dev worker")

        async def round_trip() -> dict[str, Any]:
            with anyio.fail_after(30):
                async with connect(f"http://127.0.0.1:{port}/mcp") as client:
                    task = await client.create_task("echo", {"text": "from dev"})
                    return await client.call("tasks/result", {"taskId": task["taskId"]})

        assert anyio.run(round_trip)["content"][0]["text"] == "from dev"

        wait_for(lambda: "MCP endpoint" in log.read_text(errors="replace"), 30, "the banner")
        output = log.read_text(errors="replace")
        assert f"MCP endpoint  http://127.0.0.1:{port}/mcp" in output
        # The banner comes once the stack is ready: after the worker's "ready." line.
        assert output.index(" ready.") < output.index("MCP endpoint"), output
        assert f"Flower        http://127.0.0.1:{flower_port}" in output
        # Every process's lines are there, named, and readable (text, not JSON).
        assert "worker | " in output and "bridge | " in output and "flower | " in output
        assert "bridge.requests POST tools/call 200" in output

        # The suggested command, pasted as printed, runs a demo tool as a task to its end.
        suggested = next(line for line in output.splitlines() if " call sleep " in line)
        tried = subprocess.run(
            suggested.strip(),
            shell=True,
            cwd="/",
            env=dev_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert tried.returncode == 0, tried.stderr
        assert tried.stdout.strip() == "slept 5s in 10 steps"
        assert "working: step " in tried.stderr and "completed" in tried.stderr

        # Flower asks for the password dev made and printed, and opens with it.
        login = re.search(r"\(user mcp, password (\S+)\)", output)
        assert login is not None, output
        flower = f"http://127.0.0.1:{flower_port}/"
        wait_for(lambda: _answers(flower, ("mcp", login.group(1))), 30, "Flower")
        assert httpx.get(flower, timeout=5).status_code == 401

        worker_main = children(dev.pid)  # the worker and Flower
        assert len(worker_main) == 2, "dev started no worker or no Flower"
        pool = [child for pid in worker_main for child in children(pid)]
        assert pool, "the worker has no pool children"

        os.killpg(dev.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert dev.wait(timeout=30) == 0, log.read_text()
        for pid in worker_main + pool:
            wait_for(lambda pid=pid: not pid_running(pid), 20, f"process {pid} to exit")
        assert "Traceback" not in log.read_text(errors="replace")
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()


@pytest.mark.timeout(30)
def test_dev_says_how_to_start_redis_when_none_answers(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcp_celery_bridge.bridge.cli", "dev", "--port", str(free_port())],
        cwd=ROOT,
        env={**os.environ, **env, "MCP_BRIDGE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 1
    assert "Redis does not answer at redis://127.0.0.1:" in result.stderr
    assert "redis-server --daemonize yes" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_call_prints_a_failed_task_and_exits_1(bridge: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mcp_celery_bridge.bridge.cli", "call", *args, "--url", bridge],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=40,
        )

    failed = run("fail", '{"message": "on purpose"}')
    assert failed.returncode == 1
    assert "failed: RuntimeError: on purpose" in failed.stderr

    plain = run("echo", '{"text": "plain"}', "--no-task")
    assert (plain.returncode, plain.stdout.strip()) == (0, "plain")

    # A tool that must not run as a task (taskSupport "forbidden") gets a plain call.
    forbidden = run("add", '{"a": 2, "b": 3}')
    assert (forbidden.returncode, forbidden.stdout.strip()) == (0, "5")
    assert "add is not run as a task here" in forbidden.stderr

    unknown = run("nope")
    assert unknown.returncode == 1 and "Unknown tool: nope" in unknown.stderr

    bad = run("echo", "[1]")
    assert bad.returncode == 2 and "must be a JSON object" in bad.stderr


@pytest.mark.timeout(90)
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_dev_stopped_by_kill_or_a_closed_terminal_stops_its_worker(
    env: dict[str, str], tmp_path: Path, number: int
) -> None:
    dev_env = {**os.environ, **env, "MCP_BRIDGE_QUEUE": env["MCP_BRIDGE_QUEUE"] + "-kill"}
    log = tmp_path / "dev.log"
    dev = _cli(["dev", "--port", str(free_port()), "--no-flower"], dev_env, log)
    try:
        wait_for(lambda: " ready." in log.read_text(errors="replace"), 60, "the dev worker")
        worker_main = children(dev.pid)
        pool = [child for pid in worker_main for child in children(pid)]
        assert worker_main and pool
        dev.send_signal(number)  # the dev process alone, as `kill PID` does
        # SIGKILL leaves dev no say: the kernel stops its children (PR_SET_PDEATHSIG).
        expected = -signal.SIGKILL if number == signal.SIGKILL else 0
        assert dev.wait(timeout=30) == expected, log.read_text()
        for pid in worker_main + pool:
            wait_for(lambda pid=pid: not pid_running(pid), 20, f"process {pid} to exit")
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()


@pytest.mark.timeout(60)
def test_ctrl_c_on_call_cancels_its_task(bridge: str, tmp_path: Path) -> None:
    err = tmp_path / "call.err"
    call = _cli(["call", "sleep", '{"seconds": 30}', "--url", bridge], None, err)
    try:
        wait_for(lambda: "working: step" in err.read_text(), 20, "the task to run")
        call.send_signal(signal.SIGINT)
        assert call.wait(timeout=20) == 130
        assert err.read_text().splitlines()[-1].startswith("cancelled")
    finally:
        if call.poll() is None:
            call.kill()
            call.wait()


def test_version() -> None:
    for flag in ("--version", "-V"):
        result = subprocess.run(
            [sys.executable, "-m", "mcp_celery_bridge.bridge.cli", flag],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"mcp-celery-bridge, version {__version__}"
