"""Typed settings, read from the environment (prefix ``MCP_BRIDGE_``) once per process."""

from __future__ import annotations

import ssl
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mcp_celery_bridge.bridge.shared import topology


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    # Each field's docstring is its description, and the settings reference in docs/operations.md is
    # generated from them (``reference``; tests/test_settings_doc.py keeps the two equal).
    model_config = SettingsConfigDict(
        env_prefix="MCP_BRIDGE_", frozen=True, use_attribute_docstrings=True
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Where the registry, sessions and notification streams live: ``redis://``,
    ``rediss://`` (TLS), a Sentinel deployment,
    ``sentinel://[:password@]host1:26379,host2:26379/0?master=<name>`` (``sentinels://``:
    TLS), or a Redis Cluster,
    ``redis+cluster://[:password@]host1:6379,host2:6379`` (``rediss+cluster://``: TLS; the
    broker and result backend must then be set apart: Celery knows no Cluster)."""
    redis_shards: int = Field(0, ge=0, le=4096)
    """How many shards the registry's keys are spread over (hash tags, one slot each): 0
    picks 1 for one Redis or a Sentinel deployment and 64 for a Cluster. Fixed for the life
    of a deployment: bridges and workers must agree, and owners keep their shard."""
    redis_ca_file: str = ""
    """The CA certificate (PEM file) that signed a ``rediss://`` Redis's certificate, for the
    registry, the broker and the result backend alike; empty: the system's CA store. The
    certificate is always checked, by the bridge and by Celery."""
    broker_url: str = ""
    """Celery broker; empty means ``redis_url``."""
    result_backend: str = ""
    """Celery result backend; empty means ``redis_url``. MCP results live in the registry."""
    key_prefix: str = "mcp"
    """Prefix of every Redis key the bridge writes (see ``bridge.shared.keys``)."""
    queue: str = "mcp"
    """Celery queue the bridge publishes tool calls to and workers consume."""
    tool_modules: Annotated[list[str], NoDecode] = ["mcp_celery_bridge.workers.examples"]
    """Modules that declare tools with ``@mcp_celery_bridge.tool`` or
    ``mcp_celery_bridge.expose`` (imported from the current directory too, as ``celery -A``
    imports)."""
    celery_app: str = ""
    """A project's own Celery app, as ``celery -A`` takes it (``proj``, ``proj.celery:app``):
    the bridge publishes through it, so its broker, transport options, routes, queues and
    serializer apply, and ``broker_url``, ``result_backend`` and ``queue`` do not. Empty:
    the bridge's own app (``celery -A mcp_celery_bridge.workers worker``)."""
    log_format: Literal["auto", "json", "text"] = "auto"
    """Log lines of the bridge and the workers: ``json`` (one object per line), ``text``, or
    ``auto``: text on a terminal, JSON otherwise."""

    task_ttl_default_ms: int = Field(3_600_000, gt=0)
    """Retention of a finished task when the client asks for none."""
    task_ttl_max_ms: int = Field(14_400_000, gt=0)
    """Upper bound on any requested ``ttl`` (how long a finished task and its result stay in
    Redis): a client cannot keep what it stored for longer."""
    poll_interval_ms: int = Field(1_000, gt=0)
    """The ``pollInterval`` suggested to clients."""
    plain_call_ttl_ms: int = Field(60_000, gt=0)
    """Retention of the hidden record behind a plain (non-task) tool call."""
    request_state_secret: str = ""
    """HMAC key sealing the ``requestState`` of a 2026-07-28 plain call that asks the user
    (``InputRequiredResult``). Empty: a random key made once and kept in Redis, so every
    bridge on that Redis accepts the others' state. Changing it refuses states in flight."""
    request_state_ttl_s: int = Field(3_600, gt=0)
    """How long a ``requestState`` stays valid: a follow-up ``tools/call`` presenting it later
    is refused (``-32602``)."""

    session_ttl_s: int = Field(86_400, gt=0)
    """Idle time after which a session and its notification stream are forgotten."""
    stream_maxlen: int = Field(10_000, gt=0)
    """Approximate length bound of each owner's notification stream."""
    subscriber_queue_size: int = Field(1_000, gt=0)
    """Events buffered per open SSE stream before a slow client is dropped."""
    sse_ping_s: float = Field(15.0, gt=0)
    """Seconds between keep-alive comments on an idle SSE stream."""
    page_size: int = Field(50, gt=0, le=1000)
    """Items per page of ``tools/list`` and ``tasks/list``."""
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    """Largest request body (413 above it)."""
    max_json_containers: int = Field(100_000, gt=0)
    """Most JSON arrays and objects in a request body (413 above it), counted as ``[`` and
    ``{`` bytes before parsing, strings included; they are what parsing builds slowest."""
    header_timeout_s: float = Field(10.0, gt=0)
    """Seconds a client has to send a request's headers, counted from its connection or from
    its first byte after a response; then 408 and the connection is closed. Also bounds the
    rest of a body the bridge answered without reading (a 401 before the body)."""
    body_timeout_s: float = Field(30.0, gt=0)
    """Seconds a client has to send a request's body once its headers are in; then 408 and
    the connection is closed."""
    max_header_bytes: int = Field(64 * 1024, gt=0)
    """Largest request line and headers; a connection sending more is closed (431)."""
    max_connections: int = Field(1_000, gt=0)
    """Connections one bridge process serves at once, open SSE streams included; a request
    on a connection beyond them is answered 503 and the connection closed."""
    max_argument_bytes: int = Field(1024 * 1024, gt=0)
    """Largest tool ``arguments`` object, as JSON (``-32602`` above it)."""
    max_result_bytes: int = Field(4 * 1024 * 1024, gt=0)
    """Largest tool result a worker stores; a larger one fails the call with a tool error."""
    max_inflight_per_owner: int = Field(1_000, gt=0)
    """Tasks (and plain calls) an owner may have running or queued at once."""
    max_running_per_owner: int = Field(4, gt=0)
    """Tasks (and plain calls) of one owner that workers run at once. A worker that picks up
    one more puts it back on the queue for a moment instead (Celery state RETRY), so the
    owner's other calls wait and other owners' calls get the free workers. Keep it below the
    workers' total concurrency, or one owner can still hold them all."""
    tool_time_limit_s: float = Field(3_600.0, gt=0)
    """Longest run of a tool body (Celery's soft time limit; ``@tool(time_limit=...)``
    overrides it per tool). Then ``SoftTimeLimitExceeded`` is raised in the body; a body
    still running ``tool_kill_grace_s`` later is killed (the hard limit). Either way the
    task is ``failed`` with a JSON-RPC error whose ``data.reason`` is ``time_limit``."""
    tool_kill_grace_s: float = Field(10.0, gt=0)
    """Seconds between a tool's time limit and the kill of its pool process."""
    max_creates_per_minute: int = Field(6_000, gt=0)
    """Task creations (and plain calls) per owner per clock minute."""
    max_bytes_per_owner: int = Field(64 * 1024 * 1024, gt=0)
    """Bytes an owner may hold in Redis at once: its task records with their results,
    arguments waiting in the queue, questions and events (see ``bridge.shared.keys``). A create
    beyond it fails (``-32000``), and a result that would exceed it fails its task."""
    max_sessions_per_principal: int = Field(1_000, gt=0)
    """Live sessions per authenticated principal; an ``initialize`` beyond it is refused
    (``-32000``). Unauthenticated callers cannot be told apart, so they share this limit."""
    max_progress_token_bytes: int = Field(256, gt=0)
    """Largest ``progressToken``, as JSON; a request with a larger one is refused
    (``-32602``) rather than echoed in every progress notification."""
    max_client_info_chars: int = Field(128, gt=0)
    """A session keeps its client's ``clientInfo`` name and version cut to this length, and
    nothing else of it (nor of the client's capabilities beyond what the bridge reads)."""
    max_streams_per_session: int = Field(10, gt=0)
    """GET streams one session may hold open on one bridge process; one more is answered 429
    (a client needs one; a few more cover reconnects racing the old stream's end)."""
    max_listen_task_ids: int = Field(100, gt=0)
    """Task ids one ``subscriptions/listen`` request may name; more are refused
    (``-32602``), since each is looked up and followed."""
    replay_page_events: int = Field(100, gt=0, le=10_000)
    """Events read from Redis at a time when a stream resumes with ``Last-Event-ID``, so a
    resume of a long stream holds one page in memory, not the whole stream."""

    auth_tokens: Annotated[dict[str, str], NoDecode] = {}
    """Static bearer tokens, ``token:principal,token:principal``. Setting these (or a JWT
    key) turns authentication on: every request then needs ``Authorization: Bearer``."""
    jwt_key: str = ""
    """Verify bearer JWTs with this key: an HMAC secret, or a PEM public key."""
    jwt_jwks_url: str = ""
    """Verify bearer JWTs with the keys published at this JWKS URL."""
    jwt_issuer: str = ""
    """Required ``iss`` of bearer JWTs (checked when set)."""
    jwt_audience: str = ""
    """Required ``aud`` of bearer JWTs: this bridge's own identifier at the identity
    provider. JWT authentication refuses to start without it (a token minted for another
    service must not be accepted here)."""
    jwt_jwks_refresh_s: float = Field(30.0, gt=0)
    """Least time between two fetches of the JWKS: a token naming an unknown key id causes at
    most one fetch per this interval (valid tokens never wait for one)."""
    jwt_jwks_max_age_s: float = Field(300.0, gt=0)
    """Age after which the JWKS is fetched again, in the background (its keys still serve
    meanwhile)."""
    jwt_algorithms: Annotated[list[str], NoDecode] = ["RS256", "ES256", "HS256"]
    """Algorithms a bearer JWT may be signed with."""
    allow_unauthenticated_remote: bool = False
    """Serve without authentication on a non-loopback address (refused unless set)."""

    allowed_hosts: Annotated[list[str], NoDecode] = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    """Host header allow-list; ``*`` as the port matches any port, a lone ``*`` any host."""
    allowed_origins: Annotated[list[str], NoDecode] = [
        "http://127.0.0.1:*",
        "http://localhost:*",
        "http://[::1]:*",
    ]
    """Origin allow-list for browser requests; requests without Origin are allowed."""

    lease_s: float = Field(30.0, gt=0)
    """While a tool body runs, its pool process renews a lease every ``lease_s / 3``; a
    task whose lease is ``lease_s`` old (its worker died, or froze) is failed by the reaper.
    Read by the workers (the lease length) and the bridges (the grace after an outage)."""
    reaper_interval_s: float = Field(1.0, gt=0)
    """How often each bridge process looks for expired leases; a task whose worker died
    leaves ``working`` within ``lease_s + reaper_interval_s``."""
    acks_late: bool = False
    """Workers acknowledge a tool call's Celery message when it finishes rather than when it
    starts, and requeue it when its pool process is lost (``task_acks_late`` and
    ``task_reject_on_worker_lost``): at-least-once runs instead of at-most-once."""
    visibility_timeout_s: int = Field(3_600, gt=0)
    """Age after which the Redis broker hands an unacknowledged message (a late-acked call
    whose worker died, or a prefetched one) to another worker. Must exceed the longest tool
    run when ``acks_late`` is on, or a running call is delivered a second time."""
    broker_transport_options: dict[str, Any] = {}
    """More Celery ``broker_transport_options`` for the bridge's own app, as JSON (e.g.
    ``{"unacked_restore_throttle": 1}``): they go over the bridge's own (the visibility
    timeout, a Sentinel's master name). A project's app (``celery_app``) keeps its own."""
    max_runs: int = Field(3, gt=0)
    """How many times a task may be started (a redelivered message starts it again); beyond
    this it fails instead, so a call that kills its worker every time cannot loop."""

    @field_validator(
        "tool_modules", "allowed_hosts", "allowed_origins", "jwt_algorithms", mode="before"
    )
    @classmethod
    def _commas(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _token_pairs(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs = {}
        for item in _split_commas(value):
            token, sep, principal = item.rpartition(":")
            if not sep or not token or not principal:
                raise ValueError("auth_tokens are token:principal pairs")
            pairs[token] = principal
        return pairs

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth_tokens or self.jwt_key or self.jwt_jwks_url)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for url in (self.redis_url, self.broker_url, self.result_backend):
            topology.sentinels(url)  # a bad sentinel:// URL stops the process here
            topology.cluster(url)
        for name, url in (("broker_url", self.broker_url), ("result_backend", self.result_backend)):
            if topology.cluster(url or self.redis_url) is not None and not self.celery_app:
                raise ValueError(
                    f"{name} must be set apart from a Redis Cluster registry (RabbitMQ, or a "
                    "Redis that is not a cluster): Celery's Redis transport and result "
                    "backend know no Cluster"
                )
        if self.redis_cluster and self.redis_shards == 1:
            # Untagged keys of one task or owner would lie in several slots.
            raise ValueError("redis_shards must be 0 (auto) or at least 2 on a Redis Cluster")
        if self.task_ttl_default_ms > self.task_ttl_max_ms:
            raise ValueError("task_ttl_default_ms must not exceed task_ttl_max_ms")
        if self.max_bytes_per_owner < self.max_result_bytes + self.max_argument_bytes:
            # Otherwise a call within the other limits could never store its result.
            raise ValueError(
                "max_bytes_per_owner must be at least max_result_bytes + max_argument_bytes"
            )
        return self

    @property
    def redis_cluster(self) -> bool:
        return topology.cluster(self.redis_url) is not None

    @property
    def shards(self) -> int:
        if self.redis_shards:
            return self.redis_shards
        return 64 if self.redis_cluster else 1

    @property
    def redis_database(self) -> int:
        """The database number ``redis_url`` names (0 when it names none)."""
        url = urlsplit(self.redis_url)
        path = url.path.strip("/")
        if path.isdigit():
            return int(path)
        db = parse_qs(url.query).get("db", ["0"])[0]
        return int(db) if db.isdigit() else 0

    @property
    def celery_broker_url(self) -> str:
        return topology.celery_url(self.broker_url or self.redis_url)

    @property
    def celery_result_backend(self) -> str:
        return topology.celery_url(self.result_backend or self.redis_url)

    @property
    def celery_broker_options(self) -> dict[str, Any]:
        """The broker's transport options: the bridge's (the visibility timeout, a
        Sentinel's master name) with ``broker_transport_options`` over them."""
        options = topology.celery_options(self.broker_url or self.redis_url, self.redis_ca_file)
        return {
            "visibility_timeout": self.visibility_timeout_s,
            **options,
            **self.broker_transport_options,
        }

    @property
    def celery_tls(self) -> dict[str, Any]:
        """Celery's TLS settings for ``rediss://`` and ``sentinels://`` broker and backend
        URLs: certificates checked (against ``redis_ca_file`` or the system's CA store),
        never skipped."""
        tls = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": self.redis_ca_file or None}
        found: dict[str, Any] = {}
        if _tls(self.broker_url or self.redis_url):
            found["broker_use_ssl"] = tls
        if _tls(self.result_backend or self.redis_url):
            found["redis_backend_use_ssl"] = tls
        return found

    @property
    def celery_backend_options(self) -> dict[str, Any]:
        return topology.celery_options(self.result_backend or self.redis_url, self.redis_ca_file)


def _tls(url: str) -> bool:
    return url.startswith(("rediss://", topology.TLS_SCHEME))


def _default(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value) or "(none)"
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items()) or "(none)"
    return str(value).lower() if isinstance(value, bool) else (str(value) or "(empty)")


def reference() -> str:
    """The settings as a markdown table (variable, default, meaning), for docs/operations.md."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        meaning = " ".join((field.description or "").split()).replace("``", "`")
        rows.append(f"| `MCP_BRIDGE_{name.upper()}` | `{_default(field.default)}` | {meaning} |")
    return "\n".join(rows) + "\n"
