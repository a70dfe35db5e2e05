"""A light MCP client for load: its own HTTP/1.1 on raw asyncio streams (keep-alive,
Content-Length and chunked bodies). The benchmark keeps this transport rather than the
tests' httpx client (tests/client.py) for measurement's sake: thousands of open streams
and requests must cost the client little CPU and memory next to the bridge on a 2-CPU
machine, and the time a notification arrived is taken at the socket read, not after a
library's buffering. The messages and the SSE parsing are ``bridge.messages``, as in the
tests and ``call``. No schema checks: the tests do those; here only the fields the
scenarios need are read."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mcp_celery_bridge.bridge import messages
from mcp_celery_bridge.bridge.messages import RpcError

PATH = "/mcp"
VERSION = messages.LEGACY_VERSION


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # (no trailers are sent)
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            self.writer = None

    def _send(self, method: str, headers: dict[str, str], body: bytes) -> None:
        assert self.writer is not None
        lines = [f"{method} {PATH} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    async def request(self, method: str, headers: dict[str, str], body: bytes = b"") -> Response:
        if self.writer is None:
            await self.open()
        assert self.reader is not None
        self._send(method, headers, body)
        status, rh = await _read_head(self.reader)
        if "content-length" in rh:
            data = await self.reader.readexactly(int(rh["content-length"]))
        elif rh.get("transfer-encoding", "").lower() == "chunked":
            data = b"".join([c async for c in _chunks(self.reader)])
        else:
            data = b""
        if rh.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, rh, data)

    async def open_stream(self, headers: dict[str, str]) -> tuple[int, AsyncIterator[bytes]]:
        """Send a GET and return its status and an iterator over the body's chunks."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None
        self._send("GET", headers, b"")
        status, _ = await _read_head(self.reader)
        return status, _chunks(self.reader)


def parse_time(iso: str) -> float:
    """``createdAt``/``lastUpdatedAt`` (ISO 8601, ms, Z) as epoch seconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class Session:
    """One MCP session (2025-11-25). Requests go over ``conn``, which may be shared by
    sessions used one at a time (the session is in the header, not the connection)."""

    def __init__(self, host: str, port: int, conn: Connection | None = None) -> None:
        self.host = host
        self.port = port
        self.conn = conn or Connection(host, port)
        self.id = ""
        self._ids = itertools.count(1)

    def headers(self) -> dict[str, str]:
        h = messages.post_headers()
        if self.id:
            h.update(messages.session_headers(self.id, VERSION))
        return h

    @property
    def owner(self) -> str:
        return f"session:{self.id}"

    async def initialize(self, conn: Connection | None = None) -> None:
        conn = conn or self.conn
        body = messages.request(0, "initialize", messages.initialize_params("bench"))
        r = await conn.request("POST", self.headers(), json.dumps(body).encode())
        assert r.status == 200, (r.status, r.body[:300])
        self.id = r.headers["mcp-session-id"]
        note = messages.notification("notifications/initialized")
        r = await conn.request("POST", self.headers(), json.dumps(note).encode())
        assert r.status == 202, (r.status, r.body[:300])

    async def call(
        self, method: str, params: dict[str, Any] | None = None, conn: Connection | None = None
    ) -> dict[str, Any]:
        conn = conn or self.conn
        request_id = next(self._ids)
        body = messages.request(request_id, method, params)
        r = await conn.request("POST", self.headers(), json.dumps(body).encode())
        assert r.status == 200, (r.status, r.body[:300])
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            answers = [
                m
                for m in (json.loads(e.data) for e in messages.read_events([r.body]))
                if messages.is_answer(m, request_id)
            ]
            message = answers[-1]
        else:
            message = json.loads(r.body)
        if "error" in message:
            raise RpcError(message["error"])
        result: dict[str, Any] = message["result"]
        return result

    async def create_task(
        self,
        tool: str,
        arguments: dict[str, Any],
        ttl: int = 600_000,
        conn: Connection | None = None,
    ) -> dict[str, Any]:
        result = await self.call(
            "tools/call",
            {"name": tool, "arguments": arguments, "task": {"ttl": ttl}},
            conn,
        )
        task: dict[str, Any] = result["task"]
        return task


class Stream:
    """The session's GET SSE stream on its own connection. ``run()`` reads it until
    closed, calling ``on_status(params, received_at)`` for every
    ``notifications/tasks/status`` (``received_at`` is ``time.time()`` when the chunk
    arrived; ``perf`` is ``time.perf_counter()`` then)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.conn = Connection(session.host, session.port)
        self.status = 0
        self._chunks: AsyncIterator[bytes] | None = None

    async def open(self, retries: int = 0) -> int:
        """Open the stream; on a 503 close, wait and retry up to ``retries`` times. The
        number of 503 answers met."""
        headers = {
            "Accept": "text/event-stream",
            **messages.session_headers(self.session.id, VERSION),
        }
        refused = 0
        while True:
            self.status, self._chunks = await self.conn.open_stream(headers)
            if self.status == 200:
                return refused
            await self.conn.close()
            if self.status != 503 or refused >= retries:
                raise AssertionError(f"GET stream answered {self.status}")
            refused += 1
            await asyncio.sleep(0.05 * refused)

    async def run(self, on_status: Any) -> None:
        assert self._chunks is not None
        parser = messages.EventParser()
        try:
            async for chunk in self._chunks:
                received, perf = time.time(), time.perf_counter()
                for event in parser.feed(chunk):
                    message = json.loads(event.data)
                    if message.get("method") == "notifications/tasks/status":
                        on_status(message["params"], received, perf)
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def close(self) -> None:
        await self.conn.close()
