"""The tools this bridge serves: those declared by the modules ``tool_modules`` names, in
declaration order; looked up by name, listed a page at a time, and the checks a call's
arguments pass before anything is recorded or queued.

The app builds one (``Catalogue.load``) and owns it. It holds only the tools of the
configured modules, not every tool that happens to be imported in the process."""

from __future__ import annotations

import importlib
import json
import logging
import math
from collections.abc import Iterable
from typing import Any

from mcp_celery_bridge.bridge import param_headers
from mcp_celery_bridge.bridge.cursors import decode_cursor, encode_cursor
from mcp_celery_bridge.bridge.shared.errors import InvalidParams
from mcp_celery_bridge.bridge.shared.results import tool_error
from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.workers.tools import Tool, catalogue

log = logging.getLogger(__name__)


def declared_in(modules: list[str]) -> list[Tool]:
    """The tools ``modules`` declare (a tool module may be a package: its submodules count)
    or expose, importing them first; in declaration order."""
    namespaces = [vars(importlib.import_module(name)) for name in modules]
    exposed = {id(value) for namespace in namespaces for value in namespace.values()}
    chosen: list[Tool] = []
    left: list[Tool] = []
    for t in catalogue().values():
        mine = any(t.module == m or t.module.startswith(m + ".") for m in modules)
        (chosen if mine or id(t.func) in exposed else left).append(t)
    if left:
        # Registered by an import elsewhere: a worker runs them, but no client can call them.
        log.warning(
            "tools not served (declared outside MCP_BRIDGE_TOOL_MODULES): %s",
            ", ".join(t.name for t in left),
        )
    return chosen


def tool_definition(declared: Tool, *, with_execution: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": declared.name, "inputSchema": declared.input_schema}
    if declared.description:
        entry["description"] = declared.description
    if with_execution:
        entry["execution"] = {"taskSupport": declared.task_support}
    return entry


def non_finite(arguments: Any) -> str | None:
    """Where ``arguments`` hold a NaN or an infinity (a dotted path), else None. JSON has no
    such numbers (``bridge.jsonrpc`` refuses ``NaN`` and ``Infinity``), but a number beyond
    a float's range, ``1e400``, parses to infinity; a tool handed one may loop forever
    (``seconds=inf``), and no schema type says "finite". Iterative, so a deeply nested value
    cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [("", arguments)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where or "arguments"
        if isinstance(value, dict):
            stack.extend((f"{where}.{key}" if where else str(key), v) for key, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}.{i}" if where else str(i), v) for i, v in enumerate(value))
    return None


class Catalogue:
    def __init__(self, settings: Settings, tools: Iterable[Tool]) -> None:
        self.settings = settings
        # In the order the tools were declared, as the SDK servers list them: a tool
        # module's author decides what a client sees first.
        self.tools = {t.name: t for t in tools}
        self.names = list(self.tools)
        #: Arguments each tool mirrors into ``Mcp-Param-*`` headers (a tool that declares
        #: them wrongly stops the bridge here, at start, rather than confusing clients).
        self._mirrored = {
            name: param_headers.declared(t.input_schema, name) for name, t in self.tools.items()
        }

    @classmethod
    def load(cls, settings: Settings) -> Catalogue:
        """The tools of ``settings.tool_modules`` (importing those modules)."""
        return cls(settings, declared_in(settings.tool_modules))

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def tool(self, name: str) -> Tool:
        declared = self.tools.get(name)
        if declared is None:
            raise InvalidParams(f"Unknown tool: {name}")
        return declared

    def mirrored(self, name: str) -> dict[str, str]:
        """The arguments tool ``name`` mirrors into headers (none for an unknown tool)."""
        return self._mirrored.get(name, {})

    def page(self, cursor: Any, *, with_execution: bool) -> dict[str, Any]:
        """One page of ``tools/list`` (tools in declaration order, opaque offset cursors)."""
        start = decode_cursor("o", cursor) if cursor is not None else 0
        size = self.settings.page_size
        names = self.names[start : start + size]
        page: dict[str, Any] = {
            "tools": [tool_definition(self.tools[n], with_execution=with_execution) for n in names]
        }
        if start + size < len(self.names):
            page["nextCursor"] = encode_cursor("o", start + size)
        return page

    def check_progress_token(self, token: str | int | None) -> None:
        """Refuse a ``progressToken`` larger than the limit: it would be stored with the task
        and copied into every progress notification."""
        if token is None:
            return
        size = len(json.dumps(token).encode())
        if size > self.settings.max_progress_token_bytes:
            raise InvalidParams(
                f"progressToken too large: {size} bytes as JSON (at most "
                f"{self.settings.max_progress_token_bytes})"
            )

    def invalid_arguments(self, declared: Tool, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """The ``CallToolResult`` to answer when the arguments do not fit the schema.
        Raises InvalidParams when they are too large to be worth reading."""
        size = len(json.dumps(arguments, separators=(",", ":")).encode())
        if size > self.settings.max_argument_bytes:
            raise InvalidParams(
                f"Tool arguments too large: {size} bytes (at most "
                f"{self.settings.max_argument_bytes})"
            )
        where = non_finite(arguments)
        if where is not None:
            return tool_error(
                f"Invalid arguments for tool {declared.name}: {where}: not a finite number"
            )
        problems = declared.problems(arguments)
        if problems is not None:
            return tool_error(f"Invalid arguments for tool {declared.name}: {problems}")
        return None
