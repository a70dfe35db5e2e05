"""Peer 2: FastMCP 4 with fastmcp-tasks (protocol 2026-07-28, the
``io.modelcontextprotocol/tasks`` extension), serving ``echo`` as a task tool over
Streamable HTTP at ``/mcp``. The extension's lifespan starts a Docket worker inside the
server process; Docket keeps its queue and task state in Redis (``FASTMCP_DOCKET_URL``,
``FASTMCP_DOCKET_NAME``, set by the benchmark).

Run by the benchmark in its own venv (bench/peers/fastmcp4.txt; FastMCP 4 needs mcp 2.x):
``python bench/peers/fastmcp4_server.py PORT``. Typed against ``Any`` here: fastmcp is not
installed in the project's venv, where mypy runs."""

from __future__ import annotations

import sys

import uvicorn
from fastmcp import FastMCP  # type: ignore[import-not-found, unused-ignore]
from fastmcp_tasks import TasksExtension  # type: ignore[import-not-found, unused-ignore]

server = FastMCP("bench-fastmcp4-peer")
# Backend and worker settings from the FASTMCP_DOCKET_* environment.
server.add_extension(TasksExtension())


async def echo(text: str) -> str:
    """Return the text."""
    return text


# task=True: the server runs the call as a task for a client that declares the extension.
server.tool(task=True)(echo)

if __name__ == "__main__":
    app = server.http_app(path="/mcp")
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
