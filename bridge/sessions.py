"""Legacy-era (2025-11-25) sessions, kept in Redis so any bridge process can serve them."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio

from mcp_celery_bridge.bridge.shared.clients import AsyncRedis, translated
from mcp_celery_bridge.bridge.shared.errors import InternalError, LimitExceeded
from mcp_celery_bridge.bridge.shared.keys import Keys
from mcp_celery_bridge.bridge.shared.schema import refusal
from mcp_celery_bridge.bridge.shared.scripts import source
from mcp_celery_bridge.bridge.shared.settings import Settings

#: The client capabilities a session keeps: what the bridge reads (``elicitation``, and the
#: client's ``tasks`` support, which says what it can run as a task), each reduced to the
#: keys the spec defines, as empty objects. A session lives a day and is read on every
#: request, so a client cannot make it store (or make us re-parse) anything larger.
_KEPT_CAPABILITIES: dict[str, Any] = {
    "elicitation": {"form": {}, "url": {}},
    "tasks": {
        "list": {},
        "cancel": {},
        "requests": {"elicitation": {"create": {}}, "sampling": {"createMessage": {}}},
    },
}


def _kept(declared: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    return {
        name: _kept(declared[name], inner)
        for name, inner in template.items()
        if isinstance(declared.get(name), dict)
    }


def kept_capabilities(capabilities: dict[str, Any]) -> dict[str, Any]:
    """What a session stores of a client's ``capabilities``: bounded by ``_KEPT_CAPABILITIES``."""
    return _kept(capabilities, _KEPT_CAPABILITIES)


def kept_client_info(client_info: dict[str, Any], chars: int) -> dict[str, str]:
    """``name`` and ``version`` of a ``clientInfo``, each cut to ``chars``; nothing else."""
    return {
        field: value[:chars]
        for field in ("name", "version")
        if isinstance(value := client_info.get(field), str)
    }


@dataclass(frozen=True)
class Session:
    id: str
    protocol_version: str
    client_capabilities: dict[str, Any]
    client_info: dict[str, Any]
    principal: str = ""

    @property
    def owner(self) -> str:
        """What the session's tasks are bound to: its authenticated principal (so they are
        visible from any of the principal's sessions), else the session itself."""
        return f"principal:{self.principal}" if self.principal else f"session:{self.id}"


class Sessions:
    def __init__(self, settings: Settings, client: AsyncRedis) -> None:
        self.settings = settings
        self.keys = Keys.of(settings)
        self.redis = client
        self._open = client.register_script(source("session"))
        self._touch = client.register_script(source("touch"))

    async def create(
        self,
        protocol_version: str,
        capabilities: dict[str, Any],
        client_info: dict[str, Any],
        principal: str = "",
    ) -> Session:
        """A new session keeping only the bounded part of what the client declared; raises
        LimitExceeded when ``principal`` (all unauthenticated callers together, when "")
        already has ``max_sessions_per_principal`` live sessions."""
        capabilities = kept_capabilities(capabilities)
        client_info = kept_client_info(client_info, self.settings.max_client_info_chars)
        sid = self.keys.new_id(secrets.token_hex(16), principal)
        session = Session(sid, protocol_version, capabilities, client_info, principal)
        most = self.settings.max_sessions_per_principal
        fields = {
            "protocol_version": protocol_version,
            "capabilities": json.dumps(capabilities, separators=(",", ":")),
            "client_info": json.dumps(client_info, separators=(",", ":")),
            "principal": principal,
        }
        with translated():
            try:
                reply = await self._open(
                    keys=[self.keys.session(session.id), self.keys.principal_sessions(principal)],
                    args=[
                        session.id,
                        most,
                        self.settings.session_ttl_s * 1000,
                        self.keys.session_prefix(principal),
                        *(item for pair in fields.items() for item in pair),
                    ],
                )
            except redis.exceptions.ResponseError as exc:
                raise InternalError(f"could not create session: {exc}") from exc
        if refusal(reply) is not None:
            raise LimitExceeded(
                f"Too many sessions: the limit of {most} live sessions is reached; "
                "end one (HTTP DELETE) or wait for one to expire",
                {"limit": "sessions", "max": most},
            )
        return session

    async def get(self, sid: str, principal: str) -> Session | None:
        """The session of ``principal`` ("" when unauthenticated), its idle timer renewed;
        None when unknown, expired, deleted or another principal's (then nothing is renewed:
        a request answered 404 must not keep a session alive)."""
        if self.keys.shard_of_id(sid) != self.keys.shard_of(principal):
            return None  # not of this principal's shard, so not its session (nor one slot)
        with translated():
            flat = cast(
                list[str],
                await self._touch(
                    keys=[self.keys.session(sid), self.keys.principal_sessions(principal)],
                    args=[self.settings.session_ttl_s * 1000, principal],
                ),
            )
        if not flat:
            return None
        h = dict(zip(flat[::2], flat[1::2], strict=True))
        return Session(
            sid,
            h["protocol_version"],
            json.loads(h.get("capabilities") or "{}"),
            json.loads(h.get("client_info") or "{}"),
            h.get("principal", ""),
        )

    async def delete(self, sid: str) -> bool:
        # The principal's session set keeps the id until it is next pruned (at its limit).
        with translated():
            return bool(await self.redis.delete(self.keys.session(sid)))
