"""Streamable HTTP transport rules (MCP 2025-11-25), checked with raw HTTP requests against the
bridge's app in process (the fast tier): status codes, and every error body a schema-valid
JSON-RPC error. What the HTTP server does to the bytes (whitespace around header values) is
checked against a real bridge process."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.inproc import sync_transport
from tests.schema import check, check_response

LATEST = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
BASE_HEADERS = {"Accept": ACCEPT, "Content-Type": "application/json"}


def rpc(method: str, params: Any = None, id: Any = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def init_params(version: str = LATEST) -> dict[str, Any]:
    return {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "transport-tests", "version": "1"},
    }


def message_of(response: httpx.Response) -> dict[str, Any]:
    """The one JSON-RPC message of a response, sent as JSON or as an SSE ``message`` event
    (a server may answer a POST either way)."""
    ctype = response.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        message: dict[str, Any] = response.json()
        return message
    assert ctype.startswith("text/event-stream"), (response.status_code, ctype, response.text)
    messages = []
    for block in response.text.replace("\r\n", "\n").split("\n\n"):
        data = [
            line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")
        ]
        if data and "".join(data):
            messages.append(json.loads("\n".join(data)))
    answers = [m for m in messages if "method" not in m]
    assert len(answers) == 1, messages
    return answers[0]


def assert_error(response: httpx.Response, status: int, code: int | None = None) -> dict[str, Any]:
    """The response has ``status`` and a body that is one valid JSON-RPC error."""
    assert response.status_code == status, (response.status_code, response.text)
    body = message_of(response)
    if code is not None:
        assert body["error"]["code"] == code, body
    check("JSONRPCErrorResponse", body)
    return body


class Session:
    """An initialized session, talked to with raw HTTP."""

    def __init__(self, http: httpx.Client, url: str, version: str = LATEST) -> None:
        self.http = http
        self.url = url
        response = http.post(
            url, json=rpc("initialize", init_params(version)), headers=BASE_HEADERS
        )
        assert response.status_code == 200, response.text
        message = message_of(response)
        check_response("initialize", message)
        self.result: dict[str, Any] = message["result"]
        self.id: str = response.headers["mcp-session-id"]
        self.version: str = self.result["protocolVersion"]
        initialized = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert initialized.status_code == 202, initialized.text

    def headers(self, **extra: str) -> dict[str, str]:
        return {
            **BASE_HEADERS,
            "Mcp-Session-Id": self.id,
            "MCP-Protocol-Version": self.version,
            **extra,
        }

    def post(self, body: Any, **headers: str) -> httpx.Response:
        content = body if isinstance(body, str | bytes) else json.dumps(body)
        return self.http.post(self.url, content=content, headers=self.headers(**headers))

    def ping(self, **headers: str) -> httpx.Response:
        return self.post(rpc("ping", id=7), **headers)


def assert_pong(response: httpx.Response, id: int = 7) -> None:
    assert response.status_code == 200, (response.status_code, response.text)
    message = message_of(response)
    assert message["id"] == id
    check_response("ping", message)
    assert message["result"] == {}


@pytest.fixture
def http(fast_bridge: str) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=15, transport=sync_transport(fast_bridge)) as client:
        yield client


@pytest.fixture
def session(http: httpx.Client, fast_bridge: str) -> Session:
    return Session(http, fast_bridge)


@pytest.fixture
def real_session(bridge: str) -> Iterator[Session]:
    """A session on a real bridge process, for the tests of what its HTTP server passes on."""
    with httpx.Client(timeout=15) as client:
        yield Session(client, bridge)


# -- sessions --------------------------------------------------------------------------------


def test_missing_session_id_is_400(http: httpx.Client, fast_bridge: str) -> None:
    response = http.post(
        fast_bridge, json=rpc("ping"), headers={**BASE_HEADERS, "MCP-Protocol-Version": LATEST}
    )
    assert_error(response, 400)


@pytest.mark.parametrize(
    "body",
    [
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 4, "result": {}},
        rpc("ping", [1, 2]),
        rpc("tools/call", "x"),
        rpc("no/such/method"),
    ],
    ids=["notification", "response", "ping-params-list", "call-params-str", "unknown-method"],
)
def test_missing_session_id_is_400_whatever_the_message(
    http: httpx.Client, fast_bridge: str, body: dict[str, Any]
) -> None:
    headers = {**BASE_HEADERS, "MCP-Protocol-Version": LATEST}
    assert_error(http.post(fast_bridge, json=body, headers=headers), 400)


@pytest.mark.parametrize(
    "body",
    [rpc("ping", [1, 2]), rpc("tools/call", "x")],
    ids=["ping-params-list", "call-params-str"],
)
def test_unknown_session_is_404_even_with_bad_params(
    http: httpx.Client, fast_bridge: str, body: dict[str, Any]
) -> None:
    headers = {**BASE_HEADERS, "Mcp-Session-Id": "f" * 32, "MCP-Protocol-Version": LATEST}
    assert_error(http.post(fast_bridge, json=body, headers=headers), 404)


def test_get_without_a_session_is_405(http: httpx.Client, fast_bridge: str) -> None:
    # Dual-era: without a legacy session there is no GET stream (the 2026-07-28 rule).
    response = http.get(fast_bridge, headers={"Accept": "text/event-stream"})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    "sid",
    ["0123456789abcdef0123456789abcdef", "not a valid id", "x" * 200],
    ids=["well-formed", "with-spaces", "too-long"],
)
def test_unknown_session_id_is_404(http: httpx.Client, fast_bridge: str, sid: str) -> None:
    headers = {**BASE_HEADERS, "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
    assert_error(http.post(fast_bridge, json=rpc("ping"), headers=headers), 404)
    # Notifications and GET streams of an unknown session are refused the same way.
    notification = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert_error(http.post(fast_bridge, json=notification, headers=headers), 404)
    get_headers = {"Accept": "text/event-stream", "Mcp-Session-Id": sid}
    assert_error(http.get(fast_bridge, headers=get_headers), 404)


def test_deleted_session_is_404(session: Session) -> None:
    assert_pong(session.ping())
    deleted = session.http.delete(session.url, headers=session.headers())
    assert deleted.status_code == 200, deleted.text
    assert_error(session.ping(), 404)
    assert_error(session.http.delete(session.url, headers=session.headers()), 404)
    get_headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session.id}
    assert_error(session.http.get(session.url, headers=get_headers), 404)


def test_delete_without_a_session_is_405(http: httpx.Client, fast_bridge: str) -> None:
    response = http.delete(fast_bridge)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


# -- MCP-Protocol-Version --------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1999-01-01", "garbage", ""])
def test_unsupported_protocol_version_header_is_400(session: Session, version: str) -> None:
    assert_error(session.ping(**{"MCP-Protocol-Version": version}), 400)


def test_any_supported_version_header_is_accepted_on_a_session(
    http: httpx.Client, fast_bridge: str
) -> None:
    # As the SDK servers do (and the conformance suite expects): only an unsupported
    # version is refused, not one other than the session's.
    latest = Session(http, fast_bridge)
    assert_pong(latest.ping(**{"MCP-Protocol-Version": "2025-06-18"}))
    older = Session(http, fast_bridge, "2025-06-18")
    assert_pong(older.ping(**{"MCP-Protocol-Version": LATEST}))
    assert_error(older.ping(**{"MCP-Protocol-Version": "2025-06-19"}), 400)


# -- whitespace around header values (RFC 9110 5.5) --------------------------------------------


def raw_request(url: str, method: str, headers: list[tuple[str, str]], body: bytes = b"") -> str:
    """The status line and headers a raw HTTP/1.1 request gets, its header values sent byte
    for byte (HTTP client libraries trim or refuse surrounding whitespace themselves)."""
    parsed = httpx.URL(url)
    lines = [f"{method} {parsed.raw_path.decode()} HTTP/1.1", f"Host: {parsed.netloc.decode()}"]
    lines += [f"{name}:{value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    with socket.create_connection((parsed.host, parsed.port or 80), timeout=15) as sock:
        sock.sendall("\r\n".join(lines).encode() + body)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received.decode(errors="replace")


def test_session_headers_are_trimmed(real_session: Session, bridge: str) -> None:
    session = real_session
    common = [("Accept", f" {ACCEPT}\t"), ("Content-Type", "application/json  ")]
    padded = [("Mcp-Session-Id", f"  {session.id}  "), ("MCP-Protocol-Version", f"\t{LATEST} ")]
    ping = json.dumps(rpc("ping", id=7)).encode()
    answer = raw_request(bridge, "POST", [*common, *padded], ping)
    assert answer.startswith("HTTP/1.1 200"), answer
    stream = [("Accept", "text/event-stream "), *padded, ("Last-Event-ID", " 0-0  ")]
    answer = raw_request(bridge, "GET", stream)
    assert answer.startswith("HTTP/1.1 200"), answer
    assert "text/event-stream" in answer


def test_stateless_headers_are_trimmed(bridge: str) -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = json.dumps(rpc("tools/list", {"_meta": meta})).encode()
    headers = [
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        ("MCP-Protocol-Version", "2026-07-28  "),
        ("Mcp-Method", " tools/list\t"),
    ]
    answer = raw_request(bridge, "POST", headers, body)
    assert answer.startswith("HTTP/1.1 200"), answer
    body = json.dumps(rpc("tools/call", {"name": "echo", "arguments": {}, "_meta": meta})).encode()
    headers[3] = ("Mcp-Method", "tools/call")
    answer = raw_request(bridge, "POST", [*headers, ("Mcp-Name", "echo  ")], body)
    assert answer.startswith("HTTP/1.1 200"), answer


# -- Host and Origin -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "http://localhost.evil.example:1234", "https://localhost:1"]
)
def test_origin_not_allowed_is_403(session: Session, origin: str) -> None:
    assert_error(session.ping(Origin=origin), 403)


@pytest.mark.parametrize("origin", ["http://localhost:1234", "http://127.0.0.1:9"])
def test_allowed_origin_passes(session: Session, origin: str) -> None:
    assert_pong(session.ping(Origin=origin))


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:80",
        "127.0.0.1.evil.example",
        "localhost.evil.example:8000",
        "[::1]evil.example",
    ],
)
def test_host_not_allowed_is_403(session: Session, host: str) -> None:
    assert_error(session.ping(Host=host), 403)


@pytest.mark.parametrize("host", ["localhost:8000", "LOCALHOST", "[::1]:8000", "127.0.0.1:1"])
def test_allowed_host_passes(session: Session, host: str) -> None:
    assert_pong(session.ping(Host=host))


def test_forbidden_origin_is_refused_before_anything_else(
    http: httpx.Client, fast_bridge: str
) -> None:
    # Not even an initialize gets through: no session is created for a foreign page.
    response = http.post(
        fast_bridge,
        json=rpc("initialize", init_params()),
        headers={**BASE_HEADERS, "Origin": "http://evil.example"},
    )
    assert_error(response, 403)
    assert "mcp-session-id" not in response.headers


# -- Accept, Content-Type, size ---------------------------------------------------------------


def test_accept_allowing_neither_json_nor_sse_is_406(session: Session) -> None:
    assert_error(session.ping(Accept="text/html"), 406)


def test_get_without_event_stream_in_accept_is_406(session: Session) -> None:
    headers = {"Accept": "application/json", "Mcp-Session-Id": session.id}
    assert_error(session.http.get(session.url, headers=headers), 406)


def test_text_plain_body_is_415(session: Session) -> None:
    assert_error(session.ping(**{"Content-Type": "text/plain"}), 415)


def test_body_over_the_limit_is_413(session: Session) -> None:
    padding = "x" * (5 * 1024 * 1024)
    body = json.dumps(rpc("ping", {"_meta": {"padding": padding}}))
    assert_error(session.post(body), 413)
    assert_pong(session.ping())


def test_chunked_body_over_the_limit_is_413(session: Session) -> None:
    # No Content-Length: the limit is enforced while reading.
    chunk = b"x" * (256 * 1024)

    def chunks() -> Iterator[bytes]:
        yield b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"p": "'
        for _ in range(20):
            yield chunk
        yield b'"}}'

    response = session.http.post(session.url, content=chunks(), headers=session.headers())
    assert_error(response, 413)
    assert_pong(session.ping())


# -- JSON-RPC framing --------------------------------------------------------------------------


def test_invalid_json_is_parse_error(session: Session) -> None:
    assert_error(session.post('{"jsonrpc": "2.0", "id": 1, "method": '), 400, -32700)


def test_batch_is_invalid_request(session: Session) -> None:
    assert_error(session.post([rpc("ping", id=1), rpc("ping", id=2)]), 400, -32600)


@pytest.mark.parametrize(
    "body",
    [
        {"hello": "world"},
        {"jsonrpc": "1.0", "id": 1, "method": "ping"},
        {"id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "id": 1, "method": 5},
        "just a string",
        42,
    ],
    ids=["object", "jsonrpc-1.0", "no-jsonrpc", "no-method", "method-not-string", "str", "int"],
)
def test_not_json_rpc_is_invalid_request(session: Session, body: Any) -> None:
    assert_error(session.post(json.dumps(body)), 400, -32600)


@pytest.mark.parametrize(
    "bad_id",
    [True, False, None, {"a": 1}, [1], 1.5],
    ids=["true", "false", "null", "object", "array", "float"],
)
def test_bad_id_is_400(session: Session, bad_id: Any) -> None:
    assert_error(session.post(rpc("ping", id=bad_id)), 400, -32600)


def test_unknown_method_is_method_not_found(session: Session) -> None:
    response = session.post(rpc("no/such/method", {}, id="abc"))
    body = assert_error(response, 200, -32601)
    assert body["id"] == "abc"


def test_unknown_tool_is_invalid_params(session: Session) -> None:
    response = session.post(rpc("tools/call", {"name": "no-such-tool", "arguments": {}}, id=3))
    body = assert_error(response, 200, -32602)
    assert body["id"] == 3


@pytest.mark.parametrize("params", [[1, 2], "x", 5])
@pytest.mark.parametrize("method", ["ping", "tools/call", "tasks/list"])
def test_params_not_an_object_is_invalid_params(session: Session, method: str, params: Any) -> None:
    body = assert_error(session.post(rpc(method, params, id=11)), 200, -32602)
    assert body["id"] == 11


def test_notification_is_202_without_body(session: Session) -> None:
    response = session.post({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {}})
    assert response.status_code == 202, response.text
    assert response.content == b""


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": 99, "result": {}},
        {"jsonrpc": "2.0", "id": "s-1", "error": {"code": -32601, "message": "nope"}},
    ],
    ids=["result", "error"],
)
def test_client_response_is_202(session: Session, message: dict[str, Any]) -> None:
    response = session.post(message)
    assert response.status_code == 202, response.text
    assert response.content == b""


def test_put_is_405(session: Session) -> None:
    response = session.http.put(session.url, json=rpc("ping"), headers=session.headers())
    assert response.status_code == 405, response.text
    assert "POST" in response.headers.get("allow", ""), response.headers
    if response.headers.get("content-type", "").startswith("application/json"):
        check("JSONRPCErrorResponse", response.json())


# -- initialize -----------------------------------------------------------------------------


def test_initialize_with_unsupported_version_answers_the_latest(
    http: httpx.Client, fast_bridge: str
) -> None:
    session = Session(http, fast_bridge, "1999-01-01")
    assert session.result["protocolVersion"] == LATEST
    assert "tasks" in session.result["capabilities"]
    assert_pong(session.ping())


def test_initialize_with_2025_03_26_is_echoed_without_tasks(
    http: httpx.Client, fast_bridge: str
) -> None:
    session = Session(http, fast_bridge, "2025-03-26")
    assert session.result["protocolVersion"] == "2025-03-26"
    assert "tasks" not in session.result["capabilities"]
    assert "tools" in session.result["capabilities"]
    assert_pong(session.ping())


@pytest.mark.parametrize(
    "params",
    [
        None,
        {"capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        {"protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t"}},
        {
            "protocolVersion": LATEST,
            "capabilities": [],
            "clientInfo": {"name": "t", "version": "1"},
        },
    ],
    ids=["no-params", "no-version", "no-client-version", "capabilities-list"],
)
def test_bad_initialize_is_invalid_params(
    http: httpx.Client, fast_bridge: str, params: dict[str, Any] | None
) -> None:
    response = http.post(fast_bridge, json=rpc("initialize", params, id=5), headers=BASE_HEADERS)
    body = assert_error(response, 200, -32602)
    assert body["id"] == 5
    assert "mcp-session-id" not in response.headers


# -- still alive ----------------------------------------------------------------------------


def test_server_still_serves_after_all_this(http: httpx.Client, fast_bridge: str) -> None:
    session = Session(http, fast_bridge)
    assert_pong(session.ping())
    tools = session.post(rpc("tools/list", id=8))
    assert tools.status_code == 200
    listed = message_of(tools)
    check_response("tools/list", listed)
    names = {t["name"] for t in listed["result"]["tools"]}
    assert {"echo", "sleep"} <= names
