"""The bridge driven by the official MCP Python SDK client (protocol 2025-11-25): a real
bridge, a real prefork worker, the real Redis.

The SDK's httpx client goes through ``_Checker``, a wrapping transport that validates every
message the server sends (JSON bodies, and the ``data:`` of SSE events as they arrive, the
long-lived GET stream included) against the official JSON Schema. The SDK swallows
exceptions raised inside its transport, so failures are collected in a list and asserted
empty at the end of each test.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from mcp_celery_bridge.bridge.messages import Event, EventParser
from tests import schema
from tests.services import Process, children, pid_running

pytestmark = [
    pytest.mark.anyio,
    # session.experimental (the SDK's tasks API) warns that tasks may leave the SDK in 2.0.
    pytest.mark.filterwarnings("ignore:The experimental tasks API:DeprecationWarning"),
]

#: Every test finishes well within this (seconds).
TEST_DEADLINE = 20
TERMINAL = {"completed", "failed", "cancelled"}


# -- schema-checking HTTP transport -------------------------------------------------------
#: The messages one task's life brings (each validated against the schema at least once).
A_TASKS_LIFE = (
    "response:tools/call",
    "response:tasks/get",
    "response:tasks/result",
    "notification:notifications/tasks/status",
)


class _CheckedStream(httpx.AsyncByteStream):
    """A response body passed through unchanged, each server message validated before the
    SDK can see it."""

    def __init__(self, inner: httpx.AsyncByteStream, sse: bool, checker: _Checker) -> None:
        self.inner = inner
        self.sse = EventParser() if sse else None
        self.checker = checker

    async def __aiter__(self) -> AsyncIterator[bytes]:
        body = bytearray()
        async for chunk in self.inner:
            if self.sse is not None:
                for event in self.sse.feed(chunk):
                    self.checker.check_text(event.data)
            else:
                body += chunk
            yield chunk
        if self.sse is None and body:
            self.checker.check_text(bytes(body).decode())

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Checker(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.failures: list[str] = []
        #: request id -> (method, task-augmented), from the POST bodies the client sent
        self.requests: dict[Any, tuple[str, bool]] = {}
        #: "response:<method>" / "notification:<method>" of every message validated
        self.checked: list[str] = []
        self.get_stream_open = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self._record(request.content)
        response = await self.inner.handle_async_request(request)
        ctype = response.headers.get("content-type", "")
        if request.method == "GET" and response.status_code == 200:
            self.get_stream_open.set()
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CheckedStream(response.stream, ctype.startswith("text/event-stream"), self),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _record(self, body: bytes) -> None:
        try:
            message = json.loads(body)
        except ValueError:
            self.failures.append(f"the client sent a body that is not JSON: {body[:200]!r}")
            return
        if isinstance(message, dict) and "method" in message and "id" in message:
            params = message.get("params")
            task = isinstance(params, dict) and params.get("task") is not None
            self.requests[message["id"]] = (message["method"], task)

    def check_text(self, text: str) -> None:
        """Validate one server message; never raises (the SDK would swallow it)."""
        try:
            message = json.loads(text)
            assert isinstance(message, dict), f"not a JSON-RPC message: {text[:300]}"
            if "method" in message:
                schema.check_server_message(message)
                self.checked.append(f"notification:{message['method']}")
                return
            known = self.requests.get(message.get("id"))
            assert known is not None, f"a response to no request of ours: {text[:300]}"
            method, task = known
            schema.check_response(method, message, task=task)
            self.checked.append(f"response:{method}")
        except Exception as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")


# -- notifications received through the ClientSession ----------------------------------------
class _Notes:
    """The ClientSession ``message_handler``: task status notifications by task id."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        self.by_task: dict[str, list[types.TaskStatusNotificationParams]] = defaultdict(list)
        self._changed = anyio.Event()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, Exception):
            self.failures.append(f"the SDK reported {message!r}")
        elif isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.TaskStatusNotification
        ):
            params = message.root.params
            self.by_task[params.taskId].append(params)
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_for(
        self,
        task_id: str,
        matches: Callable[[types.TaskStatusNotificationParams], bool],
        timeout: float = 10,
    ) -> types.TaskStatusNotificationParams:
        """The first notification about ``task_id`` that ``matches``, waiting for it."""
        with anyio.fail_after(timeout):
            while True:
                for params in self.by_task[task_id]:
                    if matches(params):
                        return params
                await self._changed.wait()


@dataclass
class Sdk:
    session: ClientSession
    checker: _Checker
    notes: _Notes
    init: types.InitializeResult
    failures: list[str]

    def assert_valid(self, *expected: str) -> None:
        """No schema failure so far, and each of ``expected`` was validated at least once."""
        assert self.failures == []
        missing = set(expected) - set(self.checker.checked)
        assert not missing, f"never validated: {missing}; validated: {set(self.checker.checked)}"


@contextlib.asynccontextmanager
async def sdk(url: str, *, wait_stream: bool = True) -> AsyncIterator[Sdk]:
    """An initialized SDK ClientSession on ``url``; with ``wait_stream``, once its GET
    notification stream is open."""
    checker = _Checker()
    notes = _Notes(checker.failures)
    timeout = httpx.Timeout(30, read=300)
    async with (
        httpx.AsyncClient(transport=checker, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write, message_handler=notes) as session,
    ):
        init = await session.initialize()
        if wait_stream:
            with anyio.fail_after(10):
                await checker.get_stream_open.wait()
        yield Sdk(session, checker, notes, init, checker.failures)
    assert checker.failures == []


def _text(result: types.CallToolResult) -> str:
    assert result.content, result
    first = result.content[0]
    assert isinstance(first, types.TextContent), first
    return first.text


def _pool_children(main_pid: int) -> set[int]:
    """Live (not zombie) child processes of the worker's main process: its pool."""
    return {pid for pid in children(main_pid) if pid_running(pid)}


def _replaced(main_pid: int, pid: int, size: int) -> bool:
    """The pool process ``pid`` is gone and the pool is back to ``size`` processes."""
    children = _pool_children(main_pid)
    return pid not in children and len(children) >= size


# -- the checker itself --------------------------------------------------------------------
def test_sse_parser_handles_split_chunks_and_comments() -> None:
    parser = EventParser()
    raw = ': ping\r\n\r\nevent: message\r\nid: 1-0\r\ndata: {"é":\r\ndata: 1}\r\n\r\ndata:x\n\n'
    events = []
    for byte in raw.encode():  # one byte at a time: every split, \r\n and UTF-8 included
        events += parser.feed(bytes([byte]))
    assert events == [Event('{"é":\n1}', "1-0"), Event("x", "1-0")]
    assert parser.feed(b"data: y\r") == []  # \r may be half of \r\n: not a line end yet
    assert [event.data for event in parser.feed(b"\r\n")] == ["y"]


def test_checker_reports_invalid_messages() -> None:
    checker = _Checker()
    checker._record(b'{"jsonrpc":"2.0","id":7,"method":"tasks/get","params":{"taskId":"t"}}')
    checker.check_text('{"jsonrpc":"2.0","id":7,"result":{"taskId":"t"}}')  # no status...
    checker.check_text('{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{}}')
    checker.check_text('{"jsonrpc":"2.0","id":8,"result":{}}')  # answers nothing we sent
    checker.check_text("not json")
    assert len(checker.failures) == 4, checker.failures
    assert checker.checked == []
    checker.check_text('{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"nope"}}')
    assert checker.checked == ["response:tasks/get"]


# -- end to end ----------------------------------------------------------------------------
async def test_initialize_list_tools_and_plain_call(bridge: str, worker: Process) -> None:
    with anyio.fail_after(TEST_DEADLINE):
        async with sdk(bridge) as client:
            assert client.init.protocolVersion == "2025-11-25"
            assert client.init.serverInfo.name == "mcp-celery-bridge"
            tasks_cap = client.init.capabilities.tasks
            assert tasks_cap is not None
            assert tasks_cap.list is not None and tasks_cap.cancel is not None
            assert tasks_cap.requests is not None and tasks_cap.requests.tools is not None
            assert tasks_cap.requests.tools.call is not None

            listed = await client.session.list_tools()
            support = {
                t.name: t.execution.taskSupport if t.execution else None for t in listed.tools
            }
            assert {k: support.get(k) for k in ("echo", "sleep", "spin", "fail")} == {
                "echo": "optional",
                "sleep": "required",
                "spin": "required",
                "fail": "required",
            }
            assert listed.nextCursor is None

            result = await client.session.call_tool("echo", {"text": "hello from the SDK"})
            assert result.isError is False
            assert _text(result) == "hello from the SDK"

            client.assert_valid("response:initialize", "response:tools/list", "response:tools/call")


async def test_sleep_as_task_polls_and_notifies(bridge: str, worker: Process) -> None:
    with anyio.fail_after(TEST_DEADLINE):
        async with sdk(bridge) as client:
            tasks = client.session.experimental
            created = await tasks.call_tool_as_task(
                "sleep", {"seconds": 0.6, "steps": 3}, ttl=60_000
            )
            task_id = created.task.taskId
            assert created.task.status == "working"
            assert created.task.ttl == 60_000

            polled = [status async for status in tasks.poll_task(task_id)]
            assert polled[-1].status == "completed"
            assert all(p.status == "working" for p in polled[:-1]), polled
            assert polled[-1].taskId == task_id

            result = await tasks.get_task_result(task_id, types.CallToolResult)
            assert not result.isError
            assert _text(result) == "slept 0.6s in 3 steps"
            assert result.meta is not None
            assert result.meta["io.modelcontextprotocol/related-task"] == {"taskId": task_id}

            # The SDK opened the session's GET stream itself; the notifications arrive there.
            await client.notes.wait_for(task_id, lambda p: p.status == "completed")
            seen = client.notes.by_task[task_id]
            assert [p.status for p in seen][-1] == "completed"
            assert all(p.status == "working" for p in seen[:-1]), seen
            assert "step 3/3" in [p.statusMessage for p in seen]
            updated = [p.lastUpdatedAt for p in seen]
            assert updated == sorted(updated)

            client.assert_valid(*A_TASKS_LIFE)


async def test_failing_task(bridge: str, worker: Process) -> None:
    with anyio.fail_after(TEST_DEADLINE):
        async with sdk(bridge) as client:
            tasks = client.session.experimental
            created = await tasks.call_tool_as_task("fail", {"message": "kaboom from the SDK"})
            task_id = created.task.taskId

            polled = [status async for status in tasks.poll_task(task_id)]
            final = polled[-1]
            assert final.status == "failed"
            assert final.statusMessage is not None
            assert "kaboom from the SDK" in final.statusMessage

            result = await tasks.get_task_result(task_id, types.CallToolResult)
            assert result.isError is True
            assert "kaboom from the SDK" in _text(result)

            note = await client.notes.wait_for(task_id, lambda p: p.status in TERMINAL)
            assert note.status == "failed"
            assert "kaboom from the SDK" in (note.statusMessage or "")

            client.assert_valid(*A_TASKS_LIFE)


async def test_cancel_running_spin(bridge: str, worker: Process) -> None:
    with anyio.fail_after(TEST_DEADLINE):
        async with sdk(bridge) as client:
            tasks = client.session.experimental
            created = await tasks.call_tool_as_task("spin", {"seconds": 30})
            task_id = created.task.taskId

            running = await client.notes.wait_for(
                task_id, lambda p: (p.statusMessage or "").startswith("running on")
            )
            assert running.status == "working"
            found = re.search(r"\(pid (\d+)\)", running.statusMessage or "")
            assert found, running.statusMessage
            pid = int(found.group(1))
            pool = _pool_children(worker.popen.pid)
            assert pid in pool, (pid, pool)

            cancelled = await tasks.cancel_task(task_id)
            assert cancelled.taskId == task_id
            assert cancelled.status == "cancelled"

            # The CPU loop never checks: the revoke terminates the pool process running it.
            # Once the worker has replaced that process it has handled the loss too, so any
            # late transition the worker would make (revoked, worker lost) has been made.
            with anyio.fail_after(10):
                while not _replaced(worker.popen.pid, pid, len(pool)):
                    await anyio.sleep(0.05)

            after = await tasks.get_task(task_id)
            assert after.status == "cancelled"
            assert after.statusMessage == cancelled.statusMessage

            with pytest.raises(McpError) as err:
                await tasks.get_task_result(task_id, types.CallToolResult)
            assert err.value.error.code == -32603
            assert isinstance(err.value.error.data, dict)
            assert err.value.error.data["status"] == "cancelled"
            assert err.value.error.data["taskId"] == task_id

            note = await client.notes.wait_for(task_id, lambda p: p.status in TERMINAL)
            assert note.status == "cancelled"
            assert note.statusMessage == cancelled.statusMessage
            statuses = [p.status for p in client.notes.by_task[task_id]]
            assert statuses[-1] == "cancelled"
            assert set(statuses[:-1]) == {"working"}, statuses

            client.assert_valid(
                "response:tools/call",
                "response:tasks/cancel",
                "response:tasks/get",
                "response:tasks/result",
                "notification:notifications/tasks/status",
            )


async def test_list_tasks_shows_the_sessions_tasks(bridge: str, worker: Process) -> None:
    with anyio.fail_after(TEST_DEADLINE):
        async with sdk(bridge) as client, sdk(bridge, wait_stream=False) as other:
            tasks = client.session.experimental
            first = (await tasks.call_tool_as_task("echo", {"text": "one"})).task.taskId
            second = (await tasks.call_tool_as_task("fail", {"message": "two"})).task.taskId
            # A plain call runs behind a hidden task, which is not the client's to list.
            plain = await client.session.call_tool("echo", {"text": "plain"})
            assert _text(plain) == "plain"
            assert _text(await tasks.get_task_result(first, types.CallToolResult)) == "one"
            assert (await tasks.get_task_result(second, types.CallToolResult)).isError

            listed = await tasks.list_tasks()
            assert [t.taskId for t in listed.tasks] == [first, second]
            assert [t.status for t in listed.tasks] == ["completed", "failed"]
            assert listed.nextCursor is None

            # Another session sees none of them, and cannot read them.
            assert (await other.session.experimental.list_tasks()).tasks == []
            with pytest.raises(McpError) as err:
                await other.session.experimental.get_task(first)
            assert err.value.error.code == -32602

            client.assert_valid("response:tasks/list", "response:tasks/result")
            other.assert_valid("response:tasks/list", "response:tasks/get")
