"""Peer 1: FastMCP 3 with Docket tasks (protocol 2025-11-25, SEP-1686 tasks), serving
``echo`` as a task tool over Streamable HTTP at ``/mcp``. FastMCP's own lifespan starts a
Docket worker inside the server process; Docket keeps its queue and task state in Redis
(``FASTMCP_DOCKET_URL``, ``FASTMCP_DOCKET_NAME``, set by the benchmark).

Run by the benchmark in its own venv (bench/peers/fastmcp3.txt):
``python bench/peers/fastmcp3_server.py PORT``. Typed against ``Any`` here: fastmcp is not
installed in the project's venv, where mypy runs."""

from __future__ import annotations

import sys

import uvicorn
from fastmcp import FastMCP  # type: ignore[import-not-found, unused-ignore]

server = FastMCP("bench-fastmcp3-peer")


async def echo(text: str) -> str:
    """Return the text."""
    return text


# task=True: the tool runs as a Docket task when the client asks for one (the tool's
# execution.taskSupport is "optional", FastMCP's default for task=True).
server.tool(task=True)(echo)

if __name__ == "__main__":
    app = server.http_app(path="/mcp")
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
