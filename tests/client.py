"""The tests' MCP client, in both protocol eras, over any ``httpx.AsyncClient``: ``RawClient``
is a 2025-11-25 session (``initialize``, the session's GET stream, Last-Event-ID);
``ModernClient`` a stateless 2026-07-28 client (``_meta`` and mirrored headers on every
request, ``subscriptions/listen``). Requests are hand-made, so a test can also send what no
real client would; every message the server sends is checked against the official schema
(tests/schema.py). The messages and the SSE parser are ``bridge.messages``, which ``call``
and the benchmark use too."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx

from mcp_celery_bridge.bridge import messages
from mcp_celery_bridge.bridge.messages import ACCEPT, RpcError, header_value
from tests import schema
from tests.inproc import async_transport
from tests.services import eventually, tls

__all__ = [
    "ACCEPT",
    "EXT",
    "RUNNING",
    "TERMINAL",
    "VERSION",
    "ModernClient",
    "RawClient",
    "RpcError",
    "connect",
    "header_value",
    "list_all",
    "next_status",
    "running_pid",
    "sse_events",
]

EXT = messages.TASKS_EXTENSION
VERSION = messages.MODERN_VERSION
TERMINAL = {"completed", "failed", "cancelled"}
#: The status message a worker sets when a task's body starts.
RUNNING = re.compile(r"^running on (\S+) \(pid (\d+)\)$")


async def sse_events(response: httpx.Response) -> AsyncIterator[messages.Event]:
    """The events of an SSE response as they arrive."""
    parser = messages.EventParser()
    async for chunk in response.aiter_bytes():
        for event in parser.feed(chunk):
            yield event


class _Client:
    """What both eras' clients share: the URL, the HTTP client, request ids, and reading an
    answer from a JSON body or from the SSE stream that precedes it with notifications."""

    def __init__(self, url: str, http: httpx.AsyncClient) -> None:
        self.url = url
        self.http = http
        self._ids = itertools.count(1)

    async def get_task(self, task_id: str) -> dict[str, Any]:
        raise NotImplementedError

    async def wait_status(
        self, task_id: str, statuses: set[str], timeout: float = 20
    ) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            while True:
                task = await self.get_task(task_id)
                if task["status"] in statuses:
                    return task
                await anyio.sleep(0.05)

    @staticmethod
    async def _answer(
        response: httpx.Response,
        answers: Callable[[dict[str, Any]], bool],
        check_other: Callable[[dict[str, Any]], None],
    ) -> dict[str, Any]:
        """The response message: the body, or the first SSE event that ``answers`` (each
        event before it goes through ``check_other``)."""
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            message: dict[str, Any] = json.loads(await response.aread())
            return message
        async for event in sse_events(response):
            candidate = json.loads(event.data)
            if answers(candidate):
                return dict(candidate)
            check_other(candidate)
        raise AssertionError("the SSE response ended without an answer")


class RawClient(_Client):
    """A 2025-11-25 client: ``initialize`` opens a session that later requests carry."""

    def __init__(self, url: str, http: httpx.AsyncClient) -> None:
        super().__init__(url, http)
        self.session_id: str | None = None
        self.version = messages.LEGACY_VERSION
        self.last_request_id = 0

    def headers(self, **extra: str) -> dict[str, str]:
        h = messages.post_headers()
        if self.session_id:
            h.update(messages.session_headers(self.session_id, self.version))
        h.update(extra)
        return h

    async def initialize(
        self, version: str = messages.LEGACY_VERSION, capabilities: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        params = messages.initialize_params("t", capabilities, version)
        result: dict[str, Any] = (await self.request("initialize", params))["result"]
        self.version = result["protocolVersion"]
        await self.notify("notifications/initialized")
        return result

    async def post(self, body: Any, **headers: str) -> httpx.Response:
        return await self.http.post(
            self.url, content=json.dumps(body), headers=self.headers(**headers)
        )

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        response = await self.post(messages.notification(method, params))
        assert response.status_code == 202, response.text
        assert response.content == b""

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The whole JSON-RPC response message, schema-checked."""
        request_id = next(self._ids)
        self.last_request_id = request_id
        body = messages.request(request_id, method, params)
        async with self.http.stream(
            "POST", self.url, content=json.dumps(body), headers=self.headers()
        ) as response:
            assert response.status_code == 200, (response.status_code, await response.aread())
            if method == "initialize":
                self.session_id = response.headers["mcp-session-id"]
            ctype = response.headers["content-type"]
            assert ctype.startswith(("application/json", "text/event-stream")), ctype
            message = await self._answer(
                response,
                lambda m: messages.is_answer(m, request_id),
                schema.check_server_message,
            )
        assert message["id"] == request_id
        task = (
            method == "tools/call"
            and (params or {}).get("task") is not None
            and self.version >= "2025-11-25"
        )
        schema.check_response(method, message, task=task)
        return message

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The result, or RpcError."""
        message = await self.request(method, params)
        if "error" in message:
            raise RpcError(message["error"])
        result: dict[str, Any] = message["result"]
        return result

    async def create_task(
        self, tool: str, arguments: dict[str, Any], ttl: int | None = None
    ) -> dict[str, Any]:
        task: dict[str, Any] = {} if ttl is None else {"ttl": ttl}
        result = await self.call("tools/call", {"name": tool, "arguments": arguments, "task": task})
        created: dict[str, Any] = result["task"]
        return created

    async def get_task(self, task_id: str) -> dict[str, Any]:
        return await self.call("tasks/get", {"taskId": task_id})

    @contextlib.asynccontextmanager
    async def stream(
        self, last_event_id: str | None = None
    ) -> AsyncIterator[AsyncIterator[tuple[str, dict[str, Any]]]]:
        """The session's GET stream, as (event id, message) pairs, schema-checked."""
        headers = self.headers(Accept="text/event-stream")
        headers.pop("Content-Type")
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        async with self.http.stream(
            "GET", self.url, headers=headers, timeout=httpx.Timeout(5, read=None)
        ) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")

            async def events() -> AsyncIterator[tuple[str, dict[str, Any]]]:
                async for event in sse_events(response):
                    if not event.data:
                        continue
                    message = json.loads(event.data)
                    schema.check_server_message(message)
                    yield event.id, message

            yield events()


class ModernClient(_Client):
    """A stateless 2026-07-28 client: each request declares its version, capabilities (the
    tasks extension unless ``tasks`` is false; form elicitation with ``elicitation``) and
    client in ``_meta``, and mirrors its method and name in headers."""

    def __init__(
        self, url: str, http: httpx.AsyncClient, *, tasks: bool = True, elicitation: bool = False
    ) -> None:
        super().__init__(url, http)
        self.tasks = tasks
        self.elicitation = elicitation

    def meta(self) -> dict[str, Any]:
        return messages.modern_meta("tests", tasks=self.tasks, elicitation=self.elicitation)

    def build(
        self, method: str, params: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """A request's body and headers, for a test to alter before ``send``."""
        body_params = {**(params or {}), "_meta": self.meta()}
        body = messages.request(next(self._ids), method, body_params)
        return body, messages.modern_headers(method, body_params)

    async def send(
        self, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """HTTP status and the response message (from JSON or from the SSE stream)."""
        async with self.http.stream(
            "POST", self.url, content=json.dumps(body), headers=headers
        ) as response:
            assert "mcp-session-id" not in response.headers, "no session in the stateless era"
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                assert response.headers.get("x-accel-buffering") == "no"
            message = await self._answer(
                response, lambda m: "id" in m, schema.check_modern_notification
            )
            schema.check_modern_response(body["method"], message)
            return response.status_code, message

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The result, or RpcError (with the HTTP status)."""
        body, headers = self.build(method, params)
        status, message = await self.send(body, headers)
        if "error" in message:
            raise RpcError(message["error"], status)
        assert status == 200
        result: dict[str, Any] = message["result"]
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcp-celery-bridge"
        return result

    async def get_task(self, task_id: str) -> dict[str, Any]:
        return await self.request("tasks/get", {"taskId": task_id})

    @contextlib.asynccontextmanager
    async def listen(self, task_ids: list[str]) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """A ``subscriptions/listen`` stream, as its messages (schema-checked)."""
        body, headers = self.build("subscriptions/listen", {"notifications": {"taskIds": task_ids}})
        async with self.http.stream(
            "POST",
            self.url,
            content=json.dumps(body),
            headers=headers,
            timeout=httpx.Timeout(10, read=None),
        ) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")

            async def received() -> AsyncIterator[dict[str, Any]]:
                async for event in sse_events(response):
                    message = json.loads(event.data)
                    if "id" in message:
                        schema.check_modern_response("subscriptions/listen", message)
                    else:
                        schema.check_modern_notification(message)
                    yield message

            yield received()


@contextlib.asynccontextmanager
async def connect(
    url: str,
    version: str = messages.LEGACY_VERSION,
    token: str | None = None,
    capabilities: dict[str, Any] | None = None,
) -> AsyncIterator[RawClient]:
    """An initialized 2025-11-25 session on ``url``."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    # An in-process app (the fast tier) is reached through its transport, by its URL.
    transport = async_transport(url)
    async with httpx.AsyncClient(
        timeout=30, headers=headers, transport=transport, verify=tls()
    ) as http:
        client = RawClient(url, http)
        await client.initialize(version, capabilities)
        yield client


async def next_status(
    events: AsyncIterator[tuple[str, dict[str, Any]]],
    task_id: str,
    status: str,
    timeout: float = 20,
) -> tuple[str, dict[str, Any]]:
    """Read the stream until ``task_id`` reaches ``status``."""
    with anyio.fail_after(timeout):
        async for event_id, message in events:
            params = message.get("params", {})
            if (
                message["method"] == "notifications/tasks/status"
                and params["taskId"] == task_id
                and params["status"] == status
            ):
                return event_id, message
    raise AssertionError("stream ended")


async def list_all(client: RawClient) -> list[dict[str, Any]]:
    """Every task ``tasks/list`` shows the session, page after page."""
    tasks: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    while True:
        page = await client.call("tasks/list", params)
        tasks += page["tasks"]
        if "nextCursor" not in page:
            return tasks
        params = {"cursor": page["nextCursor"]}


async def running_pid(
    client: RawClient | ModernClient, task_id: str, timeout: float = 20, *, replay: bool = False
) -> tuple[str, int]:
    """(worker node, pid) of the pool process running ``task_id``, from the status message
    the worker sets when the body starts, read with ``tasks/get`` (so a task run again shows
    its new process; the message lasts while a one-step ``sleep`` runs). With ``replay`` (a
    session's own task), from the session's stream replayed from its first event instead, so
    a status that progress overwrote at once is still seen."""
    if replay:
        assert isinstance(client, RawClient)
        with anyio.fail_after(timeout):
            async with client.stream(last_event_id="0-0") as events:
                async for _, message in events:
                    params = message["params"]
                    if params["taskId"] != task_id:
                        continue
                    assert params["status"] == "working", params
                    match = RUNNING.match(params.get("statusMessage", ""))
                    if match:
                        return match.group(1), int(match.group(2))
        raise AssertionError("the stream ended")

    async def running() -> tuple[str, int] | None:
        task = await client.get_task(task_id)
        match = RUNNING.match(task.get("statusMessage", ""))
        return (match.group(1), int(match.group(2))) if match else None

    found: tuple[str, int] = await eventually(running, timeout, f"{task_id} to start")
    return found
