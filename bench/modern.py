"""The lean client's 2026-07-28 side: no session; every request carries the version and
the client's capabilities (the tasks extension declared) in ``_meta`` and mirrors its
method and name in headers. Only what the peers scenario needs: ``tools/call`` answered
with a task, and ``tasks/get``."""

from __future__ import annotations

import itertools
import json
from typing import Any

from bench.client import Connection
from mcp_celery_bridge.bridge import messages
from mcp_celery_bridge.bridge.messages import RpcError


class ModernClient:
    """Requests one at a time over one keep-alive connection."""

    def __init__(self, host: str, port: int) -> None:
        self.conn = Connection(host, port)
        self._ids = itertools.count(1)
        self._meta = messages.modern_meta("bench")

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        request_id = next(self._ids)
        params = {**params, "_meta": self._meta}
        body = json.dumps(messages.request(request_id, method, params)).encode()
        r = await self.conn.request("POST", messages.modern_headers(method, params), body)
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            found = [
                m
                for m in (json.loads(e.data) for e in messages.read_events([r.body]))
                if messages.is_answer(m, request_id)
            ]
            message = found[-1]
        else:
            message = json.loads(r.body)
        if "error" in message:
            raise RpcError(message["error"], r.status)
        result: dict[str, Any] = message["result"]
        return result

    async def create_task(self, tool: str, arguments: dict[str, Any]) -> str:
        result = await self.call("tools/call", {"name": tool, "arguments": arguments})
        assert result.get("resultType") == "task", result
        task_id: str = result["taskId"]
        return task_id

    async def status(self, task_id: str) -> str:
        status: str = (await self.call("tasks/get", {"taskId": task_id}))["status"]
        return status

    async def close(self) -> None:
        await self.conn.close()
