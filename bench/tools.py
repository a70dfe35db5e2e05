"""A tool only the benchmark declares (``MCP_BRIDGE_TOOL_MODULES`` lists it for the
bridge and the bridge worker): a no-op that waits for a gate, so that many tasks can be
created first and all finish afterwards."""

from __future__ import annotations

from bench.gate import gate_client, wait_gate
from mcp_celery_bridge.workers.tools import tool


@tool(task_support="required")
def gated(key: str) -> str:
    """Return once the Redis key ``key`` exists (the benchmark opens the gate)."""
    wait_gate(gate_client("MCP_BRIDGE_REDIS_URL"), key)
    return "x"
