"""Raw-socket clients that misbehave on purpose (unauthenticated large bodies, slow headers,
trickled bodies), and a timed ``ping``: the attacks of the pre-authentication tests and of
``bench/preauth.py``."""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx

#: A body of the shape the issue measured: 4 MiB of arrays nested 100 deep, side by side,
#: which the old code parsed and walked (seconds of CPU) before it authenticated.
UNIT = b"[" * 99 + b"]" * 99
NESTED = b"[" + b",".join([UNIT] * ((4 * 1024 * 1024 - 2) // (len(UNIT) + 1))) + b"]"


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def head(url: str, length: int, headers: dict[str, str] | None = None) -> bytes:
    """The request line and headers of a JSON POST to ``url`` announcing ``length`` bytes."""
    host, port = address(url)
    lines = [
        f"POST {urlsplit(url).path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Accept: application/json, text/event-stream",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextlib.contextmanager
def raw(url: str, timeout: float = 10.0) -> Iterator[socket.socket]:
    sock = socket.create_connection(address(url), timeout=timeout)
    try:
        yield sock
    finally:
        sock.close()


def status_of(sock: socket.socket) -> int | None:
    """The status of the response arriving on ``sock``; None when the server closed the
    connection without one. Raises TimeoutError when nothing comes within its timeout."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        data += chunk
    return int(data.split(b" ", 2)[1])


class Senders:
    """Threads that POST ``body`` without a token, over and over, until stopped."""

    def __init__(self, url: str, count: int = 2, body: bytes = NESTED) -> None:
        self.url = url
        self.body = body
        self.sent = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with raw(self.url, timeout=60) as sock:
                    sock.sendall(head(self.url, len(self.body)) + self.body)
                    status_of(sock)
                    self.sent += 1
            except OSError:
                continue  # a reset or a timeout: the attacker just tries again

    def __enter__(self) -> Senders:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)


def session(url: str, token: str) -> httpx.Client:
    """An authenticated HTTP client with a fresh 2025-11-25 session."""
    client = httpx.Client(
        timeout=120,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
        },
    )
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "flood", "version": "1"},
        },
    }
    response = client.post(url, json=init)
    response.raise_for_status()
    client.headers["Mcp-Session-Id"] = response.headers["mcp-session-id"]
    client.headers["MCP-Protocol-Version"] = "2025-11-25"
    return client


def ping_median(client: httpx.Client, url: str, count: int) -> float:
    """Median seconds of ``count`` sequential pings."""
    took = []
    for n in range(count):
        started = time.perf_counter()
        response = client.post(url, json={"jsonrpc": "2.0", "id": n + 1, "method": "ping"})
        took.append(time.perf_counter() - started)
        assert response.json()["result"] == {}, response.text
    return statistics.median(took)
