"""A raw Streamable HTTP MCP client for the tests: hand-made requests, every server message
checked against the official schema."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from httpx_sse import EventSource

from tests import schema
from tests.inproc import async_transport

ACCEPT = "application/json, text/event-stream"


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error['code']}: {error['message']}")
        self.code: int = error["code"]
        self.message: str = error["message"]
        self.data: Any = error.get("data")


class RawClient:
    def __init__(self, url: str, http: httpx.AsyncClient) -> None:
        self.url = url
        self.http = http
        self.session_id: str | None = None
        self.version = "2025-11-25"
        self._ids = itertools.count(1)
        self.last_request_id = 0

    def headers(self, **extra: str) -> dict[str, str]:
        h = {"Accept": ACCEPT, "Content-Type": "application/json"}
        if self.session_id:
            h["Mcp-Session-Id"] = self.session_id
            h["MCP-Protocol-Version"] = self.version
        h.update(extra)
        return h

    async def initialize(
        self, version: str = "2025-11-25", capabilities: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        message = await self.request(
            "initialize",
            {
                "protocolVersion": version,
                "capabilities": capabilities or {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        )
        result: dict[str, Any] = message["result"]
        self.version = result["protocolVersion"]
        await self.notify("notifications/initialized")
        return result

    async def post(self, body: Any, **headers: str) -> httpx.Response:
        return await self.http.post(
            self.url, content=json.dumps(body), headers=self.headers(**headers)
        )

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            body["params"] = params
        response = await self.post(body)
        assert response.status_code == 202, response.text
        assert response.content == b""

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The whole JSON-RPC response message, schema-checked."""
        request_id = next(self._ids)
        self.last_request_id = request_id
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            body["params"] = params
        async with self.http.stream(
            "POST", self.url, content=json.dumps(body), headers=self.headers()
        ) as response:
            assert response.status_code == 200, (response.status_code, await response.aread())
            if method == "initialize":
                self.session_id = response.headers["mcp-session-id"]
            ctype = response.headers["content-type"]
            if ctype.startswith("application/json"):
                message = json.loads(await response.aread())
            else:
                assert ctype.startswith("text/event-stream"), ctype
                message = None
                async for event in EventSource(response).aiter_sse():
                    candidate = json.loads(event.data)
                    if candidate.get("id") == request_id:
                        message = candidate
                        break
                    schema.check_server_message(candidate)
                assert message is not None, "the SSE response ended without an answer"
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

    async def wait_status(
        self, task_id: str, statuses: set[str], timeout: float = 20
    ) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            while True:
                task = await self.get_task(task_id)
                if task["status"] in statuses:
                    return task
                await anyio.sleep(0.05)

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
                async for event in EventSource(response).aiter_sse():
                    if not event.data:
                        continue  # a keep-alive comment, which httpx-sse hands over empty
                    message = json.loads(event.data)
                    schema.check_server_message(message)
                    yield event.id, message

            yield events()


@contextlib.asynccontextmanager
async def connect(
    url: str,
    version: str = "2025-11-25",
    token: str | None = None,
    capabilities: dict[str, Any] | None = None,
) -> AsyncIterator[RawClient]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    # An in-process app (the fast tier) is reached through its transport, by its URL.
    transport = async_transport(url)
    async with httpx.AsyncClient(timeout=30, headers=headers, transport=transport) as http:
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
