"""The bridge driven by a real 2026-07-28 client, FastMCP 4 with fastmcp-tasks, alone and
beside the official SDK's 2025-11-25 client.

FastMCP 4 needs mcp 2.x, which cannot share the project's venv (mcp 1.x), so the modern
client is a script, tests/modern_clients/fastmcp_roundtrip.py, run by the python of
.venv-modern (scripts/bootstrap installs tests/modern_clients/requirements.txt there). It
prints what it observed as one JSON object, asserted on here.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client

from tests.services import ROOT, Process

MODERN_PYTHON = ROOT / ".venv-modern" / "bin" / "python"
SCRIPT = ROOT / "tests" / "modern_clients" / "fastmcp_roundtrip.py"
#: The script bounds its own run to 50 s; it takes about 4 s.
SCRIPT_TIMEOUT_S = 60
EXT_TASKS = "io.modelcontextprotocol/tasks"


def _command(bridge: str) -> list[str]:
    assert MODERN_PYTHON.exists(), (
        f"{MODERN_PYTHON} is missing: run scripts/bootstrap "
        "(it installs tests/modern_clients/requirements.txt into .venv-modern)"
    )
    return [str(MODERN_PYTHON), str(SCRIPT), bridge]


def _report(returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    assert stdout.strip(), f"the client printed nothing (exit {returncode}):\n{stderr[-4000:]}"
    report: dict[str, Any] = json.loads(stdout)
    assert returncode == 0 and report["unexpected"] == [] and "crash" not in report, (
        f"exit {returncode}\n{json.dumps(report, indent=2)[-8000:]}\n{stderr[-2000:]}"
    )
    return report


def _check(report: dict[str, Any]) -> None:
    """What a FastMCP 4.1.4 client sees of the bridge (the script checked the same; this
    states it where the test suite is read)."""
    assert report["client"]["fastmcp"] == report["client"]["fastmcp-tasks"] == "4.1.4"
    assert report["client"]["mcp"].startswith("2.")

    plain = report["plain"]
    assert plain["protocol_version"] == "2026-07-28"  # negotiated via server/discover
    assert plain["server"]["name"] == "mcp-celery-bridge"
    assert plain["server_extensions"] == [EXT_TASKS]
    assert {"echo", "sleep", "spin", "fail"} <= set(plain["tools"])
    assert plain["echo"]["mode"] == "plain" and plain["echo"]["text"] == "plain hello"
    assert plain["sleep"]["error"]["code"] == -32021  # required tool, no extension declared

    # fastmcp-tasks 4.1.4 sends tasks/* without the Mcp-Name header the extension asks for;
    # the bridge tolerates a missing one on tasks/* (not a mismatched one), so the stock
    # client works as it is.
    stock = report["stock"]
    assert stock["echo"] == {"text": "stock hello", "error": None}
    assert stock["wire"]["tasks/get"]["http"] == {"200": stock["wire"]["tasks/get"]["requests"]}
    assert report["workaround"] == []

    tasks = report["tasks"]
    # The client always declares the extension once fastmcp_tasks is imported, and the bridge
    # then makes a task even of the optional echo.
    assert tasks["echo"]["mode"] == "task" and tasks["echo"]["text"] == "hello"
    assert tasks["echo_call_tool"]["text"] == "again"

    sleep = tasks["sleep"]
    assert sleep["created"]["result_type"] == "task"
    assert sleep["created"]["status"] == "working"
    assert sleep["created"]["ttl_ms"] > 0
    assert sleep["created"]["poll_interval_ms"] == 500  # MCP_BRIDGE_POLL_INTERVAL_MS in tests
    assert sleep["final_status"] == "completed"
    assert all(step.startswith("working:") for step in sleep["seen"][:-1]), sleep["seen"]
    assert sleep["seen"][-1].startswith("completed:")
    assert sleep["text"] == "slept 0.6s in 3 steps" and sleep["is_error"] is False
    assert tasks["sleep_call_tool"]["text"] == "slept 0.2s in 2 steps"

    fail = tasks["fail"]
    assert fail["final_status"] == "completed"  # a tool error is not "failed" in this era
    assert fail["result_is_error"] is True and fail["error_field"] is None
    assert fail["result_text"] == "RuntimeError: kaboom from FastMCP"
    assert fail["parsed_is_error"] is True
    assert fail["call_tool_raises"]["type"] == "ToolError"

    spin = tasks["spin"]
    assert spin["running"].startswith("running on")
    assert spin["final_status"] == "cancelled"
    assert spin["status_message"] == "cancelled by the client"
    assert "was cancelled" in spin["result"]["message"]

    for method in ("tasks/get", "tasks/cancel"):
        wire = tasks["wire"][method]
        assert wire["requests"] > 0 and wire["http"] == {"200": wire["requests"]}
    assert "tasks/result" not in tasks["wire"] and "tasks/list" not in tasks["wire"]


@pytest.mark.timeout(SCRIPT_TIMEOUT_S + 30)
def test_fastmcp_client_round_trip(bridge: str, worker: Process) -> None:
    done = subprocess.run(
        _command(bridge), capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, cwd=ROOT
    )
    _check(_report(done.returncode, done.stdout, done.stderr))


@pytest.mark.anyio
@pytest.mark.timeout(SCRIPT_TIMEOUT_S + 30)
# session.experimental (the SDK's tasks API) warns that tasks may leave the SDK in 2.0.
@pytest.mark.filterwarnings("ignore:The experimental tasks API:DeprecationWarning")
async def test_legacy_and_modern_clients_at_once(bridge: str, worker: Process) -> None:
    """A 2025-11-25 SDK session runs a sleep task while the FastMCP script runs its whole
    round trip against the same bridge and worker."""
    command = _command(bridge)
    script: dict[str, Any] = {}
    legacy: list[tuple[float, str, str | None]] = []

    async def run_modern() -> None:
        script["started"] = time.monotonic()
        done = await anyio.run_process(command, check=False, cwd=ROOT)
        script["finished"] = time.monotonic()
        script["result"] = (done.returncode, done.stdout.decode(), done.stderr.decode())

    with anyio.fail_after(SCRIPT_TIMEOUT_S + 20):
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(30, read=300)) as http,
            streamable_http_client(bridge, http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            init = await session.initialize()
            assert init.protocolVersion == "2025-11-25"
            tasks = session.experimental
            created = await tasks.call_tool_as_task("sleep", {"seconds": 3, "steps": 6}, ttl=60_000)
            task_id = created.task.taskId
            with anyio.fail_after(10):  # a worker has picked it up
                while (await tasks.get_task(task_id)).statusMessage == "queued":
                    await anyio.sleep(0.05)

            async def run_legacy() -> None:
                async for status in tasks.poll_task(task_id):
                    legacy.append((time.monotonic(), status.status, status.statusMessage))

            async with anyio.create_task_group() as group:
                group.start_soon(run_modern)
                group.start_soon(run_legacy)
            result = await tasks.get_task_result(task_id, types.CallToolResult)

    _check(_report(*script["result"]))
    assert legacy[-1][1] == "completed"
    assert isinstance(result.content[0], types.TextContent)
    assert result.content[0].text == "slept 3s in 6 steps" and not result.isError
    # They overlapped: the legacy task was still working after the FastMCP client started.
    assert any(t > script["started"] and s == "working" for t, s, _ in legacy), legacy
