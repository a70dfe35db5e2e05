"""Typed settings, read from the environment (prefix ``MCP_BRIDGE_``) once per process."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MCP_BRIDGE_", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Where the registry, sessions and notification streams live."""
    broker_url: str = ""
    """Celery broker; empty means ``redis_url``."""
    result_backend: str = ""
    """Celery result backend; empty means ``redis_url``. MCP results live in the registry."""
    key_prefix: str = "mcp"
    """Prefix of every Redis key the bridge writes (see ``bridge.keys``)."""
    queue: str = "mcp"
    """Celery queue the bridge publishes tool calls to and workers consume."""
    tool_modules: Annotated[list[str], NoDecode] = ["workers.examples"]
    """Modules that declare tools with ``@workers.tool``."""

    task_ttl_default_ms: int = Field(3_600_000, gt=0)
    """Retention of a finished task when the client asks for none."""
    task_ttl_max_ms: int = Field(86_400_000, gt=0)
    """Upper bound on any requested ``ttl``."""
    poll_interval_ms: int = Field(1_000, gt=0)
    """The ``pollInterval`` suggested to clients."""
    plain_call_ttl_ms: int = Field(60_000, gt=0)
    """Retention of the hidden record behind a plain (non-task) tool call."""

    session_ttl_s: int = Field(86_400, gt=0)
    """Idle time after which a session and its notification stream are forgotten."""
    stream_maxlen: int = Field(10_000, gt=0)
    """Approximate length bound of each owner's notification stream."""
    subscriber_queue_size: int = Field(1_000, gt=0)
    """Events buffered per open SSE stream before a slow client is dropped."""
    sse_ping_s: float = Field(15.0, gt=0)
    page_size: int = Field(50, gt=0, le=1000)
    """Items per page of ``tools/list`` and ``tasks/list``."""
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)

    allowed_hosts: Annotated[list[str], NoDecode] = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    """Host header allow-list; ``*`` as the port matches any port, a lone ``*`` any host."""
    allowed_origins: Annotated[list[str], NoDecode] = [
        "http://127.0.0.1:*",
        "http://localhost:*",
        "http://[::1]:*",
    ]
    """Origin allow-list for browser requests; requests without Origin are allowed."""

    @field_validator("tool_modules", "allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _commas(cls, value: Any) -> Any:
        return _split_commas(value)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.task_ttl_default_ms > self.task_ttl_max_ms:
            raise ValueError("task_ttl_default_ms must not exceed task_ttl_max_ms")
        return self

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def celery_result_backend(self) -> str:
        return self.result_backend or self.redis_url
