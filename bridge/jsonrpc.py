"""The JSON-RPC 2.0 wire: a request body read strictly, the ``Message`` it holds, error
objects, and JSON responses.

Every exception answered in-band becomes a JSON-RPC error object in ``error_response`` and
nowhere else: a ``JsonRpcError`` carries its code; anything else is logged and answered
``-32603 Internal error``, never a traceback. (``bridge.faults`` adds the HTTP status.)
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from starlette.responses import JSONResponse

from mcp_celery_bridge.bridge.shared import logs
from mcp_celery_bridge.bridge.shared.errors import (
    INTERNAL_ERROR,
    PARSE_ERROR,
    HttpError,
    JsonRpcError,
)

log = logging.getLogger("bridge.transport")

#: Deeper JSON is refused before anything reads it: no MCP message needs it, and Python's
#: own (de)serialisers give up near 1,000 levels.
MAX_DEPTH = 100
#: A body this large or smaller is parsed on the event loop (well under a millisecond).
THREAD_BYTES = 64 * 1024
#: Any ``\\uD800``-``\\uDFFF`` escape, paired or not (and some that are not escapes at all:
#: an escaped backslash before ``uD8..``); only a body with one needs the exact check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
#: A JSON string (skipped) or a bracket that opens a container outside one (group 1).
_OUTSIDE_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|([\[{])', re.DOTALL)


@dataclass(frozen=True)
class Message:
    """A JSON-RPC message that passed the envelope checks: a request (``method`` and
    ``id``), a notification (``method``, no ``id``) or a client's response (an ``id``, no
    ``method``, and ``body`` holds its ``result`` or ``error``)."""

    body: dict[str, Any]
    method: str | None
    id: str | int | None
    params: Any


class JsonResponse(JSONResponse):
    # ASCII-only output: a string the bridge echoes can never fail to encode.
    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(body: bytes, max_containers: int | None = None) -> Any:
    """The JSON-RPC message in ``body``: strict UTF-8 (no surrogates), no NaN/Infinity, at
    most ``MAX_DEPTH`` deep, no unpaired ``\\uD800``-style escapes, and at most
    ``max_containers`` arrays and objects (counted without parsing)."""
    containers = body.count(b"[") + body.count(b"{")
    if max_containers is not None and containers > max_containers:
        # The byte count includes brackets inside strings: only a body over the cap pays
        # for the exact count (a regex scan, in C) that skips them.
        containers = sum(1 for m in _OUTSIDE_STRINGS.finditer(body) if m.group(1))
    if max_containers is not None and containers > max_containers:
        # Containers are what json.loads builds slowest, holding the GIL throughout.
        message = f"Payload Too Large: more than {max_containers} JSON arrays and objects"
        raise HttpError(413, message)
    try:
        message = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise HttpError(400, "Parse error", PARSE_ERROR) from None
    # Both walks cost Python-level work per value; the byte scans (C, a few milliseconds
    # for 4 MiB) skip them for every message that cannot fail them.
    if containers > MAX_DEPTH:
        _check_depth(message)
    if _SURROGATE_ESCAPE.search(body):
        _check_strings(message)
    return message


async def read(body: bytes, max_containers: int | None = None) -> Any:
    """``parse`` off the event loop for a large body: its checks run in Python, and a worker
    thread lets the loop take the GIL back every switch interval. ``json.loads`` itself
    holds the GIL throughout; ``max_body_bytes`` bounds that."""
    if len(body) <= THREAD_BYTES:
        return parse(body, max_containers)
    return await anyio.to_thread.run_sync(parse, body, max_containers)


def _children(value: Any) -> Any:
    if isinstance(value, dict):
        return value.values()
    return value if isinstance(value, list) else ()


def _check_depth(message: Any) -> None:
    # Containers only: a container at MAX_DEPTH with any child puts a value deeper.
    stack: list[tuple[Any, int]] = [(message, 0)]
    while stack:
        value, depth = stack.pop()
        children = _children(value)
        if children and depth >= MAX_DEPTH:
            raise HttpError(400, f"Parse error: nested deeper than {MAX_DEPTH}", PARSE_ERROR)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _check_strings(message: Any) -> None:
    stack: list[Any] = [message]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            _utf8(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                _utf8(key)
                stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)


def _utf8(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise HttpError(400, "Parse error: unpaired surrogate", PARSE_ERROR) from None


def error_body(code: int, message: str, data: Any = None, id: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    body: dict[str, Any] = {"jsonrpc": "2.0", "error": error}
    if id is not None:
        # The schema types the id as string | integer, optional: leave it out when unknown.
        body["id"] = id
    return body


def error_response(exc: BaseException, id: Any) -> dict[str, Any]:
    if isinstance(exc, JsonRpcError):
        logs.annotate(error=exc.code)
        if exc.public != exc.message:
            log.warning("answering request %r with %r: %s", id, exc.public, exc.message)
        return error_body(exc.code, exc.public, exc.data, id)
    logs.annotate(error=INTERNAL_ERROR)
    log.exception("internal error answering request %r", id, exc_info=exc)
    return error_body(INTERNAL_ERROR, "Internal error", None, id)
