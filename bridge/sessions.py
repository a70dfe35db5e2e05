"""Legacy-era (2025-11-25) sessions, kept in Redis so any bridge process can serve them."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio

from bridge.keys import Keys
from bridge.settings import Settings
from bridge.store import translated


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
    def __init__(self, settings: Settings, client: redis.asyncio.Redis) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.redis = client

    async def create(
        self,
        protocol_version: str,
        capabilities: dict[str, Any],
        client_info: dict[str, Any],
        principal: str = "",
    ) -> Session:
        session = Session(
            secrets.token_hex(16), protocol_version, capabilities, client_info, principal
        )
        key = self.keys.session(session.id)
        with translated():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    key,
                    mapping={
                        "protocol_version": protocol_version,
                        "capabilities": json.dumps(capabilities),
                        "client_info": json.dumps(client_info),
                        "principal": principal,
                        "created": int(time.time() * 1000),
                    },
                )
                pipe.expire(key, self.settings.session_ttl_s)
                await pipe.execute()
        return session

    async def get(self, sid: str) -> Session | None:
        """The session, its idle timer renewed; None when unknown, expired or deleted."""
        key = self.keys.session(sid)
        with translated():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(key)
                pipe.expire(key, self.settings.session_ttl_s, xx=True)
                h, _ = await pipe.execute()
        if not h:
            return None
        return Session(
            sid,
            h["protocol_version"],
            json.loads(h.get("capabilities") or "{}"),
            json.loads(h.get("client_info") or "{}"),
            h.get("principal", ""),
        )

    async def delete(self, sid: str) -> bool:
        with translated():
            return bool(await self.redis.delete(self.keys.session(sid)))
