"""Fast unit tests of pure helpers: no Redis, no worker, no bridge process."""

from __future__ import annotations

import base64
import re
import string
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from mcp_celery_bridge.bridge import param_headers
from mcp_celery_bridge.bridge.cursors import decode_cursor as _decode_cursor
from mcp_celery_bridge.bridge.cursors import encode_cursor as _encode_cursor
from mcp_celery_bridge.bridge.events import valid_event_id
from mcp_celery_bridge.bridge.guard import matches
from mcp_celery_bridge.bridge.jsonrpc import parse
from mcp_celery_bridge.bridge.shared.errors import HttpError, InvalidParams
from mcp_celery_bridge.bridge.shared.scripts import compact
from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.bridge.timestamps import iso
from mcp_celery_bridge.workers.tools import catalogue, to_call_tool_result, tool
from tests.schema import check

pytestmark = pytest.mark.fast

DEFAULT_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
DEFAULT_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]

# -- bridge.guard.matches ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "localhost:8000",
        "localhost",
        "LOCALHOST:8000",
        "127.0.0.1:1",
        "127.0.0.1",
        "[::1]:8000",
        "[::1]",
    ],
)
def test_matches_allowed_hosts(value: str) -> None:
    assert matches(value, DEFAULT_HOSTS)


@pytest.mark.parametrize(
    "value",
    [
        "evil.example",
        "evil.example:8000",
        "127.0.0.1.evil.example:8000",
        "localhost.evil.example",
        "127.0.0.2:8000",
        "[::2]:8000",
        "",
    ],
)
def test_matches_refuses_other_hosts(value: str) -> None:
    assert not matches(value, DEFAULT_HOSTS)


def test_matches_exact_port() -> None:
    assert matches("localhost:8000", ["localhost:8000"])
    assert not matches("localhost:8001", ["localhost:8000"])
    assert not matches("localhost", ["localhost:8000"])
    assert matches("[::1]:8000", ["[::1]:8000"])
    assert not matches("[::1]:8001", ["[::1]:8000"])


def test_matches_lone_star_matches_anything() -> None:
    assert matches("anything.example:1234", ["*"])
    assert matches("http://evil.example", ["*"])
    assert not matches("anything.example", [])


@pytest.mark.parametrize(
    "value",
    ["http://localhost:1234", "http://localhost", "HTTP://LocalHost:1", "http://[::1]:3000"],
)
def test_matches_allowed_origins(value: str) -> None:
    assert matches(value, DEFAULT_ORIGINS)


@pytest.mark.parametrize(
    "value",
    [
        "http://evil.example",
        "https://localhost:1234",  # another scheme
        "localhost:1234",  # no scheme at all
        "http://localhost.evil.example:1234",
        "null",
        "http://[::2]:3000",
    ],
)
def test_matches_refuses_other_origins(value: str) -> None:
    assert not matches(value, DEFAULT_ORIGINS)


@pytest.mark.parametrize(
    "value",
    [
        "[::1]evil.example",  # text after "]" that is not ":port"
        "[::1].evil.example:80",
        "[::1",  # unterminated IPv6 literal
        "localhost:80:90",  # two ports
        "localhost:abc",  # not a port
    ],
)
def test_matches_refuses_malformed_values(value: str) -> None:
    # "*" as the port means any port, not any text after the host.
    assert not matches(value, DEFAULT_HOSTS)


# -- cursors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["t", "o"])
@pytest.mark.parametrize("value", [0, 1, 49, 10**12])
def test_cursor_round_trip(kind: str, value: int) -> None:
    cursor = _encode_cursor(kind, value)
    assert isinstance(cursor, str)
    assert "=" not in cursor
    assert _decode_cursor(kind, cursor) == value


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!!",
        "not a cursor",
        "x" * 65,
        _b64(b"t:-1"),
        _b64(b"t:"),
        _b64(b"t:abc"),
        _b64(b"t: 1"),
        _b64(b"t:1.5"),
        _b64(b"t1"),
        _b64(b"\xff\xfe:1"),
        _b64(b"o:5"),  # another kind of cursor
        _encode_cursor("o", 5),
    ],
)
def test_cursor_garbage_is_invalid_params(cursor: str) -> None:
    with pytest.raises(InvalidParams):
        _decode_cursor("t", cursor)


@pytest.mark.parametrize("cursor", [None, 5, 1.5, ["dDox"], {"c": 1}, True])
def test_cursor_not_a_string_is_invalid_params(cursor: Any) -> None:
    with pytest.raises(InvalidParams):
        _decode_cursor("t", cursor)


# -- settings ---------------------------------------------------------------------------------


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALLOWED_HOSTS", "ALLOWED_ORIGINS", "TOOL_MODULES", "MAX_BODY_BYTES"):
        monkeypatch.delenv(f"MCP_BRIDGE_{name}", raising=False)
    settings = Settings()
    assert settings.allowed_hosts == DEFAULT_HOSTS
    assert settings.allowed_origins == DEFAULT_ORIGINS
    assert settings.max_body_bytes == 4 * 1024 * 1024


def test_settings_comma_lists_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_BRIDGE_ALLOWED_HOSTS", " a.example:* , b.example:8000,,[::1]:* ")
    monkeypatch.setenv("MCP_BRIDGE_ALLOWED_ORIGINS", "https://app.example,http://localhost:*")
    monkeypatch.setenv("MCP_BRIDGE_TOOL_MODULES", "mcp_celery_bridge.workers.examples,tests.tools")
    settings = Settings()
    assert settings.allowed_hosts == ["a.example:*", "b.example:8000", "[::1]:*"]
    assert settings.allowed_origins == ["https://app.example", "http://localhost:*"]
    assert settings.tool_modules == ["mcp_celery_bridge.workers.examples", "tests.tools"]


def test_settings_single_item_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_BRIDGE_ALLOWED_HOSTS", "*")
    assert Settings().allowed_hosts == ["*"]


def test_settings_reject_default_ttl_above_max(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_BRIDGE_TASK_TTL_DEFAULT_MS", "20000")
    monkeypatch.setenv("MCP_BRIDGE_TASK_TTL_MAX_MS", "10000")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("MCP_BRIDGE_TASK_TTL_MAX_MS", "20000")
    settings = Settings()
    assert settings.task_ttl_default_ms == settings.task_ttl_max_ms == 20000


def test_settings_reject_non_positive_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_BRIDGE_MAX_BODY_BYTES", "0")
    with pytest.raises(ValidationError):
        Settings()


# -- to_call_tool_result ----------------------------------------------------------------------


class Args(BaseModel):
    a: int
    b: int = 1


class Point(BaseModel):
    x: int
    when: datetime


def test_result_of_a_string() -> None:
    result = to_call_tool_result("héllo")
    assert result == {"content": [{"type": "text", "text": "héllo"}]}
    check("CallToolResult", result)


def test_result_of_a_dict_has_structured_content() -> None:
    result = to_call_tool_result({"n": 3, "name": "é"})
    assert result["structuredContent"] == {"n": 3, "name": "é"}
    assert result["content"] == [{"type": "text", "text": '{"n": 3, "name": "é"}'}]
    check("CallToolResult", result)


def test_a_dict_with_values_json_lacks_is_stored_as_their_text() -> None:
    # A Celery task's JSON serializer takes these; the stored result must be JSON too.
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    result = to_call_tool_result({"when": when, "amount": Decimal("1.50"), "id": uuid.UUID(int=1)})
    assert result["structuredContent"] == {
        "when": "2025-01-02 03:04:05+00:00",
        "amount": "1.50",
        "id": "00000000-0000-0000-0000-000000000001",
    }
    assert compact(result)  # storable as the registry stores it
    check("CallToolResult", result)


def test_result_of_none_is_empty_content() -> None:
    result = to_call_tool_result(None)
    assert result == {"content": []}
    check("CallToolResult", result)


def test_result_of_a_pydantic_model() -> None:
    point = Point(x=2, when=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    result = to_call_tool_result(point)
    assert result["structuredContent"] == {"x": 2, "when": "2025-01-02T03:04:05Z"}
    assert result["content"][0]["type"] == "text"
    assert '"x": 2' in result["content"][0]["text"]
    check("CallToolResult", result)


def test_result_shaped_dict_is_the_result() -> None:
    image = {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"}
    returned = {"content": [{"type": "text", "text": "a picture"}, image]}
    assert to_call_tool_result(returned) == returned
    check("CallToolResult", to_call_tool_result(returned))
    error = {"content": [{"type": "text", "text": "no"}], "isError": True}
    assert to_call_tool_result(error) == error


@pytest.mark.parametrize(
    "data",
    [
        {"content": "text", "n": 1},
        {"content": [{"type": "text", "text": "x"}], "other": 1},
        {"content": ["not a block"]},
    ],
)
def test_other_dicts_stay_data(data: dict[str, Any]) -> None:
    assert to_call_tool_result(data)["structuredContent"] == data


@pytest.mark.parametrize(("value", "text"), [(3, "3"), ([1, "a"], '[1, "a"]'), (True, "true")])
def test_result_of_other_values_is_json_text(value: Any, text: str) -> None:
    result = to_call_tool_result(value)
    assert result == {"content": [{"type": "text", "text": text}]}
    check("CallToolResult", result)


# -- the @tool decorator ----------------------------------------------------------------------


def test_tool_input_schema_with_defaults() -> None:
    name = f"unit_probe_{uuid.uuid4().hex[:8]}"

    @tool(name=name, task_support="required")
    def probe(count: int, label: str = "x", ratio: float | None = None) -> str:
        """A probe.

        With details."""
        return label * count

    declared = catalogue()[name]
    schema = declared.input_schema
    assert schema["type"] == "object"
    assert schema["required"] == ["count"]
    assert set(schema["properties"]) == {"count", "label", "ratio"}
    assert schema["properties"]["count"]["type"] == "integer"
    assert schema["properties"]["label"] == {"default": "x", "title": "Label", "type": "string"}
    assert schema["additionalProperties"] is False
    assert "title" not in schema
    check("Tool", {"name": name, "inputSchema": schema})
    assert declared.task_support == "required"
    assert declared.description == "A probe.\n\nWith details."
    assert declared.celery_name == f"mcp.{name}"
    assert declared.call({"count": 2}) == "xx"
    with pytest.raises(ValidationError):
        declared.validate({"label": "y"})
    with pytest.raises(ValidationError):
        declared.validate({"count": 1, "extra": 1})


def test_tool_without_parameters_has_an_object_schema() -> None:
    name = f"unit_noargs_{uuid.uuid4().hex[:8]}"

    @tool(name=name)
    def noargs() -> None:
        return None

    schema = catalogue()[name].input_schema
    assert schema["type"] == "object"
    assert schema["properties"] == {}
    assert "required" not in schema or schema["required"] == []
    assert catalogue()[name].task_support == "optional"
    check("Tool", {"name": name, "inputSchema": schema})


def test_tool_with_a_model_parameter_uses_the_model() -> None:
    name = f"unit_model_{uuid.uuid4().hex[:8]}"

    @tool(name=name)
    def add(args: Args) -> int:
        return args.a + args.b

    declared = catalogue()[name]
    assert declared.takes_model
    assert declared.input_schema["required"] == ["a"]
    assert declared.call({"a": 2}) == 3


# -- iso and event ids ------------------------------------------------------------------------

_ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_234, "1970-01-01T00:00:01.234Z"),
        (1_700_000_000_005, "2023-11-14T22:13:20.005Z"),
        (1_700_000_000_999, "2023-11-14T22:13:20.999Z"),
    ],
)
def test_iso_is_utc_with_milliseconds(ms: int, expected: str) -> None:
    text = iso(ms)
    assert text == expected
    assert _ISO_MS.match(text)
    assert text.endswith("Z")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None
    assert round(parsed.timestamp() * 1000) == ms


@pytest.mark.parametrize("value", ["0-0", "1700000000000-0", "1-18446744073709551615"])
def test_valid_event_ids(value: str) -> None:
    assert valid_event_id(value)


@pytest.mark.parametrize("value", ["", "abc", "1", "1-", "-1", "1-2-3", "1-a", " 1-2", "1-2 "])
def test_invalid_event_ids(value: str) -> None:
    assert not valid_event_id(value)


def test_task_ids_are_long_url_safe_and_never_look_like_options() -> None:
    from mcp_celery_bridge.bridge.service import TASK_ID, new_task_id
    from mcp_celery_bridge.bridge.shared.keys import Keys

    ids = {new_task_id(Keys("mcp"), "owner") for _ in range(5000)}
    assert len(ids) == 5000
    assert all(len(i) == 32 and not i.startswith("-") for i in ids)
    assert all(set(i) <= set(string.ascii_letters + string.digits + "-_") for i in ids)
    assert all(TASK_ID.match(i) for i in ids)


def test_with_shards_every_key_of_an_owner_and_its_tasks_shares_one_slot() -> None:
    from redis.crc import key_slot

    from mcp_celery_bridge.bridge.service import TASK_ID, new_task_id
    from mcp_celery_bridge.bridge.shared.keys import Keys

    keys = Keys("mcp", shards=64)
    shards = set()
    for n in range(200):
        owner = f"owner-{n}"
        task_id = new_task_id(keys, owner)
        assert TASK_ID.match(task_id)
        shard = keys.shard_of(owner)
        shards.add(shard)
        assert keys.shard_of_id(task_id) == shard
        together = [
            keys.task(task_id), keys.inputs(task_id), keys.flow(task_id), keys.answer(task_id, "k"),
            keys.leases_of(task_id), keys.task_prefix(owner) + task_id, keys.owner_tasks(owner),
            keys.owner_seq(owner), keys.inflight(owner), keys.rate(owner, 1), keys.usage(owner),
            keys.usage_expiry(owner), keys.running(owner), keys.asking(owner), keys.events(owner),
            keys.call(owner, "1"),
        ]  # fmt: skip
        assert len({key_slot(k.encode()) for k in together}) == 1, together
        sid = keys.new_id("ab" * 16, owner)  # a session of principal ``owner``
        assert key_slot(keys.session(sid).encode()) == key_slot(
            keys.principal_sessions(owner).encode()
        )
    assert len(shards) > 40  # owners spread over the shards
    # An id the deployment did not make still names one slot for all its keys.
    for odd in ["x", "x.99", "x.07", "a{b}c.3", "", "x.²", "x.-1"]:
        assert key_slot(keys.task(odd).encode()) == key_slot(keys.inputs(odd).encode())
    # One shard: the keys as they were before shards.
    plain = Keys("mcp")
    assert plain.task("abc") == "mcp:task:abc" and plain.leases_of("abc") == "mcp:leases"
    assert plain.owner_tasks("o") == "mcp:owner:o:tasks" and plain.new_id("abc", "o") == "abc"


@pytest.mark.parametrize(
    "prop",
    [
        {"type": "string", "x-mcp-header": "Bad Name"},
        {"type": "string", "x-mcp-header": ""},
        {"type": "number", "x-mcp-header": "Ratio"},
        {"type": "object", "x-mcp-header": "Blob"},
        {"anyOf": [{"type": "string"}], "x-mcp-header": "Loose"},
    ],
)
def test_a_tool_cannot_mirror_an_argument_the_spec_forbids(prop: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="x-mcp-header"):
        param_headers.declared({"type": "object", "properties": {"p": prop}}, "t")


def test_a_header_name_is_mirrored_once_whatever_its_case() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "x-mcp-header": "Region"},
            "b": {"type": "string", "x-mcp-header": "region"},
        },
    }
    with pytest.raises(ValueError, match="twice"):
        param_headers.declared(schema, "t")


def test_brackets_inside_strings_are_not_containers() -> None:
    # The cheap byte count would refuse this body; the exact count looks past strings.
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"s":"' + b"[{" * 60 + b'"}}'
    assert parse(body, max_containers=10)["params"]["s"] == "[{" * 60
    escaped = b'{"a":"\\\\\\"[[","b":[[],[]]}'  # an escaped quote does not end a string
    assert parse(escaped, max_containers=4)["b"] == [[], []]
    with pytest.raises(HttpError) as refused:
        parse(escaped, max_containers=3)
    assert refused.value.status == 413


def test_a_broken_connection_in_redis_py_is_lost_connection_and_nothing_else_is() -> None:
    import redis.asyncio.connection

    from mcp_celery_bridge.bridge.shared.clients import lost_connection, translated
    from mcp_celery_bridge.bridge.shared.errors import StoreUnavailable

    # What redis-py raises writing on a connection another task closed (redis-py#4287):
    # an AttributeError from its connection code, not a ConnectionError.
    scope: dict[str, Any] = {}
    code = "def write():\n    raise AttributeError(\"'NoneType' has no attribute 'writelines'\")\n"
    exec(compile(code, redis.asyncio.connection.__file__, "exec"), scope)
    with pytest.raises(StoreUnavailable), translated():
        scope["write"]()
    # The same error from anywhere else is a bug, and stays one.
    with pytest.raises(AttributeError), translated():
        raise AttributeError("'NoneType' has no attribute 'writelines'")
    assert lost_connection(redis.ConnectionError("gone")) and not lost_connection(ValueError())


def test_a_closed_tls_connection_with_bytes_coming_is_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio

    from mcp_celery_bridge.bridge.shared.clients import _closed_tls

    loop = asyncio.new_event_loop()
    try:
        closed = RuntimeError(
            "unable to perform operation on <TCPTransport>; the handler is closed"
        )
        _closed_tls(loop, {"message": "Fatal error on SSL protocol", "exception": closed})
        assert not [r for r in caplog.records if r.levelname == "ERROR"]
        # Anything else still goes to the loop's default handler, an error with its traceback.
        _closed_tls(loop, {"message": "Task exception was never retrieved", "exception": closed})
        assert [r for r in caplog.records if r.levelname == "ERROR"]
    finally:
        loop.close()


def test_multi_host_redis_urls_are_read_and_bad_ones_refused() -> None:
    from mcp_celery_bridge.bridge.shared import topology

    found = topology.sentinels(
        "sentinel://u%40x:p%3Aw@[::1]:26380,s2/3?master=m&sentinel_password=sp"
    )
    assert found == topology.Sentinels(
        hosts=[("::1", 26380), ("s2", 26379)],
        master="m",
        db=3,
        username="u@x",
        password="p:w",
        sentinel_password="sp",
    )
    nodes = topology.cluster("rediss+cluster://:pw@n1:7000,n2")
    assert nodes == topology.Cluster([("n1", 7000), ("n2", 6379)], None, "pw", tls=True)
    assert topology.cluster("redis://h:1/0") is None and topology.sentinels("redis://h") is None
    for bad in [
        "sentinel://h1:26379/0",  # no master
        "sentinel://?master=m",  # no host
        "sentinel://h:x?master=m",  # a bad port
        "redis+cluster://",  # no node
        "redis+cluster://h:1/2",  # a database other than 0
    ]:
        with pytest.raises(ValueError):
            topology.sentinels(bad) if bad.startswith("sentinel") else topology.cluster(bad)
