"""What a client costs the bridge before it has proved who it is (issue 15, item 1): no body
read or parsed before authentication, headers and bodies under deadlines, connections
bounded, and an authenticated caller still served while unauthenticated senders hammer."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.flood import NESTED, Senders, head, ping_median, raw, session, status_of
from tests.services import bridge_server, tls, wait_for

TOKEN = "tok-preauth"
#: Short deadlines, so that the tests see them expire; long enough for any honest client.
DEADLINE_S = 2.0
#: How long a test waits for a refusal the bridge owes: generous, on a shared 2-CPU machine.
PATIENCE_S = DEADLINE_S + 10


@pytest.fixture(scope="module")
def guarded(env: dict[str, str], log_dir: Path) -> Iterator[str]:
    settings = {
        **env,
        "MCP_BRIDGE_AUTH_TOKENS": f"{TOKEN}:alice",
        "MCP_BRIDGE_HEADER_TIMEOUT_S": str(DEADLINE_S),
        "MCP_BRIDGE_BODY_TIMEOUT_S": str(DEADLINE_S),
        # Keep-alive comments come after both deadlines: the first one proves a stream
        # outlived them.
        "MCP_BRIDGE_SSE_PING_S": str(DEADLINE_S * 2),
    }
    with bridge_server(settings, log_dir, "bridge-preauth") as url:
        yield url


def trickle(sock: socket.socket, pieces: Iterator[bytes], patience: float) -> bytes:
    """Send one piece at a time, each time giving the server 0.2 s to answer; what it
    answered (b"" when it closed the connection). Fails after ``patience`` seconds."""
    deadline = time.monotonic() + patience
    sock.settimeout(0.2)
    for piece in pieces:
        assert time.monotonic() < deadline, "the server kept waiting for a slow client"
        try:
            sock.sendall(piece)
            return sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionError:
            return b""
    raise AssertionError("ran out of pieces")


def forever(piece: bytes) -> Iterator[bytes]:
    while True:
        yield piece


def test_no_token_is_refused_before_the_body_is_sent(guarded: str) -> None:
    # The client announces 4 MiB and sends none of it: an answer can only come from the
    # headers, so the body was neither read nor parsed.
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"}):
        with raw(guarded, timeout=PATIENCE_S) as sock:
            sock.sendall(head(guarded, len(NESTED), headers))
            assert status_of(sock) == 401, headers


def test_the_refused_body_can_still_be_sent(guarded: str) -> None:
    # A client that sends its body regardless reads its 401, and the connection serves a
    # next request: the bridge discards the unread rest rather than resetting.
    with raw(guarded, timeout=PATIENCE_S) as sock:
        sock.sendall(head(guarded, len(NESTED)) + NESTED)
        assert status_of(sock) == 401
    response = httpx.post(
        guarded,
        content=NESTED,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        timeout=PATIENCE_S,
    )
    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith("Unauthorized")


def test_a_ping_stays_fast_while_unauthenticated_senders_hammer(guarded: str) -> None:
    with contextlib.closing(session(guarded, TOKEN)) as client:
        ping_median(client, guarded, 5)  # warm up
        idle = ping_median(client, guarded, 15)
        with Senders(guarded, count=2) as senders:
            wait_for(lambda: senders.sent >= 2, 60, "the senders to get going")
            loaded = ping_median(client, guarded, 7)
    print(f"ping p50 idle {idle * 1000:.1f} ms, with 2 senders {loaded * 1000:.1f} ms")
    # Before the fix each 4 MiB body cost seconds of event loop (ratio in the thousands).
    assert loaded < 50 * idle, (idle, loaded)


def test_slow_headers_are_cut_off(guarded: str) -> None:
    with raw(guarded) as sock:
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = trickle(sock, forever(b"X-Slow: y\r\n"), PATIENCE_S)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["message"].startswith(
        "Request Timeout"
    )


def test_a_silent_connection_is_cut_off(guarded: str) -> None:
    with raw(guarded, timeout=PATIENCE_S) as sock:
        assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")
        assert sock.recv(65536) == b""


def test_a_trickled_body_is_cut_off(guarded: str) -> None:
    # Authenticated, so that the bridge does read the body.
    with raw(guarded) as sock:
        sock.sendall(head(guarded, 1000, {"Authorization": f"Bearer {TOKEN}"}))
        answer = trickle(sock, forever(b" "), PATIENCE_S)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"\r\nconnection: close\r\n" in answer.lower()
        sock.settimeout(PATIENCE_S)
        while chunk := sock.recv(65536):  # the rest of the answer, then the connection ends
            answer += chunk
        assert b'"code":-32600' in answer


def test_a_stream_outlives_the_deadlines(guarded: str) -> None:
    # The deadlines bound a request's arrival, not how long its response may last.
    with (
        contextlib.closing(session(guarded, TOKEN)) as client,
        client.stream("GET", guarded, headers={"Accept": "text/event-stream"}) as stream,
    ):
        assert stream.status_code == 200
        started = time.monotonic()
        for line in stream.iter_lines():
            if line.startswith(":"):  # the first keep-alive comment
                break
        assert time.monotonic() - started > DEADLINE_S


def test_headers_too_large_are_refused(guarded: str) -> None:
    with raw(guarded, timeout=PATIENCE_S) as sock:
        sock.sendall(b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        answer = trickle(sock, forever(b"a" * 65536), PATIENCE_S)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]


def test_too_many_json_containers_are_refused(guarded: str) -> None:
    # Authenticated: the 4 MiB of nested arrays is refused by a byte count, not
    # built and walked.
    with contextlib.closing(session(guarded, TOKEN)) as client:
        json_body = {"Content-Type": "application/json"}
        response = client.post(guarded, content=NESTED, headers=json_body)
    assert response.status_code == 413
    assert response.json()["error"]["message"].startswith("Payload Too Large")


def test_connections_are_bounded(env: dict[str, str], log_dir: Path) -> None:
    settings = {**env, "MCP_BRIDGE_MAX_CONNECTIONS": "3", "MCP_BRIDGE_HEADER_TIMEOUT_S": "60"}
    with bridge_server(settings, log_dir, "bridge-connections") as url:
        with contextlib.ExitStack() as held:
            socks = [held.enter_context(raw(url)) for _ in range(3)]
            for sock in socks:
                sock.sendall(b"POST /mcp HTTP/1.1\r\n")  # partial headers, held open
            response = httpx.get(url, timeout=PATIENCE_S)
            assert response.status_code == 503
            assert response.headers["connection"] == "close"
        # Once they are gone, requests are served again.
        wait_for(
            lambda: httpx.get(url, verify=tls()).status_code != 503, PATIENCE_S, "a served request"
        )
