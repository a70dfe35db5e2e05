"""Hostile and broken input (issue 3): property-based tests that throw thousands of malformed
messages at the bridge's app in process (the ``fast_bridge`` fixture: the fast tier, tools
run inline by ``tests.inline``).

Every answer must be the spec's: an HTTP status the spec (or the README) names for the
situation, never a 5xx; a body that is one JSON-RPC message (or an SSE stream of them) whose
errors validate against the schema of the era the request spoke; no traceback or Python
exception text, on the wire or in the bridge's log; and the bridge keeps serving (checked
after every test with a legacy ``initialize`` + ``ping`` and a modern ``server/discover``).

Each legacy test opens a real session first (``tests.client``) so session-bound code is
reached; modern requests are built valid (``ModernClient.build``), then one part is broken.

Regressions: the tests at the end of this file pin the bugs these properties found, each as
a minimal example, against an in-process app of their own.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest
from httpx_sse import EventSource
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests import schema
from tests.client import EXT, VERSION, ModernClient, connect, header_value
from tests.inproc import AppServer, app_server, async_transport, settings_of, sync_transport

LEGACY = "2025-11-25"
LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
MODERN = VERSION
ACCEPT = "application/json, text/event-stream"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPS = "io.modelcontextprotocol/clientCapabilities"
META_INFO = "io.modelcontextprotocol/clientInfo"

#: Statuses the spec and the README name for an answer to a request (no 5xx: the one
#: documented 503, Redis down, cannot happen here).
SPEC_STATUSES = frozenset({200, 202, 400, 403, 404, 405, 406, 413, 415})
#: Statuses of a transport-level refusal (``HttpError``), answered before any method runs.
TRANSPORT_CODES = frozenset({-32600, -32700})
#: In the stateless era each of these codes has its HTTP status (README, "Two protocol eras";
#: the 2026-07-28 schema says "MUST be 400" for -32020/-32021/-32022).
MODERN_STATUS = {-32020: {400}, -32021: {400}, -32022: {400}, -32601: {404}, -32602: {200, 400}}
LEGACY_METHODS = frozenset("initialize ping tools/list tools/call tasks/get tasks/list".split())
LEGACY_METHODS |= {"tasks/result", "tasks/cancel"}
MODERN_METHODS = frozenset("server/discover tools/list tools/call subscriptions/listen".split())
MODERN_METHODS |= {"tasks/get", "tasks/update", "tasks/cancel"}
#: Methods whose ``Mcp-Name`` header mirrors a params field (2026-07-28).
NAME_FIELDS = dict.fromkeys(["tasks/get", "tasks/update", "tasks/cancel"], "taskId")
NAME_FIELDS["tools/call"] = "name"
#: Mirrored into ``Mcp-Name``, a value is sent only up to this size: a header of a megabyte
#: is refused by uvicorn itself (connection reset), before the bridge sees the request.
MAX_MIRRORED = 32 * 1024
#: Tool names the fuzzers may call. Every one finishes at once on a worker (never ``sleep``,
#: ``spin``, ``nap`` or ``mark_after``, which could hold the shared worker for long).
FAST_TOOLS = ("echo", "add", "structured", "fail")

EXCEPTION_TEXT = re.compile(
    r"Traceback|\b[A-Z]\w*(?:Error|Exception)\((?:'|\"|\))"
    r"|<[\w.]+ object at 0x[0-9a-f]+>|File \"[^\"]+\.py\", line \d+"
)


def fuzz(examples: int) -> settings:
    """The settings of every property here: ``examples`` requests, no deadline (a request
    to a real server, some through a worker), fixtures shared by all examples of a test.
    The count scales with the active Hypothesis profile's ``max_examples`` (100, all of
    them, by default; ``pytest -m fast`` alone takes a tenth: tests/conftest.py)."""
    return settings(
        max_examples=max(10, examples * settings.default.max_examples // 100),
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
        database=None,  # no .hypothesis/ in the work tree; a failure prints its reproduction
        print_blob=True,
    )


# -- the wire ---------------------------------------------------------------------------------

RawHeaders = list[tuple[bytes, bytes]]
HeaderSpec = Mapping[str, str | bytes | None]


def raw_headers(headers: HeaderSpec) -> RawHeaders:
    """Headers as raw bytes (non-ASCII goes out as is); a None value leaves the header out."""
    return [
        (name.encode(), value if isinstance(value, bytes) else value.encode("latin-1"))
        for name, value in headers.items()
        if value is not None
    ]


def header_of(headers: RawHeaders, name: str) -> bytes | None:
    wanted = name.lower().encode()
    return next((value for key, value in headers if key.lower() == wanted), None)


def _strict_constant(name: str) -> Any:
    raise AssertionError(f"the server sent the non-JSON literal {name}")


def strict_json(text: str) -> Any:
    return json.loads(text, parse_constant=_strict_constant)


@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    sse: bool
    text: str
    messages: list[Any]


def exchange(
    http: httpx.Client,
    url: str,
    content: bytes,
    headers: RawHeaders,
    method: str = "POST",
) -> Answer:
    """One request; the answer's messages (an SSE stream is read up to its response, or up to
    a listen stream's acknowledgement; a GET stream is not read at all)."""
    try:
        with http.stream(method, url, content=content, headers=headers) as response:
            ctype = response.headers.get("content-type", "")
            if ctype.startswith("text/event-stream"):
                parts: list[str] = []
                messages: list[Any] = []
                if method == "POST":
                    for event in EventSource(response).iter_sse():
                        if not event.data:
                            continue
                        parts.append(event.data)
                        message = strict_json(event.data)
                        messages.append(message)
                        if not isinstance(message, dict) or "method" not in message:
                            break  # the response: the end of this exchange
                        if message["method"] == "notifications/subscriptions/acknowledged":
                            break  # a listen stream stays open; its first message will do
                return Answer(
                    response.status_code, response.headers, True, "\n".join(parts), messages
                )
            body = response.read()
    except httpx.TransportError as exc:
        raise AssertionError(
            f"{method} failed at the transport level ({exc!r}): {content[:300]!r} {headers!r}"
        ) from exc
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AssertionError(f"response body is not UTF-8: {body[:300]!r}") from exc
    messages = []
    if text and ctype.startswith("application/json"):
        messages = [strict_json(text)]
    return Answer(response.status_code, response.headers, False, text, messages)


def era_of(message: Any, headers: RawHeaders) -> str:
    """The era a POST speaks (README): ``_meta`` naming a protocol version, or a stateless
    ``MCP-Protocol-Version`` header, is 2026-07-28; anything else 2025-11-25."""
    params = message.get("params") if isinstance(message, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    if isinstance(meta, dict) and META_VERSION in meta:
        return MODERN
    return MODERN if header_of(headers, "mcp-protocol-version") == MODERN.encode() else LEGACY


def _request_id(message: Any) -> Any:
    if isinstance(message, dict) and "id" in message:
        rid = message["id"]
        if isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool)):
            return rid
    return None


def check_answer(
    answer: Answer,
    *,
    era: str,
    sent: Any = None,
    statuses: frozenset[int] | set[int] = SPEC_STATUSES,
    codes: frozenset[int] | set[int] | None = None,
) -> dict[str, Any] | None:
    """Assert that ``answer`` is what the spec allows; return its JSON-RPC response, if any.

    ``sent`` is the parsed request (None when it was not JSON); ``codes`` the JSON-RPC error
    codes allowed for it besides a transport refusal.
    """
    where = f"HTTP {answer.status}: {answer.text[:600]!r}"
    assert answer.status in statuses, where
    assert answer.status < 500, where
    assert not EXCEPTION_TEXT.search(answer.text), where
    if answer.status == 202:
        assert answer.text == "" and not answer.messages, where
        return None
    if not answer.messages:
        # Only a 405 (no such HTTP method here) or an opened GET stream may come without
        # a message; anything else with a body must be JSON-RPC.
        assert answer.status == 405 or (answer.sse and answer.status == 200), where
        assert answer.status != 405 or answer.text == "", where
        return None
    for message in answer.messages:
        assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", where
    if not answer.sse:
        assert len(answer.messages) == 1, where
    *notifications, last = answer.messages
    for note in notifications:
        assert "method" in note and "id" not in note, where
        _check_notification(note, era)
    if "method" in last:  # a listen stream, which answers with its acknowledgement first
        assert answer.sse and answer.status == 200, where
        assert last["method"] == "notifications/subscriptions/acknowledged", where
        _check_notification(last, era)
        return None
    rid = _request_id(sent)
    method = sent.get("method") if isinstance(sent, dict) else None
    if "error" in last:
        error = last["error"]
        if era == MODERN:
            schema.check_modern("JSONRPCErrorResponse", last)
            special = schema.MODERN_ERROR_DEFS.get(error["code"])
            if special:
                schema.check_modern(special, last)
        else:
            schema.check("JSONRPCErrorResponse", last)
        code = error["code"]
        # The catch-all of an unexpected exception (logged with a traceback): never the answer
        # to bad input, which has its own code.
        assert not (code == -32603 and error["message"] == "Internal error"), where
        if answer.status != 200:
            assert code in TRANSPORT_CODES | set(MODERN_STATUS), where
        if era == MODERN and code in MODERN_STATUS:
            assert answer.status in MODERN_STATUS[code], where
        if era == MODERN and answer.status == 404:
            assert code == -32601, where
        if era == LEGACY:
            assert answer.status != 200 or code not in TRANSPORT_CODES, where
        if codes is not None and answer.status == 200:
            assert code in codes, where
        if answer.status == 200 and rid is not None:
            assert last.get("id") == rid, where
        return cast(dict[str, Any], last)
    assert answer.status == 200, where
    assert "result" in last and last.get("id") == rid, where
    params = sent.get("params") if isinstance(sent, dict) else None
    if era == MODERN:
        schema.check_modern_response(str(method), last)
    elif method in schema.RESULT_DEFS:
        task = (
            method == "tools/call" and isinstance(params, dict) and params.get("task") is not None
        )
        schema.check_response(str(method), last, task=task)
    return cast(dict[str, Any], last)


def _check_notification(message: dict[str, Any], era: str) -> None:
    if era == MODERN:
        schema.check_modern_notification(message)
    else:
        schema.check_server_message(message)


# -- the target: a session on the shared bridge ----------------------------------------------


@dataclass
class Target:
    url: str
    http: httpx.Client
    log: Path
    log_offset: int
    sid: str
    version: str
    legacy_task: str  # a completed task of this session
    modern_task: str  # a completed stateless task
    modern: ModernClient
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))

    def legacy_headers(self) -> dict[str, str | bytes | None]:
        return {
            "Accept": ACCEPT,
            "Content-Type": "application/json",
            "Mcp-Session-Id": self.sid,
            "MCP-Protocol-Version": self.version,
        }

    def legacy(self, method: str, params: Any = None, *, id: Any = None) -> dict[str, Any]:
        """A request of this session (``params`` MISSING or None: none; ``id``: a fresh one)."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self.ids), "method": method}
        if id is not None:
            message["id"] = id
        if params is not MISSING and params is not None:
            message["params"] = params
        return message

    def send(
        self, content: bytes, headers: HeaderSpec | RawHeaders, method: str = "POST"
    ) -> Answer:
        raw = headers if isinstance(headers, list) else raw_headers(headers)
        answer = exchange(self.http, self.url, content, raw, method)
        self.assert_log_clean()
        return answer

    def post(
        self,
        message: Any,
        headers: HeaderSpec | None = None,
        *,
        statuses: frozenset[int] | set[int] = SPEC_STATUSES,
        codes: frozenset[int] | set[int] | None = None,
        ensure_ascii: bool = True,
    ) -> tuple[Answer, dict[str, Any] | None]:
        """Send a JSON message (legacy session headers unless told) and check the answer."""
        raw = raw_headers(self.legacy_headers() if headers is None else headers)
        content = json.dumps(message, ensure_ascii=ensure_ascii).encode()
        answer = self.send(content, raw)
        era = era_of(message, raw)
        if not parses(content):
            # NaN, an unpaired surrogate, too deep: not a JSON text the bridge reads at all.
            check_answer(answer, era=era, statuses={400})
            assert answer.messages[0]["error"]["code"] == -32700, answer.text
            return answer, None
        return answer, check_answer(answer, era=era, sent=message, statuses=statuses, codes=codes)

    def modern_request(
        self, method: str, params: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, str | bytes | None]]:
        body, headers = self.modern.build(method, params)
        return body, dict(headers)

    def assert_log_clean(self) -> None:
        """No traceback in what the bridge logged since the last look (so a failing example
        is the one that caused it)."""
        with self.log.open("rb") as log:
            log.seek(self.log_offset)
            new = log.read()
        self.log_offset += len(new)
        assert b"Traceback" not in new, new[-4000:].decode(errors="replace")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


async def _prepare(url: str) -> tuple[str, str, str, str]:
    """A legacy session with one completed task, and one completed stateless task."""
    async with connect(url) as client:
        created = await client.create_task("echo", {"text": "fuzz"})
        await client.wait_status(created["taskId"], {"completed"})
        assert client.session_id is not None
        sid, version = client.session_id, client.version
    async with httpx.AsyncClient(timeout=30, transport=async_transport(url)) as http:
        modern = ModernClient(url, http)
        task = await modern.request("tools/call", {"name": "echo", "arguments": {"text": "fuzz"}})
        await modern.wait_status(task["taskId"], {"completed"})
    return sid, version, created["taskId"], task["taskId"]


async def _still_serving(url: str) -> None:
    async with connect(url) as client:
        assert await client.call("ping") == {}
    async with httpx.AsyncClient(timeout=30, transport=async_transport(url)) as http:
        result = await ModernClient(url, http).request("server/discover")
        assert MODERN in result["supportedVersions"]


def assert_still_serving(url: str) -> None:
    """A valid legacy initialize + ping and a modern server/discover still work."""
    anyio.run(_still_serving, url)


@pytest.fixture
def target(fast_bridge: str, inproc: AppServer) -> Iterator[Target]:
    bridge = fast_bridge
    log = inproc.log
    offset = log.stat().st_size
    sid, version, legacy_task, modern_task = anyio.run(_prepare, bridge)
    with httpx.Client(timeout=httpx.Timeout(30), transport=sync_transport(bridge)) as http:
        del http.headers["accept"]  # so that a request may really go without one
        modern = ModernClient(bridge, cast(httpx.AsyncClient, None))  # build() only
        yield Target(bridge, http, log, offset, sid, version, legacy_task, modern_task, modern)
    assert_still_serving(bridge)
    with log.open("rb") as handle:
        handle.seek(offset)
        new = handle.read().decode(errors="replace")
    assert "Traceback" not in new, new[-4000:]


# -- strategies -------------------------------------------------------------------------------

# Hypothesis never draws lone surrogates unless asked (they cannot be encoded), so texts are
# valid Unicode: strings with lone surrogates are the regression tests' (a known bug).
TEXT = st.text(max_size=24)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),  # NaN and +-Infinity go out as the NaN/Infinity literals Python's json reads
    TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
#: A field's replacement: gone, or any JSON value (every type, so every wrong type).
FIELD = st.one_of(st.just(MISSING), JSON)


def set_path(base: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``base`` with ``value`` at ``path`` (MISSING removes it)."""
    if not path:
        return value
    root = copy.deepcopy(base)
    node = root
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    if value is MISSING:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return root


#: Maps NUL and whitespace bytes to "_", so that a word of random bytes is a header token.
# Header values are RFC 9110 field values: no control characters (the HTTP server, not the
# bridge, refuses those, with a plain-text 400), bytes 0x80-0xFF allowed (obs-text).
_NO_SPACE = bytes(ord("_") if b < 0x20 or b == 0x7F or chr(b).isspace() else b for b in range(256))
H11_VALUE = re.compile(rb"(?:[^\x00-\x20\x7f]+(?:[ \t]+[^\x00-\x20\x7f]+)*)?")


def sendable(value: bytes) -> bool:
    """Whether ``value`` is a header value httpx sends and an HTTP server accepts."""
    return H11_VALUE.fullmatch(value) is not None


def header_bytes(min_size: int = 0) -> st.SearchStrategy[bytes]:
    """Any header value httpx (h11) will send: no NUL, no CR/LF, no outer whitespace,
    bytes 0x80-0xFF (non-ASCII, as raw bytes) included."""
    word = st.binary(min_size=1, max_size=12).map(lambda b: b.translate(_NO_SPACE))
    return st.lists(word, min_size=min_size, max_size=4).map(b" ".join)


def with_hole(message: Any, raw: bytes) -> bytes:
    """``message`` as JSON, with ``raw`` (any bytes) in place of the string HOLE."""
    text = json.dumps(message).encode()
    marker = json.dumps(HOLE).encode()
    assert text.count(marker) == 1
    return text.replace(marker, raw)


HOLE = "\x00hole\x00"


#: The bridge refuses JSON nested deeper than this (bridge.jsonrpc.MAX_DEPTH).
MAX_DEPTH = 100


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def parses(content: bytes) -> bool:
    """Whether the bridge reads ``content`` as a JSON text: strict UTF-8 (RFC 8259), no
    NaN/Infinity literals, no unpaired surrogate escapes, at most MAX_DEPTH levels deep."""
    try:
        value = json.loads(content.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        strings = []
        if isinstance(item, str):
            strings = [item]
        elif isinstance(item, dict):
            strings = list(item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def modern_headers_for(
    body: dict[str, Any], headers: dict[str, str | bytes | None]
) -> dict[str, str | bytes | None]:
    """``Mcp-Name`` mirroring the (possibly changed) body field, as a client would send it."""
    fixed = dict(headers)
    name_field = NAME_FIELDS.get(body.get("method", ""))
    params = body.get("params")
    value = params.get(name_field) if isinstance(params, dict) and name_field else None
    fixed["Mcp-Name"] = None
    if isinstance(value, str) and len(value) <= MAX_MIRRORED:
        fixed["Mcp-Name"] = header_value(value)
    return fixed


# -- broken JSON bytes -------------------------------------------------------------------------


def _corpus(target: Target) -> list[tuple[dict[str, Any], dict[str, str | bytes | None]]]:
    """Valid messages of both eras, with their headers."""
    legacy = target.legacy_headers()
    messages: list[tuple[dict[str, Any], dict[str, str | bytes | None]]] = [
        (target.legacy("ping"), legacy),
        (target.legacy("tools/list", {"cursor": "bzow"}), legacy),
        (target.legacy("tasks/get", {"taskId": target.legacy_task}), legacy),
        (
            target.legacy(
                "tools/call", {"name": "echo", "arguments": {"text": "é€😀"}, "task": {"ttl": 1}}
            ),
            legacy,
        ),
        ({"jsonrpc": "2.0", "method": "notifications/initialized"}, legacy),
    ]
    for method, params in [
        ("server/discover", None),
        ("tasks/get", {"taskId": target.modern_task}),
        ("tools/call", {"name": "echo", "arguments": {"text": "x"}}),
        ("subscriptions/listen", {"notifications": {"taskIds": [target.modern_task]}}),
    ]:
        messages.append(target.modern_request(method, params))
    return messages


@fuzz(300)
@given(content=st.binary(max_size=600), which=st.integers(0, 8))
def test_random_bytes(target: Target, content: bytes, which: int) -> None:
    _, headers = _corpus(target)[which]
    answer = target.send(content, headers)
    sent = json.loads(content) if parses(content) else None
    # Random bytes are never a JSON-RPC message: a parse error, or (JSON by chance) -32600.
    check_answer(answer, era=era_of(sent, raw_headers(headers)), statuses={400})
    code = answer.messages[0]["error"]["code"]
    assert code == (-32700 if sent is None else -32600), answer.text


@fuzz(300)
@given(which=st.integers(0, 8), cut=st.floats(0, 1, exclude_max=True), tail=st.binary(max_size=8))
def test_truncated_messages(target: Target, which: int, cut: float, tail: bytes) -> None:
    message, headers = _corpus(target)[which]
    whole = json.dumps(message, ensure_ascii=False).encode()
    content = whole[: int(len(whole) * cut)] + tail
    assume(not parses(content))
    answer = target.send(content, headers)
    check_answer(answer, era=era_of(message, raw_headers(headers)), statuses={400})
    assert answer.messages[0]["error"]["code"] == -32700, answer.text


INVALID_UTF8 = st.one_of(
    st.sampled_from(
        [
            b"\x80",
            b"\xbf",
            b"\xc0\xaf",  # overlong "/"
            b"\xc1\xbf",
            b"\xc3",  # truncated sequence
            b"\xc3\x28",
            b"\xe0\x80\xaf",  # overlong
            b"\xe2\x28\xa1",
            b"\xf0\x28\x8c\xbc",
            b"\xf4\x90\x80\x80",  # beyond U+10FFFF
            b"\xf8\xa1\xa1\xa1\xa1",
            b"\xfe",
            b"\xff",
            b"\xff\xfe",
        ]
    ),
    st.binary(min_size=1, max_size=6),
).filter(lambda raw: raw.decode("utf-8", "replace").encode() != raw)


@fuzz(250)
@given(which=st.integers(0, 8), at=st.floats(0, 1), bad=INVALID_UTF8)
def test_invalid_utf8(target: Target, which: int, at: float, bad: bytes) -> None:
    message, headers = _corpus(target)[which]
    whole = json.dumps(message).encode()  # ASCII, so the bad bytes cannot complete a character
    where = int(len(whole) * at)
    content = whole[:where] + bad + whole[where:]
    answer = target.send(content, headers)
    if parses(content):  # only when Python's json reads it anyway (it decodes leniently)
        check_answer(answer, era=era_of(message, raw_headers(headers)), sent=json.loads(content))
    else:
        check_answer(answer, era=era_of(message, raw_headers(headers)), statuses={400})
        assert answer.messages[0]["error"]["code"] == -32700, answer.text


NUMBER_LITERALS = st.one_of(
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "-0",
            "-0.0",
            "0e0",
            "1e400",
            "-1e400",
            "1e-400",
            "1E+2",
            "9007199254740993",
            "18446744073709551616",
            "1.7976931348623157e309",
            # not JSON at all
            "nan",
            "inf",
            "+1",
            "01",
            ".5",
            "1.",
            "1e",
            "0x10",
            "--1",
            "NaNa",
            "Infinit",
        ]
    ),
    st.integers(1, 12_000).map(lambda n: "9" * n),  # more than 4300 digits: Python refuses
    st.integers(1, 6_000).map(lambda n: "-" + "1" * n),
    st.integers(1, 5_000).map(lambda n: "0." + "3" * n + "e-99999"),
    st.tuples(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6)).map(
        lambda t: f"{t[0]}e{t[1]}"
    ),
    st.floats().map(json.dumps),
)


def _number_positions(target: Target) -> dict[str, tuple[dict[str, Any], HeaderSpec]]:
    legacy = target.legacy_headers()
    no_session = {"Accept": ACCEPT, "Content-Type": "application/json"}
    echo = {"name": "echo", "arguments": {"text": "n"}}
    init = {
        "protocolVersion": LEGACY,
        "capabilities": {},
        "clientInfo": {"name": "f", "version": "1"},
    }
    positions: dict[str, tuple[dict[str, Any], HeaderSpec]] = {
        "id": ({"jsonrpc": "2.0", "id": HOLE, "method": "ping"}, legacy),
        "jsonrpc": ({"jsonrpc": HOLE, "id": 1, "method": "ping"}, legacy),
        "method": ({"jsonrpc": "2.0", "id": 1, "method": HOLE}, legacy),
        "params": ({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": HOLE}, legacy),
        "cursor": (target.legacy("tasks/list", {"cursor": HOLE}), legacy),
        "ttl": (target.legacy("tools/call", {**echo, "task": {"ttl": HOLE}}), legacy),
        "name": (target.legacy("tools/call", {"name": HOLE, "task": {}}), legacy),
        "arguments.text": (
            target.legacy("tools/call", {"name": "echo", "arguments": {"text": HOLE}}),
            legacy,
        ),
        "arguments.a": (
            target.legacy("tools/call", {"name": "add", "arguments": {"a": HOLE, "b": 1}}),
            legacy,
        ),
        "arguments.n": (
            target.legacy(
                "tools/call", {"name": "structured", "arguments": {"n": HOLE}, "task": {}}
            ),
            legacy,
        ),
        "taskId": (target.legacy("tasks/result", {"taskId": HOLE}), legacy),
        "progressToken": (target.legacy("ping", {"_meta": {"progressToken": HOLE}}), legacy),
        "requestId": (
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": HOLE}},
            legacy,
        ),
        "init.protocolVersion": (
            target.legacy("initialize", {**init, "protocolVersion": HOLE}),
            no_session,
        ),
        "init.capabilities": (
            target.legacy("initialize", {**init, "capabilities": {"x": HOLE}}),
            no_session,
        ),
    }
    for label, method, params in [
        ("modern.id", "server/discover", None),
        ("modern.cursor", "tools/list", {"cursor": HOLE}),
        ("modern.arguments", "tools/call", echo | {"arguments": {"text": HOLE}}),
        ("modern.taskId", "tasks/get", {"taskId": HOLE}),
        (
            "modern.inputResponses",
            "tasks/update",
            {"taskId": target.modern_task, "inputResponses": {"k": HOLE}},
        ),
        ("modern.taskIds", "subscriptions/listen", {"notifications": {"taskIds": [HOLE]}}),
        ("modern.version", "server/discover", None),
    ]:
        body, headers = target.modern_request(method, params)
        if label == "modern.id":
            body["id"] = HOLE
        if label == "modern.version":
            body["params"]["_meta"][META_VERSION] = HOLE
        positions[label] = (body, modern_headers_for(body, headers))
    return positions


NUMBER_POSITIONS = (
    "id jsonrpc method params cursor ttl name arguments.text arguments.a arguments.n taskId "
    "progressToken requestId init.protocolVersion init.capabilities modern.id modern.cursor "
    "modern.arguments modern.taskId modern.inputResponses modern.taskIds modern.version"
).split()


@fuzz(400)
@given(position=st.sampled_from(NUMBER_POSITIONS), literal=NUMBER_LITERALS)
def test_number_literals(target: Target, position: str, literal: str) -> None:
    """Huge numbers, NaN/Infinity literals and malformed numbers, anywhere a value goes."""
    message, headers = _number_positions(target)[position]
    content = with_hole(message, literal.encode())
    raw = raw_headers(headers)
    answer = target.send(content, raw)
    if not parses(content):
        check_answer(answer, era=era_of(message, raw), statuses={400})
        assert answer.messages[0]["error"]["code"] == -32700, answer.text
        return
    sent = json.loads(content)
    check_answer(answer, era=era_of(sent, raw), sent=sent)


SPECIAL_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "9" * 4300]


def test_special_numbers_everywhere(target: Target) -> None:
    """Each special number at each number position: a sweep, as sampling rarely pairs a
    given literal with a given position."""
    for position in NUMBER_POSITIONS:
        for literal in [*SPECIAL_NUMBERS, "9" * 4301]:
            message, headers = _number_positions(target)[position]
            content = with_hole(message, literal.encode())
            raw = raw_headers(headers)
            answer = target.send(content, raw)
            sent = json.loads(content) if parses(content) else None
            check_answer(answer, era=era_of(sent or message, raw), sent=sent)


# -- wrong JSON-RPC shapes --------------------------------------------------------------------

SHAPE_KEYS = st.one_of(
    st.sampled_from(["jsonrpc", "id", "method", "params", "result", "error"]), TEXT
)
SHAPE_VALUES = st.one_of(
    st.just(MISSING),
    JSON,
    st.sampled_from(
        [
            "2.0",
            "2.0 ",
            "1.0",
            "2",
            2.0,
            2,
            "ping",
            "tools/list",
            "notifications/initialized",
            {},
            [],
            None,
            {"code": -32000, "message": "x"},
            "",
            0,
            -1,
        ]
    ),
)


def shape_statuses(message: Any, era: str) -> set[int]:
    """What JSON-RPC 2.0 and the MCP transport allow for a message of this shape."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return {400}
    if "id" in message and _request_id(message) is None:
        return {400}  # MCP: an id is a string or an integer, never null
    method = message.get("method", MISSING)
    if method is MISSING or method is None:
        if "id" in message and ("result" in message) != ("error" in message):
            return {202, 400}  # a response: accepted, or refused (the stateless era)
        return {400}
    if not isinstance(method, str):
        return {400}
    if "id" not in message:
        return {202, 400}  # a notification
    return {200} if era == LEGACY else {200, 400, 404}


@fuzz(450)
@given(
    base=st.integers(0, 4),
    changes=st.lists(st.tuples(SHAPE_KEYS, SHAPE_VALUES), min_size=1, max_size=3),
)
def test_jsonrpc_shapes(target: Target, base: int, changes: list[tuple[str, Any]]) -> None:
    """Missing, extra and wrong-typed jsonrpc/id/method/params (and result/error)."""
    legacy = target.legacy_headers()
    bases: list[tuple[dict[str, Any], HeaderSpec]] = [
        (target.legacy("ping"), legacy),
        (target.legacy("tasks/get", {"taskId": target.legacy_task}), legacy),
        ({"jsonrpc": "2.0", "method": "notifications/initialized"}, legacy),
        ({"jsonrpc": "2.0", "id": 5, "result": {}}, legacy),
        target.modern_request("server/discover"),
    ]
    message, headers = bases[base]
    for key, value in changes:
        message = set_path(message, (key,), value)
    raw = raw_headers(headers)
    era = era_of(message, raw)
    answer, _ = target.post(message, headers, statuses=shape_statuses(message, era))
    if answer.status == 400:
        assert answer.messages[0]["error"]["code"] in TRANSPORT_CODES | set(MODERN_STATUS)


BATCH_ITEMS = st.one_of(
    JSON,
    st.builds(lambda n: {"jsonrpc": "2.0", "id": n, "method": "ping"}, st.integers()),
    st.just({"jsonrpc": "2.0", "method": "notifications/initialized"}),
)


@fuzz(150)
@given(
    body=st.one_of(
        st.lists(BATCH_ITEMS, max_size=4),
        st.lists(st.lists(BATCH_ITEMS, max_size=2), min_size=1, max_size=2),
        SCALARS,
    ),
    modern=st.booleans(),
)
def test_batches_and_scalars(target: Target, body: Any, modern: bool) -> None:
    """A batch (removed from MCP) or a scalar is never a message: 400, -32600."""
    headers = target.modern_request("server/discover")[1] if modern else target.legacy_headers()
    answer, _ = target.post(body, headers, statuses={400})
    expected = -32600 if parses(json.dumps(body).encode()) else -32700  # e.g. Infinity
    assert answer.messages[0]["error"]["code"] == expected, answer.text


# -- wrong types in every params field of every method ------------------------------------------

REAL_LEGACY, REAL_MODERN = "@legacy-task", "@modern-task"  # replaced by the target's task ids


def resolve(value: Any, target: Target) -> Any:
    if value == REAL_LEGACY:
        return target.legacy_task
    if value == REAL_MODERN:
        return target.modern_task
    if isinstance(value, list):
        return [resolve(v, target) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, target) for k, v in value.items()}
    return value


CURSORS = st.one_of(
    TEXT,
    st.builds(
        lambda kind, value: (
            base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")
        ),
        st.sampled_from(["o", "t", "x", "", "o:o"]),
        st.one_of(
            st.integers(),
            TEXT,
            st.sampled_from(["-1", "1e3", "٣", "9" * 40, "9" * 5000, " 1", "1 ", "+1", "0x1"]),
        ),
    ),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=90
    ),
    st.sampled_from(
        ["", "=", "==", "b", "bzo", "bzow", "dDow", "bzow===", "bzo\n", "%%%", "a" * 65]
    ),
)
#: Near-valid values of each named field (the wrong types come from FIELD).
SPECIAL_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": st.sampled_from([*FAST_TOOLS, "", "no-such-tool", "ECHO", " echo", "echo\x00"]),
    "ttl": st.one_of(
        st.integers(),
        st.floats(allow_nan=False),
        st.sampled_from([-1, 0, 999, 2**63, 10**30, -0.0, True]),
    ),
    "taskId": st.sampled_from([REAL_LEGACY, REAL_MODERN, "", "x", REAL_LEGACY + "x"]),
    "cursor": CURSORS,
    "text": TEXT,
    "arguments": st.sampled_from(
        [{}, {"text": 1}, {"a": 1, "b": 2}, {"n": 3}, {"message": "boom"}, {"text": "x", "y": 1}]
    ),
    "task": st.sampled_from([{}, {"ttl": 1}, {"ttl": -1}, {"ttl": "1"}, {"x": 1}, None]),
    "requestId": st.one_of(st.integers(), TEXT),
    "taskIds": st.lists(st.sampled_from([REAL_LEGACY, REAL_MODERN, "", "nope"]), max_size=3),
    "notifications": st.sampled_from([{}, {"taskIds": []}, {"taskIds": [REAL_MODERN]}, {"x": 1}]),
    "inputResponses": st.sampled_from([{}, {"k": {"action": "decline"}}, {"k": 1}]),
    "protocolVersion": st.sampled_from(["2025-11-25", "2025-06-18", "2024-11-05", "", MODERN]),
    META_VERSION: st.sampled_from([MODERN, LEGACY, "", "1999-01-01", MODERN + " "]),
    META_CAPS: st.sampled_from([{}, {"extensions": {EXT: {}}}, {"extensions": []}]),
    "extensions": st.sampled_from([{}, {EXT: {}}, {EXT: True}, {"other": {}}]),
    EXT: st.sampled_from([{}, True, None, []]),
    "capabilities": st.sampled_from([{}, {"tasks": {}}, {"extensions": {EXT: {}}}]),
    "clientInfo": st.sampled_from([{"name": "n"}, {"version": "1"}, {"name": 1, "version": 1}]),
}


@st.composite
def field_change(draw: st.DrawFn, fields: list[tuple[str, ...]]) -> tuple[tuple[str, ...], Any]:
    path = draw(st.sampled_from(fields))
    special = SPECIAL_VALUES.get(path[-1]) if path else None
    value = draw(FIELD if special is None else st.one_of(FIELD, special))
    return path, value


LEGACY_PARAMS: dict[str, tuple[dict[str, Any], list[tuple[str, ...]]]] = {
    "ping": ({}, [(), ("_meta",), ("_meta", "progressToken")]),
    "tools/list": ({}, [(), ("cursor",), ("_meta",)]),
    "tools/call": (
        {"name": "echo", "arguments": {"text": "fuzz"}, "task": {"ttl": 60_000}},
        [
            (),
            ("name",),
            ("arguments",),
            ("arguments", "text"),
            ("task",),
            ("task", "ttl"),
            ("_meta",),
            ("_meta", "progressToken"),
        ],
    ),
    "tasks/get": ({"taskId": REAL_LEGACY}, [(), ("taskId",), ("_meta",)]),
    "tasks/result": ({"taskId": REAL_LEGACY}, [(), ("taskId",)]),
    "tasks/cancel": ({"taskId": REAL_LEGACY}, [(), ("taskId",)]),
    "tasks/list": ({}, [(), ("cursor",)]),
    "notifications/cancelled": ({"requestId": 1, "reason": "r"}, [(), ("requestId",), ("reason",)]),
    "notifications/initialized": ({}, [(), ("_meta",)]),
}


@st.composite
def legacy_params_case(draw: st.DrawFn) -> tuple[str, Any]:
    method = draw(st.sampled_from(sorted(LEGACY_PARAMS)))
    template, fields = LEGACY_PARAMS[method]
    path, value = draw(field_change(fields))
    params = set_path(template, path, value)
    return method, params


@fuzz(900)
@given(case=legacy_params_case())
def test_legacy_params(target: Target, case: tuple[str, Any]) -> None:
    """Every params field of every 2025-11-25 method, in a live session: missing, of every
    wrong type, or near-valid. A request is answered 200 with a result or -32602/-32601; a
    notification is accepted with 202."""
    method, params = case
    params = resolve(params, target)
    if method.startswith("notifications/"):
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not MISSING:
            message["params"] = params
        target.post(message, statuses={202})
        return
    message = target.legacy(method, params)
    statuses = (
        {200} if era_of(message, raw_headers(target.legacy_headers())) == LEGACY else SPEC_STATUSES
    )
    target.post(message, statuses=statuses, codes={-32602, -32601})


META_FIELDS = [
    ("_meta",),
    ("_meta", META_VERSION),
    ("_meta", META_CAPS),
    ("_meta", META_CAPS, "extensions"),
    ("_meta", META_CAPS, "extensions", EXT),
    ("_meta", META_INFO),
]
MODERN_PARAMS: dict[str, tuple[dict[str, Any], list[tuple[str, ...]]]] = {
    "server/discover": ({}, []),
    "tools/list": ({}, [("cursor",)]),
    "tools/call": (
        {"name": "echo", "arguments": {"text": "fuzz"}},
        [("name",), ("arguments",), ("arguments", "text"), ("task",), ("_meta", "progressToken")],
    ),
    "tasks/get": ({"taskId": REAL_MODERN}, [("taskId",)]),
    "tasks/cancel": ({"taskId": REAL_MODERN}, [("taskId",)]),
    "tasks/update": (
        {"taskId": REAL_MODERN, "inputResponses": {}},
        [("taskId",), ("inputResponses",)],
    ),
    "subscriptions/listen": (
        {"notifications": {"taskIds": [REAL_MODERN]}},
        [("notifications",), ("notifications", "taskIds")],
    ),
}


@st.composite
def modern_params_case(draw: st.DrawFn) -> tuple[str, dict[str, Any], tuple[str, ...], Any]:
    method = draw(st.sampled_from(sorted(MODERN_PARAMS)))
    template, fields = MODERN_PARAMS[method]
    path, value = draw(field_change([(), *fields, *META_FIELDS]))
    return method, template, path, value


@fuzz(900)
@given(case=modern_params_case())
def test_modern_params(
    target: Target, case: tuple[str, dict[str, Any], tuple[str, ...], Any]
) -> None:
    """Every params field (and ``_meta`` field) of every 2026-07-28 method, on an otherwise
    valid request whose ``Mcp-Name`` mirrors the changed body."""
    method, template, path, value = case
    body, headers = target.modern_request(method, resolve(template, target))
    body = set_path(body, ("params", *path), resolve(value, target))
    if body.get("params") is MISSING:
        del body["params"]
    answer, _ = target.post(
        body,
        modern_headers_for(body, headers),
        statuses={200, 400},
        codes={-32602, -32020, -32021, -32022},
    )
    if (
        method == "subscriptions/listen"
        and answer.status == 200
        and not answer.messages[-1].get("error")
    ):
        ack = answer.messages[-1]["params"]["notifications"]
        assert set(ack.get("taskIds", [])) <= {target.modern_task, target.legacy_task}, ack


INIT_FIELDS = [
    (),
    ("protocolVersion",),
    ("capabilities",),
    ("capabilities", "tasks"),
    ("capabilities", "extensions"),
    ("clientInfo",),
    ("clientInfo", "name"),
    ("clientInfo", "version"),
    ("_meta",),
]


@fuzz(250)
@given(change=field_change(INIT_FIELDS))
def test_initialize_params(target: Target, change: tuple[tuple[str, ...], Any]) -> None:
    """initialize with broken protocolVersion/capabilities/clientInfo: a session and an
    InitializeResult, or -32602 and no session."""
    path, value = change
    base = {
        "protocolVersion": LEGACY,
        "capabilities": {},
        "clientInfo": {"name": "f", "version": "1"},
    }
    message = target.legacy("initialize", set_path(base, path, value))
    headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
    legacy = era_of(message, raw_headers(headers)) == LEGACY
    answer, response = target.post(
        message, headers, statuses={200} if legacy else SPEC_STATUSES, codes={-32602}
    )
    if legacy and response is not None:
        assert ("result" in response) == ("mcp-session-id" in answer.headers), answer.headers


# -- unknown methods ----------------------------------------------------------------------------

METHOD_NAMES = st.one_of(
    TEXT,
    st.text(alphabet=st.characters(codec="ascii", categories=["L", "N", "P"]), max_size=30),
    st.sampled_from(
        [
            "Ping",
            "ping ",
            " ping",
            "PING",
            "tools/call/",
            "tools//call",
            "tasks/",
            "tasks/results",
            "tasks/list/",
            "server/discover",
            "tasks/update",
            "subscriptions/listen",
            "tasks/result",
            "tasks/list",
            "ping",
            "initialize",
            "notifications/initialized",
            "notifications/cancelled",
            "rpc.discover",
            "$/cancelRequest",
            "resources/list",
            "prompts/list",
            "completion/complete",
            "logging/setLevel",
            "roots/list",
            "sampling/createMessage",
            "elicitation/create",
            "",
            "/",
            "é",
            "\x00",
            "a" * 300,
        ]
    ),
)


@fuzz(300)
@given(method=METHOD_NAMES, modern=st.booleans(), notification=st.booleans())
def test_unknown_methods(target: Target, method: str, modern: bool, notification: bool) -> None:
    """An unknown method is -32601 (HTTP 200 in a session, 404 statelessly); an unknown
    notification is accepted (202)."""
    if not modern:
        assume(method not in LEGACY_METHODS)
        message = target.legacy(method)
        if notification:
            del message["id"]
            target.post(message, statuses={202})
            return
        answer, response = target.post(message, statuses={200}, codes={-32601})
        assert response is not None and response["error"]["code"] == -32601, answer.text
        return
    assume(method not in MODERN_METHODS)
    body, headers = target.modern_request(method)
    mirrorable = method.isascii() and method.isprintable() and method == method.strip()
    if not mirrorable:
        # A method no header can carry verbatim: the header cannot match the body (-32020).
        encoded = method.encode()
        headers["Mcp-Method"] = encoded if sendable(encoded) else None
    if notification:
        del body["id"]
        target.post(body, headers, statuses={202, 400})
        return
    answer, response = target.post(body, headers, statuses={404} if mirrorable else {400, 404})
    assert response is not None
    assert response["error"]["code"] == (-32601 if answer.status == 404 else -32020), answer.text


# -- huge strings and deep nesting ----------------------------------------------------------------

HUGE_POSITIONS = [
    "id",
    "method",
    "name",
    "arguments.text",
    "taskId",
    "cursor",
    "meta.key",
    "meta.value",
    "reason",
    "init.protocolVersion",
    "init.clientInfo",
    "modern.id",
    "modern.name",
    "modern.taskId",
    "modern.cursor",
    "modern.version",
    "modern.meta",
    "modern.taskIds",
]


def huge_message(target: Target, position: str, huge: str) -> tuple[Any, HeaderSpec]:
    legacy = target.legacy_headers()
    no_session = {"Accept": ACCEPT, "Content-Type": "application/json"}
    init = {
        "protocolVersion": LEGACY,
        "capabilities": {},
        "clientInfo": {"name": "f", "version": "1"},
    }
    if position == "id":
        return target.legacy("ping", id=huge), legacy
    if position == "method":
        return target.legacy(huge), legacy
    if position == "name":
        return target.legacy("tools/call", {"name": huge, "arguments": {}, "task": {}}), legacy
    if position == "arguments.text":
        return target.legacy(
            "tools/call", {"name": "echo", "arguments": {"text": huge}, "task": {}}
        ), legacy
    if position == "taskId":
        return target.legacy("tasks/get", {"taskId": huge}), legacy
    if position == "cursor":
        return target.legacy("tasks/list", {"cursor": huge}), legacy
    if position == "meta.key":
        return target.legacy("ping", {"_meta": {huge: 1}}), legacy
    if position == "meta.value":
        return target.legacy("tools/list", {"_meta": {"progressToken": huge}}), legacy
    if position == "reason":
        message = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": 1, "reason": huge},
        }
        return message, legacy
    if position == "init.protocolVersion":
        return target.legacy("initialize", {**init, "protocolVersion": huge}), no_session
    if position == "init.clientInfo":
        return target.legacy(
            "initialize", {**init, "clientInfo": {"name": huge, "version": huge}}
        ), no_session
    method, params = {
        "modern.id": ("server/discover", None),
        "modern.name": ("tools/call", {"name": huge, "arguments": {}}),
        "modern.taskId": ("tasks/get", {"taskId": huge}),
        "modern.cursor": ("tools/list", {"cursor": huge}),
        "modern.version": ("server/discover", None),
        "modern.meta": ("server/discover", None),
        "modern.taskIds": (
            "subscriptions/listen",
            {"notifications": {"taskIds": [huge, huge[:10]]}},
        ),
    }[position]
    body, headers = target.modern_request(method, params)
    if position == "modern.id":
        body["id"] = huge
    if position == "modern.version":
        body["params"]["_meta"][META_VERSION] = huge
    if position == "modern.meta":
        body["params"]["_meta"]["x-" + huge[:100]] = huge
    return body, modern_headers_for(body, headers)


@fuzz(45)
@given(
    position=st.sampled_from(HUGE_POSITIONS),
    size=st.one_of(st.sampled_from([65_536, 262_144, 1_000_000]), st.integers(1, 1_000_000)),
    char=st.one_of(st.just("x"), st.characters(exclude_categories=["Cc", "Cs"])),
)
def test_huge_strings(target: Target, position: str, size: int, char: str) -> None:
    """Strings up to ~1 MB (the body stays under the 4 MiB limit) in every kind of field."""
    huge = char * max(1, size // len(char.encode()))
    message, headers = huge_message(target, position, huge)
    era = era_of(message, raw_headers(headers))
    statuses = SPEC_STATUSES if era == MODERN or position.startswith("init") else {200, 202}
    target.post(message, headers, statuses=statuses, ensure_ascii=False)


DEEP_POSITIONS = [
    "body",
    "id",
    "params",
    "meta",
    "arguments",
    "arguments.text",
    "task",
    "capabilities",
    "clientInfo",
    "taskId",
    "notification",
    "modern.meta",
    "modern.caps",
    "modern.arguments",
    "modern.taskIds",
    "modern.inputResponses",
]


def nested(depth: int, kind: str) -> tuple[bytes, int]:
    """Nested JSON of ``depth`` and its real number of levels."""
    if kind == "array":
        return b"[" * depth + b"]" * depth, depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth, depth
    if kind == "mixed":
        half = depth // 2
        return b'[{"a":' * half + b"0" + b"}]" * half, 2 * half
    return b"[" * depth, depth  # never closed


def deep_template(target: Target, position: str) -> tuple[Any, HeaderSpec]:
    legacy = target.legacy_headers()
    no_session = {"Accept": ACCEPT, "Content-Type": "application/json"}
    init = {"protocolVersion": LEGACY, "clientInfo": {"name": "f", "version": "1"}}
    call = {"name": "echo", "task": {}}
    templates: dict[str, tuple[Any, HeaderSpec]] = {
        "body": (HOLE, legacy),
        "id": ({"jsonrpc": "2.0", "id": HOLE, "method": "ping"}, legacy),
        "params": (target.legacy("ping", HOLE), legacy),
        "meta": (target.legacy("tools/list", {"_meta": HOLE}), legacy),
        "arguments": (target.legacy("tools/call", {**call, "arguments": HOLE}), legacy),
        "arguments.text": (
            target.legacy("tools/call", {**call, "arguments": {"text": HOLE}}),
            legacy,
        ),
        "task": (
            target.legacy("tools/call", {**call, "arguments": {"text": "t"}, "task": HOLE}),
            legacy,
        ),
        "capabilities": (target.legacy("initialize", {**init, "capabilities": HOLE}), no_session),
        "clientInfo": (
            target.legacy(
                "initialize",
                {
                    **init,
                    "capabilities": {},
                    "clientInfo": {"name": "f", "version": "1", "x": HOLE},
                },
            ),
            no_session,
        ),
        "taskId": (target.legacy("tasks/cancel", {"taskId": HOLE}), legacy),
        "notification": (
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": HOLE},
            legacy,
        ),
    }
    if position in templates:
        return templates[position]
    method, params = {
        "modern.meta": ("server/discover", None),
        "modern.caps": ("tools/list", None),
        "modern.arguments": ("tools/call", {"name": "echo", "arguments": {"text": "t", "x": HOLE}}),
        "modern.taskIds": ("subscriptions/listen", {"notifications": {"taskIds": HOLE}}),
        "modern.inputResponses": (
            "tasks/update",
            {"taskId": target.modern_task, "inputResponses": HOLE},
        ),
    }[position]
    body, headers = target.modern_request(method, params)
    if position == "modern.meta":
        body["params"]["_meta"]["x"] = HOLE
    if position == "modern.caps":
        body["params"]["_meta"][META_CAPS] = {"extensions": {EXT: HOLE}}
    return body, modern_headers_for(body, headers)


@fuzz(150)
@given(
    position=st.sampled_from(DEEP_POSITIONS),
    depth=st.one_of(
        st.integers(1, 1_200),
        st.integers(900, 1_000),
        st.sampled_from([2_000, 10_000, 100_000, 1_000_000]),
    ),
    kind=st.sampled_from(["array", "object", "mixed", "unclosed"]),
)
def test_deep_nesting(target: Target, position: str, depth: int, kind: str) -> None:
    """Up to a million nested arrays or objects anywhere: a parse error or an answer, never a
    crash (Python's json raises RecursionError, and so may anything that walks the value)."""
    raw, levels = nested(depth, kind)
    message, headers = deep_template(target, position)
    content = with_hole(message, raw)
    hraw = raw_headers(headers)
    answer = target.send(content, hraw)
    # What the checks need of the request (id, method, params.task), with a shallow value in
    # place of the deep one: this process could not parse it back at its own stack depth.
    # No level at all ("mixed" of depth 1 is the bare 0) is no container: it stands for
    # itself (as an "id" it is a valid one, which the answer must echo).
    sent = json.loads(with_hole(message, raw if levels == 0 else b"[]"))
    check_answer(answer, era=era_of(message, hraw), sent=sent)
    if kind == "unclosed":  # not JSON at all
        assert answer.status in (400, 413), answer.text


def test_deep_nesting_near_the_parser_limit(target: Target) -> None:
    """Every position, every depth from 900 to 999: the band where Python's json still
    parses the body but anything that walks the value again may overflow the stack. (A
    sweep: the band where that happens is a depth or two wide.)"""
    for position in DEEP_POSITIONS:
        for depth in range(900, 1000):
            message, headers = deep_template(target, position)
            raw = raw_headers(headers)
            answer = target.send(with_hole(message, b"[" * depth + b"]" * depth), raw)
            sent = json.loads(with_hole(message, b"[]"))
            check_answer(answer, era=era_of(message, raw), sent=sent)


# -- bad cursors and bad task ids --------------------------------------------------------------


@fuzz(250)
@given(
    cursor=st.one_of(CURSORS, JSON), where=st.sampled_from(["tools/list", "tasks/list", "modern"])
)
def test_bad_cursors(target: Target, cursor: Any, where: str) -> None:
    """A cursor the bridge did not make: a page (cursors are opaque) or -32602, and -32602
    whenever it is not even a string."""
    if where == "modern":
        body, headers = target.modern_request("tools/list", {"cursor": cursor})
        answer, response = target.post(body, headers, statuses={200}, codes={-32602})
    else:
        answer, response = target.post(
            target.legacy(where, {"cursor": cursor}), statuses={200}, codes={-32602}
        )
    if response is not None and cursor is not None and not isinstance(cursor, str):
        assert "error" in response, answer.text  # (None: not JSON at all, a 400 -32700)


TASK_IDS = st.one_of(
    TEXT,
    st.text(min_size=129, max_size=2_000),
    st.integers(129, 100_000).map(lambda n: "A" * n),
    st.text(alphabet=st.characters(categories=["Cc"]), min_size=1, max_size=20),  # control chars
    st.text(alphabet=st.characters(min_codepoint=0x80), min_size=1, max_size=30),  # unicode
    st.sampled_from(["", " ", "*", "?", "[a]", "..", "../x", "%00", "task:x", "\\", '"', "null"]),
    st.sampled_from([REAL_LEGACY, REAL_MODERN]).map(lambda real: "mangle:" + real),
)


@fuzz(400)
@given(
    task_id=TASK_IDS,
    mangle=st.integers(0, 11),
    method=st.sampled_from(
        [
            "tasks/get",
            "tasks/result",
            "tasks/cancel",
            "modern:tasks/get",
            "modern:tasks/cancel",
            "modern:tasks/update",
            "modern:listen",
        ]
    ),
)
def test_bad_task_ids(target: Target, task_id: str, mangle: int, method: str) -> None:
    """Long, unicode, control-character and near-miss task ids: "not found" (-32602), and a
    listen stream that acknowledges none of them."""
    if task_id.startswith("mangle:"):
        real = resolve(task_id.removeprefix("mangle:"), target)
        task_id = _mangle(real, mangle)
    assume(task_id not in (target.legacy_task, target.modern_task))
    # An unpaired surrogate is not JSON the bridge reads: Target.post checks that 400 -32700.
    assume(parses(json.dumps({"taskId": task_id}).encode()))
    if not method.startswith("modern:"):
        answer, response = target.post(target.legacy(method, {"taskId": task_id}), statuses={200})
        assert response is not None and response["error"]["code"] == -32602, answer.text
        return
    name = method.removeprefix("modern:")
    if name == "listen":
        params: dict[str, Any] = {"notifications": {"taskIds": [task_id]}}
        body, headers = target.modern_request("subscriptions/listen", params)
        answer, _ = target.post(body, headers, statuses={200})
        assert answer.messages[-1]["params"]["notifications"].get("taskIds", []) == [], answer.text
        return
    params = (
        {"taskId": task_id, "inputResponses": {}} if name == "tasks/update" else {"taskId": task_id}
    )
    body, headers = target.modern_request(name, params)
    headers = modern_headers_for(body, headers)
    statuses = mirrored_name_statuses(header_of(raw_headers(headers), "mcp-name"), task_id, name)
    answer, response = target.post(body, headers, statuses=statuses)
    assert response is not None
    assert response["error"]["code"] == (-32602 if answer.status == 200 else -32020), answer.text


def _mangle(real: str, how: int) -> str:
    variants = [
        "X" + real,
        real + "X",
        real.upper(),
        real.lower(),
        real[:-1],
        real + "\x00",
        real + " ",
        " " + real,
        real + "\n",
        real.replace("-", "+").replace("_", "/"),
        real + "=",
        real * 2,
    ]
    return variants[how % len(variants)]


# -- wrong or missing headers, wrong content types ----------------------------------------------

ALLOWED_ORIGINS = (b"http://127.0.0.1", b"http://localhost", b"http://[::1]")
ALLOWED_HOSTS = (b"127.0.0.1", b"localhost", b"[::1]")
NEAR_MISSES: dict[str, list[bytes]] = {
    "Accept": [
        b"text/event-stream",
        b"application/json",
        b"*/*",
        b"text/html",
        b"application/xml",
        b"application/json;q=0",
        b"APPLICATION/JSON",
        b"text/*",
        b"image/png, audio/*",
        b",",
    ],
    "Content-Type": [
        b"text/plain",
        b"application/json; charset=utf-8",
        b"application/jsonl",
        b"application/json-rpc",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data",
        b"APPLICATION/JSON",
        b"application/ld+json",
        b"text/json",
        b";",
        b"application/json;;",
    ],
    "Mcp-Session-Id": [b"0" * 32, b"x" * 200, b"*", b"\xff" * 32, b"session:1", b"%s"],
    "MCP-Protocol-Version": [
        LEGACY.encode(),
        MODERN.encode(),
        b"2025-06-18",
        b"2024-11-05",
        b"1999-01-01",
        b"2025-11-25,2025-06-18",
        b"latest",
        b"2025-11-25\xff",
    ],
    "Mcp-Method": [b"ping", b"tools/call", b"server/discover", b"\xe9", b"=?base64?cGluZw==?="],
    "Mcp-Name": [b"echo", b"=?base64?!!!?=", b"=?base64??=", b"=?base64?ZWNobw==?=", b"=?base64?"],
    "Origin": [
        b"null",
        b"http://localhost:1",
        b"https://localhost:1",
        b"http://evil.example",
        b"http://localhost.evil.example",
        b"http://[::1]:80",
        b"file://",
        b"http://127.0.0.1:\xff",
    ],
    "Host": [b"localhost:1", b"evil.example", b"127.0.0.1.evil.example", b"[::1]", b"[::1", b":80"],
    "Last-Event-ID": [b"0-0", b"x", b"99999999999999999999-0"],
    "Authorization": [b"Bearer x", b"Basic eDp5", b"Bearer", b"\xff"],
}
HEADER_CHANGE = st.sampled_from(sorted(NEAR_MISSES)).flatmap(
    lambda name: st.tuples(
        st.just(name),
        st.one_of(st.none(), st.sampled_from(NEAR_MISSES[name]), header_bytes()),
    )
)


def _media(value: bytes) -> str:
    return value.decode("latin-1").split(";")[0].strip().lower()


def header_statuses(
    name: str, value: bytes | None, modern: bool, real: dict[str, bytes]
) -> set[int]:
    """The statuses a request gets when header ``name`` is ``value`` (None: left out), every
    other header being right: the README's transport rules, the 2026-07-28 header rules.
    Whitespace around a value is not part of it (RFC 9110 5.5)."""
    value = value.strip(b" \t") if value is not None else None
    low = (value or b"").decode("latin-1").lower()
    if name == "Accept":
        if not value:
            return {200, 406}  # no (or an empty) Accept: anything goes, or nothing
        return {200, 406} if any(s in low for s in ("json", "event-stream", "*")) else {406}
    if name == "Content-Type":
        return {200} if value is not None and _media(value) == "application/json" else {415}
    if name == "Origin":
        if value is None:
            return {200}
        return {200, 403} if value.lower().startswith(ALLOWED_ORIGINS) else {403}
    if name == "Host":
        if value is None:
            return {200}
        return {200, 400, 403} if value.lower().startswith(ALLOWED_HOSTS) else {400, 403}
    if modern:
        if name in ("MCP-Protocol-Version", "Mcp-Method", "Mcp-Name") and name.lower() in real:
            return {200} if value == real[name.lower()] else {400}
        if name == "Mcp-Session-Id":
            return {200, 400, 404}
        return {200}
    if name == "Mcp-Session-Id":
        if value is not None and value == real.get("mcp-session-id"):
            return {200}
        return {400} if not value else {404}
    if name == "MCP-Protocol-Version":
        # Any version a session can speak, not only the negotiated one.
        supported = (v.encode() for v in LEGACY_VERSIONS)
        return {200} if value is None or value in supported else {400}
    if name == "Mcp-Method":
        return {200, 400}
    return {200}


@fuzz(300)
@given(change=HEADER_CHANGE)
def test_legacy_headers(target: Target, change: tuple[str, bytes | None]) -> None:
    """A session's ping with one header missing, garbage (non-ASCII bytes too) or near-miss."""
    name, value = change
    headers = {**target.legacy_headers(), name: value}
    message = target.legacy("ping")
    real = {k.lower(): v.encode() for k, v in target.legacy_headers().items()}
    statuses = header_statuses(name, value, False, real)
    answer, response = target.post(message, headers, statuses=statuses)
    if answer.status == 200:
        assert response is not None and response.get("result") == {}, answer.text


@fuzz(300)
@given(change=HEADER_CHANGE, which=st.integers(0, 4))
def test_modern_headers(target: Target, change: tuple[str, bytes | None], which: int) -> None:
    """A valid stateless request with one header missing, garbage or near-miss: the
    mirrored headers must match the body (-32020, 400), the rest as in the legacy era."""
    method, params = [
        ("server/discover", None),
        ("tools/list", None),
        ("tasks/get", {"taskId": target.modern_task}),
        ("tasks/cancel", {"taskId": target.modern_task}),
        ("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}}),
    ][which]
    body, headers = target.modern_request(method, params)
    name, value = change
    real = {k.lower(): v.encode() for k, v in headers.items() if isinstance(v, str)}
    statuses = header_statuses(name, value, True, real)
    if name == "Mcp-Name" and "mcp-name" in real:
        assert params is not None
        statuses = mirrored_name_statuses(value, params.get("name", params.get("taskId")), method)
    headers[name] = value
    answer, response = target.post(body, headers, statuses=statuses)
    if answer.status == 400 and name in ("MCP-Protocol-Version", "Mcp-Method", "Mcp-Name"):
        assert response is not None and response["error"]["code"] == -32020, answer.text


def mirrored_name_statuses(value: bytes | None, expected: str, method: str) -> set[int]:
    """The statuses of a request whose ``Mcp-Name`` header is ``value`` (None: left out)
    and whose body field is ``expected``: 400 (-32020) unless the header, decoded from its
    ``=?base64?...?=`` form when in it, is the field."""
    if value is None:
        # The tasks extension asks for Mcp-Name on tasks/*, where the bridge tolerates its
        # absence (a client omits it); elsewhere it is required.
        return {200, 400} if method.startswith("tasks/") else {400}
    # What a server reads from raw header bytes, without the whitespace around them.
    seen = value.decode("latin-1").strip(" \t")
    if seen.startswith("=?base64?") and seen.endswith("?=") and len(seen) >= 11:
        try:
            seen = base64.b64decode(seen[9:-2], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return {400}
    return {200} if seen == expected else {400}


CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(
        [*NEAR_MISSES["Content-Type"], b"application/json", b"application/json ;charset=utf-8"]
    ),
    st.sampled_from(
        [b"application/json; charset=utf-16", b"application/json\t;x=1", b"application/jso"]
    ),
    header_bytes(),
)


@fuzz(150)
@given(ctype=CONTENT_TYPES, modern=st.booleans(), form=st.booleans())
def test_content_types(target: Target, ctype: bytes | None, modern: bool, form: bool) -> None:
    """Anything but application/json is 415, whatever the body."""
    if modern:
        message, headers = target.modern_request("server/discover")
    else:
        message, headers = target.legacy("ping"), target.legacy_headers()
    content = b"jsonrpc=2.0&id=1&method=ping" if form else json.dumps(message).encode()
    headers["Content-Type"] = ctype
    answer = target.send(content, headers)
    json_type = ctype is not None and _media(ctype) == "application/json"
    if json_type and not form:
        check_answer(answer, era=MODERN if modern else LEGACY, sent=message, statuses={200})
    else:
        check_answer(
            answer, era=MODERN if modern else LEGACY, statuses={400} if json_type else {415}
        )


@fuzz(200)
@given(
    verb=st.sampled_from(["GET", "DELETE"]),
    session=st.one_of(
        st.just(b"real"), st.none(), st.sampled_from([b"", b"0" * 32]), header_bytes()
    ),
    accept=st.one_of(
        st.none(),
        st.sampled_from(
            [b"text/event-stream", b"application/json", b"*/*", b"text/*", b"text/html"]
        ),
        header_bytes(),
    ),
    last_event_id=st.one_of(
        st.none(),
        st.sampled_from([b"0-0", b"1-1", b"18446744073709551616-0", b"-1", b"0", b"0-", b"1-1-1"]),
        header_bytes(),
    ),
)
def test_get_and_delete(
    target: Target,
    verb: str,
    session: bytes | None,
    accept: bytes | None,
    last_event_id: bytes | None,
) -> None:
    """GET (the session's stream) and DELETE with garbage headers: 405 without a session
    header, 406 for a GET that does not accept SSE, 404 for an unknown session, 400 for a
    malformed Last-Event-ID; a stream only for the real session."""
    assume(not (verb == "DELETE" and session == b"real"))  # that would end the fixture's session
    sid = target.sid.encode() if session == b"real" else session
    headers = {"Accept": accept, "Mcp-Session-Id": sid, "Last-Event-ID": last_event_id}
    answer = target.send(b"", headers, method=verb)
    statuses = {400, 404, 406} if session != b"real" else {200, 400, 406}
    if sid is None:
        statuses = {405}
    check_answer(answer, era=LEGACY, statuses=statuses)
    if answer.status == 405:
        assert "POST" in answer.headers.get("allow", ""), answer.headers
    if answer.status == 200:
        assert answer.headers["content-type"].startswith("text/event-stream")


# -- at the end: still serving, and a clean log ---------------------------------------------------


def test_bridge_still_serves_and_its_log_is_clean(fast_bridge: str, inproc: AppServer) -> None:
    """After everything above, the shared bridge still serves both eras, and its whole log
    (this file's share of it was also checked request by request) holds no traceback."""
    assert_still_serving(fast_bridge)
    log = inproc.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    assert "Exception in ASGI application" not in log, log[-4000:]


# -- regression tests: the bugs these properties found ---------------------------------------------
#
# Each is a minimal example, run against a bridge process of its own (its tracebacks would
# otherwise fail the shared bridge's teardown check and every log check above). Each asserts
# what the spec expects, then that the bridge logged no traceback meanwhile.


@dataclass
class Fresh:
    url: str
    log: Path
    http: httpx.Client

    def send(self, content: bytes, headers: HeaderSpec, method: str = "POST") -> Answer:
        # A connection per request: after a 500, uvicorn drops the connection.
        raw = [*raw_headers(headers), (b"Connection", b"close")]
        return exchange(self.http, self.url, content, raw, method)

    def session_headers(self) -> dict[str, str | bytes | None]:
        init = {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "r", "version": "1"},
        }
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init})
        no_session = {"Accept": ACCEPT, "Content-Type": "application/json"}
        answer = self.send(body.encode(), no_session)
        assert answer.status == 200, answer.text
        sid = answer.headers["mcp-session-id"]
        headers = {**no_session, "Mcp-Session-Id": sid, "MCP-Protocol-Version": LEGACY}
        note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
        assert self.send(note, headers).status == 202
        return headers

    def modern_headers(self, method: str, name: str | None = None) -> dict[str, str | bytes | None]:
        headers: dict[str, str | bytes | None] = {
            "Accept": ACCEPT,
            "Content-Type": "application/json",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": method,
        }
        if name is not None:
            headers["Mcp-Name"] = name
        return headers

    @contextlib.contextmanager
    def no_traceback(self) -> Iterator[None]:
        start = self.log.stat().st_size
        yield
        with self.log.open("rb") as log:
            log.seek(start)
            new = log.read().decode(errors="replace")
        assert "Traceback" not in new, new[-3000:]


def modern_meta() -> dict[str, Any]:
    return {META_VERSION: MODERN, META_CAPS: {"extensions": {EXT: {}}}}


@pytest.fixture(scope="module")
def fresh(fast_env: dict[str, str], log_dir: Path, inproc: AppServer) -> Iterator[Fresh]:
    # An app of its own (on the shared inline worker): each test below says which request
    # put a traceback in its log, which would otherwise fail the shared app's log checks.
    # app_server asserts at exit that its log holds no traceback: while these bugs live it
    # does, and each test below already says which request put it there.
    log = log_dir / "inproc-fuzz-regressions.log"
    with (
        contextlib.suppress(AssertionError),
        app_server(settings_of(fast_env), log) as server,
        httpx.Client(timeout=30, transport=sync_transport(server.url)) as http,
    ):
        del http.headers["accept"]
        yield Fresh(server.url, log, http)


@pytest.mark.parametrize("era", [LEGACY, MODERN])
def test_regression_lone_surrogate_in_id_is_not_a_500(fresh: Fresh, era: str) -> None:
    """Bug: ``"id": "\\ud800"`` (a JSON escape of a lone surrogate, which Python's json
    accepts) makes JSONResponse's UTF-8 encoding raise: HTTP 500 text/plain "Internal Server
    Error", a traceback in the log, and uvicorn drops the connection. Expected: a JSON-RPC
    answer, e.g. 400 -32600 (the id is not a valid string) or 200 with the id echoed."""
    if era == LEGACY:
        content = b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}'
        headers = fresh.session_headers()
    else:
        params = {"_meta": modern_meta()}
        body = {"jsonrpc": "2.0", "id": "\ud800", "method": "server/discover", "params": params}
        content, headers = json.dumps(body).encode(), fresh.modern_headers("server/discover")
    with fresh.no_traceback():
        check_answer(fresh.send(content, headers), era=era, statuses={200, 400})


def test_regression_lone_surrogate_in_method_is_not_a_500(fresh: Fresh) -> None:
    """Bug: an unknown method ``"\\udfff"`` is echoed in "Method not found: ..." and the
    answer cannot be encoded: HTTP 500. Expected: 200 with -32601 (or a 400)."""
    headers = fresh.session_headers()
    with fresh.no_traceback():
        answer = fresh.send(b'{"jsonrpc":"2.0","id":1,"method":"\\udfff"}', headers)
        check_answer(answer, era=LEGACY, statuses={200, 400})


def test_regression_lone_surrogate_tool_name_with_task_is_not_a_500(fresh: Fresh) -> None:
    """Bug: a task-augmented ``tools/call`` of the unknown tool ``"\\ud800"`` answers
    "Unknown tool: ..." as JSON, which cannot be encoded: HTTP 500. Expected: 200, -32602."""
    headers = fresh.session_headers()
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\\ud800","task":{}}}'
    with fresh.no_traceback():
        check_answer(fresh.send(body, headers), era=LEGACY, statuses={200, 400})


@pytest.mark.parametrize("method", ["tasks/get", "tasks/result", "tasks/cancel", "listen"])
def test_regression_lone_surrogate_task_id_is_not_found(fresh: Fresh, method: str) -> None:
    """Bug: a task id with a lone surrogate reached redis-py, which cannot encode the key
    (UnicodeEncodeError): -32603 "Internal error" and a traceback. Now: an unpaired
    surrogate is not a JSON text the bridge reads (400, -32700)."""
    if method == "listen":
        params = {"notifications": {"taskIds": ["\ud800"]}, "_meta": modern_meta()}
        body = {"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen", "params": params}
        content, headers = json.dumps(body).encode(), fresh.modern_headers("subscriptions/listen")
        era = MODERN
    else:
        headers = fresh.session_headers()
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"taskId": "\ud800"}}
        content, era = json.dumps(body).encode(), LEGACY
    with fresh.no_traceback():
        answer = fresh.send(content, headers)
        check_answer(answer, era=era, statuses={400})
        assert answer.messages[0]["error"]["code"] == -32700, answer.text


def test_regression_task_whose_result_holds_a_lone_surrogate_stays_readable(fresh: Fresh) -> None:
    """Bug: ``tools/call`` of echo with ``{"text": "\\ud800"}`` as a task is accepted and
    completes with that text in its result; from then on every stateless ``tasks/get`` of
    the task (which inlines the result) answers -32603 "Internal error" with a traceback, as
    the answer cannot be encoded. Expected: the call refused (-32602), or the task readable."""
    headers = fresh.session_headers()
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "\ud800"}, "task": {}},
    }
    created = check_answer(fresh.send(json.dumps(body).encode(), headers), era=LEGACY, sent=body)
    assert created is not None
    if "error" in created:
        return  # refused up front: fine
    task_id = created["result"]["task"]["taskId"]
    get = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tasks/get",
        "params": {"taskId": task_id, "_meta": modern_meta()},
    }
    with fresh.no_traceback():
        for _ in range(100):
            answer = fresh.send(
                json.dumps(get).encode(), fresh.modern_headers("tasks/get", task_id)
            )
            response = check_answer(answer, era=MODERN, sent=get, statuses={200})
            assert response is not None and "result" in response
            if response["result"]["status"] != "working":
                break
            time.sleep(0.05)


def test_regression_utf8_encoded_surrogate_bytes_are_a_parse_error(fresh: Fresh) -> None:
    """Bug: the bytes ED A0 80 (a UTF-8-encoded surrogate, invalid UTF-8) inside a string are
    accepted, because json.loads decodes bytes with "surrogatepass"; in the id they then give
    HTTP 500 (as above). Expected: 400 -32700, the body is not UTF-8 JSON (RFC 8259)."""
    headers = fresh.session_headers()
    with fresh.no_traceback():
        answer = fresh.send(b'{"jsonrpc":"2.0","id":"\xed\xa0\x80","method":"ping"}', headers)
        check_answer(answer, era=LEGACY, statuses={400})
        assert answer.messages[0]["error"]["code"] == -32700, answer.text


def test_regression_nan_task_ttl_is_a_parse_error(fresh: Fresh) -> None:
    """Bug: ``"task": {"ttl": NaN}`` passed the ttl check (NaN < 0 is false) and int(NaN)
    raised: -32603 and a traceback. Now: NaN is not JSON (RFC 8259), so 400, -32700."""
    headers = fresh.session_headers()
    body = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",'
        b'"arguments":{"text":"x"},"task":{"ttl":NaN}}}'
    )
    with fresh.no_traceback():
        answer = fresh.send(body, headers)
        check_answer(answer, era=LEGACY, statuses={400})
        assert answer.messages[0]["error"]["code"] == -32700, answer.text


def _sweep_depths(
    fresh: Fresh, build: Callable[[bytes], tuple[bytes, HeaderSpec, str]]
) -> list[str]:
    """Every depth from 900 to 999 (the window where Python's json still parses the body but
    re-serialising the value deeper in the stack overflows it): what went wrong, by depth."""
    failures = []
    for depth in range(900, 1000):
        deep = b"[" * depth + b"]" * depth
        content, headers, era = build(deep)
        answer = fresh.send(content, headers)
        sent = json.loads(content.replace(deep, b"[]"))
        try:
            check_answer(answer, era=era, sent=sent)
        except AssertionError as exc:
            failures.append(f"{era} depth {depth}: {str(exc)[:200]}")
    return failures


def test_regression_deep_arguments_near_the_recursion_limit(fresh: Fresh) -> None:
    """Bug: tool arguments nested ~960 deep parse, then ``json.dumps`` in the arguments-size
    check (Catalogue.invalid_arguments) raises RecursionError: -32603 "Internal error" and a
    traceback, in both eras. Expected: an invalid-arguments answer (a CallToolResult with
    isError, or -32602), or 400 -32700 if the bridge refuses such depth."""
    headers = fresh.session_headers()

    def legacy(deep: bytes) -> tuple[bytes, HeaderSpec, str]:
        head = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",'
        return head + b'"arguments":{"text":"a","x":' + deep + b'},"task":{}}}', headers, LEGACY

    def modern(deep: bytes) -> tuple[bytes, HeaderSpec, str]:
        meta = json.dumps(modern_meta()).encode()
        head = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",'
        content = head + b'"arguments":{"text":"a","x":' + deep + b'},"_meta":' + meta + b"}}"
        return content, fresh.modern_headers("tools/call", "echo"), MODERN

    with fresh.no_traceback():
        failures = _sweep_depths(fresh, legacy) + _sweep_depths(fresh, modern)
        assert not failures, "\n".join(failures)


def test_regression_deep_initialize_capabilities_are_not_a_500(fresh: Fresh) -> None:
    """Bug: initialize whose capabilities (or clientInfo) are nested ~960 deep parses, then
    ``json.dumps`` in Sessions.create raises RecursionError, which nothing catches: HTTP 500.
    Expected: an InitializeResult, -32602, or 400 -32700."""
    no_session = {"Accept": ACCEPT, "Content-Type": "application/json"}

    def caps(deep: bytes) -> tuple[bytes, HeaderSpec, str]:
        head = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":'
        version = b'{"protocolVersion":"2025-11-25","clientInfo":{"name":"r","version":"1"},'
        return head + version + b'"capabilities":{"x":' + deep + b"}}}", no_session, LEGACY

    with fresh.no_traceback():
        failures = _sweep_depths(fresh, caps)
        assert not failures, "\n".join(failures)


@pytest.mark.parametrize("verb", ["PUT", "PATCH", "OPTIONS", "HEAD"])
def test_regression_other_http_methods_are_a_clean_405(fresh: Fresh, verb: str) -> None:
    """Minor bug: PUT, PATCH and OPTIONS are refused by Starlette's router, not by the
    transport: 405 with the text/plain body "Method Not Allowed" (not JSON-RPC) and
    ``Allow: HEAD, POST, DELETE, GET``, which advertises HEAD, itself answered 405.
    Expected: 405, no body or a JSON-RPC error, and an Allow header naming only methods that
    are served."""
    headers = fresh.session_headers()
    answer = fresh.send(b"{}", headers, method=verb)
    check_answer(answer, era=LEGACY, statuses={405})
    allowed = {m.strip() for m in answer.headers.get("allow", "").split(",") if m.strip()}
    assert allowed and allowed <= {"GET", "POST", "DELETE"}, answer.headers.get("allow")
