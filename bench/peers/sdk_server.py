"""Peer 3: the official Python SDK's experimental tasks (mcp 1.x, protocol 2025-11-25),
serving ``echo`` as a task tool over Streamable HTTP at ``/mcp``. Tasks live in the SDK's
in-memory store and run in the server's own event loop: no Redis, no worker process.

Run by the benchmark in its own venv (bench/peers/sdk.txt):
``python bench/peers/sdk_server.py PORT``."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mcp.types as types
import uvicorn
from mcp.server.experimental.task_context import ServerTaskContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.applications import Starlette
from starlette.routing import Mount

server: Server[Any, Any] = Server("bench-sdk-peer")
# The SDK's defaults: an in-memory store and queue, and its own tasks/get, tasks/result,
# tasks/list and tasks/cancel handlers.
server.experimental.enable_tasks()

ECHO = types.Tool(
    name="echo",
    description="Return the text.",
    inputSchema={
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
    execution=types.ToolExecution(taskSupport=types.TASK_REQUIRED),
)


async def list_tools() -> list[types.Tool]:
    return [ECHO]


async def call_tool(name: str, arguments: dict[str, Any]) -> types.CreateTaskResult:
    ctx = server.request_context
    ctx.experimental.validate_task_mode(types.TASK_REQUIRED)
    text = str(arguments.get("text", ""))

    async def work(task: ServerTaskContext) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    created: types.CreateTaskResult = await ctx.experimental.run_task(work)
    return created


# (Registered by call rather than as decorators: the SDK's decorators are untyped.)
server.list_tools()(list_tools)  # type: ignore[no-untyped-call]
server.call_tool(validate_input=False)(call_tool)


def app() -> Starlette:
    manager = StreamableHTTPSessionManager(app=server)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            yield

    # Mounted at the root so that /mcp itself is served (a Mount at /mcp redirects /mcp
    # to /mcp/, an extra round trip no peer pays); the SDK's handler ignores the path.
    return Starlette(routes=[Mount("/", app=manager.handle_request)], lifespan=lifespan)


if __name__ == "__main__":
    uvicorn.run(app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
