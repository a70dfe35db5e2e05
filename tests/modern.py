"""A raw stateless (2026-07-28) MCP client for the tests: every request carries its
``_meta`` and mirrored headers; every server message is checked against the schemas."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from httpx_sse import EventSource

from tests import schema

VERSION = "2026-07-28"
EXT = "io.modelcontextprotocol/tasks"
NAME_FIELDS = {
    "tools/call": "name",
    "tasks/get": "taskId",
    "tasks/update": "taskId",
    "tasks/cancel": "taskId",
}


class ModernError(Exception):
    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {error['code']}: {error['message']}")
        self.status = status
        self.code: int = error["code"]
        self.message: str = error["message"]
        self.data: Any = error.get("data")


def header_value(value: str) -> str:
    if value.isascii() and value.isprintable() and value == value.strip():
        return value
    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


class ModernClient:
    def __init__(
        self, url: str, http: httpx.AsyncClient, *, tasks: bool = True, elicitation: bool = False
    ) -> None:
        self.url = url
        self.http = http
        self.tasks = tasks
        self.elicitation = elicitation
        self._ids = itertools.count(1)

    def meta(self) -> dict[str, Any]:
        capabilities: dict[str, Any] = {"extensions": {EXT: {}}} if self.tasks else {}
        if self.elicitation:
            capabilities["elicitation"] = {"form": {}}
        return {
            "io.modelcontextprotocol/protocolVersion": VERSION,
            "io.modelcontextprotocol/clientCapabilities": capabilities,
            "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "1"},
        }

    def build(
        self, method: str, params: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        body_params = {**(params or {}), "_meta": self.meta()}
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": body_params}
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": VERSION,
            "Mcp-Method": method,
        }
        field = NAME_FIELDS.get(method)
        if field and isinstance(body_params.get(field), str):
            headers["Mcp-Name"] = header_value(body_params[field])
        return body, headers

    async def send(
        self, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """HTTP status and the response message (from JSON or from the SSE stream)."""
        async with self.http.stream(
            "POST", self.url, content=json.dumps(body), headers=headers
        ) as response:
            ctype = response.headers.get("content-type", "")
            assert "mcp-session-id" not in response.headers, "no session in the stateless era"
            if ctype.startswith("text/event-stream"):
                assert response.headers.get("x-accel-buffering") == "no"
                async for event in EventSource(response).aiter_sse():
                    message = json.loads(event.data)
                    if "id" in message:
                        break
                    schema.check_modern_notification(message)
                else:
                    raise AssertionError("SSE response ended without an answer")
            else:
                message = json.loads(await response.aread())
            schema.check_modern_response(body["method"], message)
            return response.status_code, message

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        body, headers = self.build(method, params)
        status, message = await self.send(body, headers)
        if "error" in message:
            raise ModernError(status, message["error"])
        assert status == 200
        result: dict[str, Any] = message["result"]
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcp-celery-bridge"
        return result

    async def wait_status(
        self, task_id: str, statuses: set[str], timeout: float = 20
    ) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            while True:
                task = await self.request("tasks/get", {"taskId": task_id})
                if task["status"] in statuses:
                    return task
                await anyio.sleep(0.05)

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

            async def messages() -> AsyncIterator[dict[str, Any]]:
                async for event in EventSource(response).aiter_sse():
                    message = json.loads(event.data)
                    if "id" in message:
                        schema.check_modern_response("subscriptions/listen", message)
                    else:
                        schema.check_modern_notification(message)
                    yield message

            yield messages()
