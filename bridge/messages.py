"""What an MCP client writes and reads, in both protocol eras: JSON-RPC requests and
notifications, the headers each era asks for (a 2025-11-25 session's; a 2026-07-28 stateless
request's ``_meta`` and its mirrored ``Mcp-Method``/``Mcp-Name``), and the Server-Sent Events
that answers and notifications arrive in.

The client side only: ``call`` (bridge/caller.py), the tests' client (tests/client.py) and the
benchmark's (bench/client.py) build and parse with it and bring their own HTTP. The server
never imports it, so a client mistake cannot hide behind a server constant."""

from __future__ import annotations

import base64
import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

LEGACY_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
ACCEPT = "application/json, text/event-stream"
#: The params field a 2026-07-28 request mirrors in ``Mcp-Name``.
NAME_FIELDS = {
    "tools/call": "name",
    "tasks/get": "taskId",
    "tasks/update": "taskId",
    "tasks/cancel": "taskId",
}
_LINE_END = re.compile(r"\r\n|\r|\n")


class RpcError(Exception):
    """A JSON-RPC error response, raised where a result was expected; ``status`` is the HTTP
    status it came with."""

    def __init__(self, error: dict[str, Any], status: int = 200) -> None:
        prefix = "" if status == 200 else f"HTTP {status}: "
        super().__init__(f"{prefix}{error.get('code')}: {error.get('message')}")
        self.error = error
        self.status = status
        self.code: int = error.get("code", 0)
        self.message: str = error.get("message", "")
        self.data: Any = error.get("data")


def request(request_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def initialize_params(
    client_name: str, capabilities: dict[str, Any] | None = None, version: str = LEGACY_VERSION
) -> dict[str, Any]:
    return {
        "protocolVersion": version,
        "capabilities": capabilities or {},
        "clientInfo": {"name": client_name, "version": "1"},
    }


def is_answer(message: Any, request_id: int) -> bool:
    """Whether ``message`` is the response to ``request_id`` (not a server request that
    happens to share its id)."""
    return isinstance(message, dict) and message.get("id") == request_id and "method" not in message


def post_headers() -> dict[str, str]:
    return {"Accept": ACCEPT, "Content-Type": "application/json"}


def session_headers(session_id: str | None, version: str | None) -> dict[str, str]:
    """What a 2025-11-25 client sends after ``initialize``: its session and the negotiated
    version (nothing before it)."""
    headers = {"MCP-Protocol-Version": version} if version else {}
    if session_id:
        headers["Mcp-Session-Id"] = session_id
    return headers


def modern_meta(
    client_name: str, *, tasks: bool = True, elicitation: bool = False
) -> dict[str, Any]:
    """The ``_meta`` a 2026-07-28 request carries in place of a session: version,
    capabilities (the tasks extension, form elicitation) and client info."""
    capabilities: dict[str, Any] = {"extensions": {TASKS_EXTENSION: {}}} if tasks else {}
    if elicitation:
        capabilities["elicitation"] = {"form": {}}
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": client_name, "version": "1"},
    }


def modern_headers(method: str, params: dict[str, Any]) -> dict[str, str]:
    """The headers of a 2026-07-28 POST: the version, and the method and name mirrored from
    the body (which the server checks against it)."""
    headers = {**post_headers(), "MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": method}
    field = NAME_FIELDS.get(method)
    if field and isinstance(params.get(field), str):
        headers["Mcp-Name"] = header_value(params[field])
    return headers


def header_value(value: str) -> str:
    """``value`` as a header carries it: as is when it is printable ASCII without edge
    spaces, else Base64 in ``=?base64?...?=``."""
    if value.isascii() and value.isprintable() and value == value.strip():
        return value
    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event that carried data; ``id`` is the last event id seen so far, as
    a reconnecting client would send it in Last-Event-ID."""

    data: str
    id: str = ""
    event: str = "message"


class EventParser:
    """An incremental SSE parser: bytes as they arrive in, each complete event out. Chunks may
    split anything (a UTF-8 character, a ``\\r\\n``); comments (keep-alives) and events
    without data yield nothing."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""

    def feed(self, chunk: bytes) -> list[Event]:
        text = self._buffer + self._text.decode(chunk)
        # A final \r may be the first half of a \r\n split across chunks: not a line end yet.
        held = "\r" if text.endswith("\r") else ""
        *lines, self._buffer = _LINE_END.split(text.removesuffix(held))
        self._buffer += held
        events = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def end(self) -> list[Event]:
        """The event the stream ended in the middle of, if it had data (a lenient reader's
        last chance; the SSE standard drops it)."""
        events = self.feed(b"\n") if self._buffer else []
        event = self._line("")
        return events if event is None else [*events, event]

    def _line(self, line: str) -> Event | None:
        if not line:
            data, self._data = self._data, []
            kind, self._event = self._event or "message", ""
            return Event("\n".join(data), self._last_id, kind) if data else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._last_id = value
        elif name == "event":
            self._event = value
        return None


def read_events(chunks: Iterable[bytes]) -> Iterator[Event]:
    """The events of an SSE body read chunk by chunk, each as soon as it is complete; an
    event the body ends in the middle of comes last."""
    parser = EventParser()
    for chunk in chunks:
        yield from parser.feed(chunk)
    yield from parser.end()
