"""A round trip with a real 2026-07-28 client: FastMCP 4 with fastmcp-tasks.

Runs in .venv-modern (FastMCP 4 needs mcp 2.x; the project's .venv pins mcp 1.x), so pytest
never imports it; tests/test_modern_clients.py runs it as a subprocess:

    .venv-modern/bin/python tests/modern_clients/fastmcp_roundtrip.py http://127.0.0.1:8000/mcp

Three clients, one after the other:

1. ``plain``: a ``fastmcp.Client`` before ``fastmcp_tasks`` is imported, so it does not
   declare the tasks extension: ``echo`` runs plainly, ``sleep`` (required) is refused.
2. ``stock``: the same with ``fastmcp_tasks`` imported (every ``Client`` then declares the
   extension, and ``call_tool`` polls a returned task to its end), unchanged.
3. ``tasks``: the same, with the client's missing ``Mcp-Name`` header on ``tasks/*`` put
   right (see ``mirror_task_id_into_mcp_name``) when the stock client showed it missing.

Prints one JSON object with what it observed (including a per-method summary of the HTTP
requests each client sent) and exits 1 on any unexpected outcome (listed under
``unexpected``), 2 if the script itself crashed.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import inspect
import json
import sys
import traceback
from collections import Counter, defaultdict
from typing import Any

import httpx2
import mcp.client.client
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from fastmcp.exceptions import ToolError
from mcp.shared.exceptions import MCPError

EXT_TASKS = "io.modelcontextprotocol/tasks"
TERMINAL = {"completed", "failed", "cancelled"}
REQUEST_TIMEOUT_S = 20
#: The whole run; the pytest side allows a little more.
RUN_DEADLINE_S = 50


class Wire:
    """The HTTP requests one client sent, per ``Mcp-Method``: how many, how many carried an
    ``Mcp-Name`` header, and the HTTP statuses they got."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.with_name: Counter[str] = Counter()
        self.statuses: defaultdict[str, Counter[int]] = defaultdict(Counter)

    async def _on_response(self, response: httpx2.Response) -> None:
        request = response.request
        if request.method != "POST":
            return
        method = request.headers.get("mcp-method", "(none)")
        self.requests[method] += 1
        if "mcp-name" in request.headers:
            self.with_name[method] += 1
        self.statuses[method][response.status_code] += 1

    def factory(
        self,
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
        **kwargs: Any,
    ) -> httpx2.AsyncClient:
        """An ``McpHttpClientFactory`` (what ``StreamableHttpTransport`` accepts)."""
        client = httpx2.AsyncClient(
            headers=headers,
            timeout=timeout or httpx2.Timeout(30, read=300),
            auth=auth,
            follow_redirects=bool(kwargs.get("follow_redirects", False)),
        )
        client.event_hooks.setdefault("response", []).append(self._on_response)
        return client

    def summary(self) -> dict[str, Any]:
        return {
            method: {
                "requests": count,
                "with_mcp_name": self.with_name[method],
                "http": {str(code): n for code, n in sorted(self.statuses[method].items())},
            }
            for method, count in sorted(self.requests.items())
        }


class Report:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {"unexpected": []}

    def expect(self, condition: bool, what: str) -> None:
        if not condition:
            self.data["unexpected"].append(what)


def client_for(url: str, wire: Wire) -> Client[Any]:
    transport = StreamableHttpTransport(url, httpx_client_factory=wire.factory)
    return Client(transport, timeout=REQUEST_TIMEOUT_S)


def text_of(content: Any) -> str | None:
    """The first text block of a parsed or raw ``CallToolResult`` content list."""
    for block in content or []:
        text = block.get("text") if isinstance(block, dict) else getattr(block, "text", None)
        if isinstance(text, str):
            return text
    return None


def describe_error(exc: BaseException) -> dict[str, Any]:
    described: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, MCPError):
        described["code"] = exc.code
        if exc.data is not None:
            described["data"] = exc.data
    return described


async def plain_phase(url: str, report: Report) -> dict[str, Any]:
    """A client that does not declare the tasks extension (fastmcp_tasks not imported)."""
    out: dict[str, Any] = {"declares_tasks": "fastmcp_tasks" in sys.modules}
    wire = Wire()
    async with client_for(url, wire) as client:
        out["protocol_version"] = client.protocol_version
        info = client.server_info
        out["server"] = {"name": info.name, "version": info.version} if info else None
        caps = client.server_capabilities
        out["server_extensions"] = sorted((caps.extensions or {}) if caps else {})
        out["tools"] = sorted(tool.name for tool in await client.list_tools())

        raw = await client.call_tool_mcp("echo", {"text": "plain hello"})
        out["echo"] = {
            "mode": "plain" if raw.result_type == "complete" else raw.result_type,
            "result_type": raw.result_type,
            "text": text_of(raw.content),
            "is_error": raw.is_error,
        }
        try:
            await client.call_tool("sleep", {"seconds": 0.1})
            out["sleep"] = {"error": None}
        except MCPError as exc:
            out["sleep"] = {"error": describe_error(exc)}
    out["wire"] = wire.summary()

    report.expect(not out["declares_tasks"], "plain: fastmcp_tasks was already imported")
    report.expect(out["protocol_version"] == "2026-07-28", "plain: not the 2026-07-28 era")
    report.expect(
        {"echo", "sleep", "spin", "fail"} <= set(out["tools"]), "plain: demo tools missing"
    )
    report.expect(
        out["echo"]
        == {"mode": "plain", "result_type": "complete", "text": "plain hello", "is_error": False},
        "plain: echo did not run plainly",
    )
    error = out["sleep"]["error"] or {}
    report.expect(
        error.get("code") == -32021
        and error.get("data") == {"requiredCapabilities": {"extensions": {EXT_TASKS: {}}}},
        "plain: sleep without the extension was not -32021 MissingRequiredClientCapability",
    )
    report.expect("server/discover" in out["wire"], "plain: the client never sent server/discover")
    return out


async def stock_phase(url: str, report: Report) -> dict[str, Any]:
    """fastmcp_tasks imported, nothing changed: does the transparent task path work?"""
    wire = Wire()
    out: dict[str, Any] = {}
    async with client_for(url, wire) as client:
        try:
            result = await client.call_tool("echo", {"text": "stock hello"})
            out["echo"] = {"text": text_of(result.content), "error": None}
        except (MCPError, ToolError) as exc:
            out["echo"] = {"error": describe_error(exc)}
    out["wire"] = wire.summary()
    error = out["echo"]["error"]
    # Either the client works as it is, or it fails in exactly the known way: its tasks/get
    # has no Mcp-Name header, which the bridge answers with -32020 HeaderMismatch.
    known = (
        error is not None
        and error.get("code") == -32020
        and "Mcp-Name" in error.get("message", "")
        and out["wire"].get("tasks/get", {}).get("with_mcp_name") == 0
    )
    report.expect(
        (error is None and out["echo"].get("text") == "stock hello") or known,
        "stock: echo failed in an unknown way",
    )
    out["tasks_get_without_mcp_name"] = known
    return out


def mirror_task_id_into_mcp_name() -> list[str]:
    """Make fastmcp-tasks send ``Mcp-Name: <taskId>`` on ``tasks/get|update|cancel``.

    The ext-tasks spec (2026-07-28, "Streamable HTTP: Routing Headers") says the client MUST
    set it; mcp 2.x's ``ClientSession.send_request`` stamps it from the request class's
    ``name_param``, which fastmcp-tasks 4.1.4's request classes leave unset. Returns the
    classes changed (none once a release sets it itself).
    """
    models = importlib.import_module("fastmcp_tasks.client_models")
    patched = []
    for name in ("GetTaskRequest", "UpdateTaskRequest", "CancelTaskRequest"):
        cls = getattr(models, name)
        if cls.name_param is None:
            cls.name_param = "taskId"
            patched.append(name)
    return patched


async def _statuses_until_terminal(task: Any, deadline_s: float) -> tuple[Any, list[str]]:
    """Poll ``tasks/get`` through the handle; the final status and each distinct
    ``status:statusMessage`` seen on the way."""
    seen: list[str] = []
    async with asyncio.timeout(deadline_s):
        while True:
            current = await task.status()
            step = f"{current.status}:{current.status_message}"
            if not seen or seen[-1] != step:
                seen.append(step)
            if current.status in TERMINAL:
                return current, seen
            await asyncio.sleep(0.05)


async def tasks_phase(url: str, report: Report) -> dict[str, Any]:
    tasks_module = importlib.import_module("fastmcp_tasks")
    call_tool_task = tasks_module.call_tool_task
    wire = Wire()
    out: dict[str, Any] = {}
    async with client_for(url, wire) as client:
        out["tools"] = sorted(tool.name for tool in await client.list_tools())

        # echo is "optional": the server decides, and it makes a task for a declaring client.
        try:
            echo = await call_tool_task(client, "echo", {"text": "hello"})
            result = await echo.result()
            out["echo"] = {"mode": "task", "task_id": echo.task_id, "text": text_of(result.content)}
        except ToolError as exc:  # "did not run as a task"
            out["echo"] = {"mode": "plain", "error": describe_error(exc)}
        transparent = await client.call_tool("echo", {"text": "again"})
        out["echo_call_tool"] = {"text": text_of(transparent.content)}

        # sleep: required, so always a task; driven through the explicit handle.
        sleep = await call_tool_task(client, "sleep", {"seconds": 0.6, "steps": 3})
        created = sleep.create_result
        final, seen = await _statuses_until_terminal(sleep, 20)
        result = await sleep.result()
        out["sleep"] = {
            "created": {
                "result_type": created.result_type,
                "status": created.status,
                "ttl_ms": created.ttl_ms,
                "poll_interval_ms": created.poll_interval_ms,
            },
            "seen": seen,
            "final_status": final.status,
            "text": text_of(result.content),
            "is_error": result.is_error,
        }
        # ... and through plain call_tool, which polls the task to its end by itself.
        transparent = await client.call_tool("sleep", {"seconds": 0.2, "steps": 2})
        out["sleep_call_tool"] = {"text": text_of(transparent.content)}

        # fail: the tool raises; in this era that is a completed task with isError.
        fail = await call_tool_task(
            client, "fail", {"message": "kaboom from FastMCP"}, raise_on_error=False
        )
        final = await fail.wait(timeout=20)
        parsed = await fail.result()
        try:
            await client.call_tool("fail", {"message": "raised"})
            raised: dict[str, Any] | None = None
        except ToolError as exc:
            raised = describe_error(exc)
        out["fail"] = {
            "final_status": final.status,
            "result_is_error": (final.result or {}).get("isError"),
            "result_text": text_of((final.result or {}).get("content")),
            "error_field": final.error,
            "parsed_is_error": parsed.is_error,
            "call_tool_raises": raised,
        }

        # spin: a CPU loop that never checks; cancel it once a worker runs it.
        spin = await call_tool_task(client, "spin", {"seconds": 30})
        async with asyncio.timeout(10):
            while not ((running := await spin.status()).status_message or "").startswith(
                "running on"
            ):
                await asyncio.sleep(0.05)
        await spin.cancel()
        final = await spin.wait(timeout=10)
        try:
            await spin.result()
            cancelled_result: dict[str, Any] | None = None
        except ToolError as exc:
            cancelled_result = describe_error(exc)
        out["spin"] = {
            "running": running.status_message,
            "final_status": final.status,
            "status_message": final.status_message,
            "result": cancelled_result,
        }
    out["wire"] = wire.summary()

    report.expect({"echo", "sleep", "spin", "fail"} <= set(out["tools"]), "tasks: tools missing")
    report.expect(
        out["echo"].get("text") == "hello" and out["echo_call_tool"]["text"] == "again",
        "tasks: echo",
    )
    report.expect(
        out["sleep"]["created"]["result_type"] == "task"
        and out["sleep"]["created"]["status"] == "working"
        and out["sleep"]["final_status"] == "completed"
        and out["sleep"]["text"] == "slept 0.6s in 3 steps"
        and out["sleep"]["is_error"] is False
        and out["sleep_call_tool"]["text"] == "slept 0.2s in 2 steps",
        "tasks: sleep did not complete as a task",
    )
    report.expect(
        out["fail"]["final_status"] == "completed"
        and out["fail"]["result_is_error"] is True
        and "kaboom from FastMCP" in (out["fail"]["result_text"] or "")
        and out["fail"]["error_field"] is None
        and out["fail"]["parsed_is_error"] is True
        and (out["fail"]["call_tool_raises"] or {}).get("type") == "ToolError",
        "tasks: fail was not completed with isError",
    )
    report.expect(
        out["spin"]["final_status"] == "cancelled"
        and "was cancelled" in ((out["spin"]["result"] or {}).get("message") or ""),
        "tasks: spin was not cancelled",
    )
    for method in ("tasks/get", "tasks/cancel"):
        stats = out["wire"].get(method, {})
        # fastmcp-tasks 4.1.4 sends no Mcp-Name on tasks/*; the bridge tolerates a missing
        # one there (it refuses a mismatched one), so every request must be answered 200.
        report.expect(
            stats.get("requests", 0) > 0 and set(stats.get("http", {})) == {"200"},
            f"tasks: {method} requests not answered 200",
        )
    return out


def listen_support() -> dict[str, Any]:
    """Whether the client can ask ``subscriptions/listen`` for ``notifications/tasks``:
    FastMCP's ``Client`` has no listen; mcp's ``Client.listen`` takes these filters."""
    params = inspect.signature(mcp.client.client.Client.listen).parameters
    filters = sorted(name for name in params if name != "self")
    return {
        "fastmcp_client_has_listen": hasattr(Client, "listen"),
        "mcp_client_listen_filters": filters,
        "task_ids_filter": any("task" in name for name in filters),
    }


async def run(url: str, report: Report) -> None:
    data = report.data
    data["client"] = {
        name: importlib.metadata.version(name) for name in ("fastmcp", "fastmcp-tasks", "mcp")
    }
    async with asyncio.timeout(RUN_DEADLINE_S):
        data["plain"] = await plain_phase(url, report)
        importlib.import_module("fastmcp_tasks")  # from here on every Client declares tasks
        data["stock"] = await stock_phase(url, report)
        data["workaround"] = (
            mirror_task_id_into_mcp_name() if data["stock"]["tasks_get_without_mcp_name"] else []
        )
        data["tasks"] = await tasks_phase(url, report)
    data["listen"] = listen_support()


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} BRIDGE_URL", file=sys.stderr)
        return 2
    report = Report()
    status = 0
    try:
        asyncio.run(run(sys.argv[1], report))
    except Exception as exc:  # report whatever happened, as JSON
        report.data["crash"] = "".join(traceback.format_exception(exc))
        status = 2
    if status == 0 and report.data["unexpected"]:
        status = 1
    print(json.dumps(report.data, indent=2, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())
