"""How `serve` and `dev` end: at once when their port is taken; `dev` when its worker dies
(everything stops, exit 1); on Ctrl-C in a terminal (Celery's warm shutdown, the running
tasks finish), and on a second Ctrl-C (at once)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio

from mcp_celery_bridge.bridge.reaper import Reaper
from mcp_celery_bridge.bridge.shared.registry import Registry
from mcp_celery_bridge.bridge.shared.settings import Settings
from tests.client import RawClient, connect
from tests.services import children, free_port, pid_running, wait_for
from tests.terminal import in_terminal
from tests.test_cli import _cli


def _dev_env(env: dict[str, str], name: str) -> dict[str, str]:
    return {**os.environ, **env, "MCP_BRIDGE_QUEUE": f"{env['MCP_BRIDGE_QUEUE']}-{name}"}


def _processes(dev_pid: int) -> list[int]:
    """dev's children (worker, Flower) and theirs (the pool)."""
    main = children(dev_pid)
    return main + [child for pid in main for child in children(pid)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["serve", "dev"])
def test_a_taken_port_ends_the_command_at_once(
    env: dict[str, str], tmp_path: Path, command: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / f"{command}.log"
        proc = _cli([command, "--port", str(port)], _dev_env(env, "taken"), log)
        try:
            assert proc.wait(timeout=20) == 1, log.read_text()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    output = log.read_text()
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in output
    assert "Traceback" not in output
    # Nothing was started: no worker, no Flower.
    assert "worker |" not in output and "flower |" not in output


@pytest.mark.anyio
async def test_the_reaper_stops_even_when_its_cancellation_is_lost(env: dict[str, str]) -> None:
    # Python 3.11's asyncio.wait_for (inside redis-py's connect) returns a result that came
    # at the same moment as a cancellation and drops the cancellation: the reaper then ran
    # on, and the server's shutdown (`serve` on a taken port, say) waited for it forever.
    reaping = asyncio.Event()

    class Unlucky(Reaper):
        async def reap(self) -> int:
            reaping.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()  # never set: only the cancel ends it, swallowed
            return 0

    settings = Settings(redis_url=env["MCP_BRIDGE_REDIS_URL"], key_prefix=uuid.uuid4().hex)
    client = redis.asyncio.Redis.from_url(settings.redis_url)
    reaper = Unlucky(settings, Registry(settings, client))
    try:
        reaper.start()
        with anyio.fail_after(5):
            await reaping.wait()  # the pass whose cancellation will be lost is under way
        with anyio.move_on_after(5) as waited:
            await reaper.stop()
        running = [t for t in asyncio.all_tasks() if t.get_name() == "mcp-reaper" and not t.done()]
        for task in running:
            task.cancel()
        assert not running, "the reaper still runs after stop()"
        assert not waited.cancel_called, "stop() waited for the reaper for 5 s"
    finally:
        await client.aclose()


@pytest.mark.timeout(120)
def test_dev_stops_everything_when_its_worker_dies(env: dict[str, str], tmp_path: Path) -> None:
    flower_port = free_port()
    log = tmp_path / "dev.log"
    args = ["dev", "--port", str(free_port()), "--flower-port", str(flower_port)]
    dev = _cli(args, _dev_env(env, "dies"), log)
    try:
        wait_for(lambda: " ready." in log.read_text(errors="replace"), 60, "the dev worker")
        processes = _processes(dev.pid)
        worker = next(
            pid
            for pid in children(dev.pid)
            if b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        )
        os.kill(worker, signal.SIGKILL)
        assert dev.wait(timeout=30) == 1, log.read_text()
        assert "dev: the worker exited (killed by SIGKILL)" in log.read_text()
        for pid in processes:
            wait_for(lambda pid=pid: not pid_running(pid), 20, f"process {pid} to exit")
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()


async def _start_sleep(client: RawClient, seconds: float) -> str:
    task = await client.create_task("sleep", {"seconds": seconds, "steps": 2})
    task_id: str = task["taskId"]
    with anyio.fail_after(20):
        while (await client.get_task(task_id)).get("statusMessage", "") == "queued":
            await anyio.sleep(0.05)
    return task_id


@pytest.mark.timeout(120)
def test_ctrl_c_on_dev_lets_the_running_tasks_finish(env: dict[str, str]) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    args = ["dev", "--port", str(port), "--no-flower"]
    with in_terminal(args, _dev_env(env, "ctrlc")) as dev:
        wait_for(lambda: " ready." in dev.text(), 60, "the dev worker")
        processes = _processes(dev.popen.pid)

        async def interrupted_task() -> dict[str, Any]:
            async with connect(url) as client:
                task_id = await _start_sleep(client, 3)
                dev.ctrl_c()
                # The bridge keeps serving while the worker finishes the task.
                with anyio.fail_after(30):
                    while (task := await client.get_task(task_id))["status"] == "working":
                        await anyio.sleep(0.1)
                return task

        task = anyio.run(interrupted_task)
        assert task["status"] == "completed", (task, dev.text()[-3000:])
        assert dev.popen.wait(timeout=30) == 0, dev.text()[-3000:]
        output = dev.text()
        assert "the worker finishes the tasks it is running first" in output
        assert "Warm shutdown" in output
        assert "Traceback" not in output, output[-4000:]
        for pid in processes:
            wait_for(lambda pid=pid: not pid_running(pid), 20, f"process {pid} to exit")


@pytest.mark.timeout(120)
def test_a_second_ctrl_c_stops_dev_at_once(env: dict[str, str]) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    args = ["dev", "--port", str(port), "--no-flower"]
    with in_terminal(args, _dev_env(env, "twice")) as dev:
        wait_for(lambda: " ready." in dev.text(), 60, "the dev worker")
        processes = _processes(dev.popen.pid)

        async def started() -> None:
            async with connect(url) as client:
                await _start_sleep(client, 120)

        anyio.run(started)
        dev.ctrl_c()
        wait_for(lambda: "Ctrl-C again" in dev.text(), 10, "the first Ctrl-C's answer")
        dev.ctrl_c()
        assert dev.popen.wait(timeout=20) == 0, dev.text()[-3000:]
        assert "dev: stopping now" in dev.text()
        for pid in processes:
            wait_for(lambda pid=pid: not pid_running(pid), 20, f"process {pid} to exit")
