"""The ``requestState`` of a 2026-07-28 plain call that asks the user (SEP-2322).

The state names the hidden task that runs the call, and the client holds it between the
rounds, so it is attacker-controlled input (the spec's words): it is sealed with an HMAC
and bound to what the spec lists, each checked when a follow-up ``tools/call`` presents it:
the caller (owner), an expiry (``request_state_ttl_s``) and the call it continues (the
tool's name and a digest of its arguments). Sealed, not encrypted: the client can read the
task id, which is no secret of its own call. Each round's state is new (a fresh nonce), and
a state is not single-use: answers are (``Registry.answer`` takes each question's first).

The HMAC key is ``request_state_secret``, or else a random key kept in Redis, made once by
the first bridge that needs it: every replica on that Redis seals and opens alike, without
any setting to share. It is read on each use (one round trip) rather than cached, so a key
lost with the Redis data is replaced everywhere at once instead of splitting the replicas.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from mcp_celery_bridge.bridge.shared.clients import AsyncRedis, translated
from mcp_celery_bridge.bridge.shared.errors import InvalidParams
from mcp_celery_bridge.bridge.shared.keys import Keys
from mcp_celery_bridge.bridge.shared.settings import Settings

#: Longer states are refused unread: a sealed one is about 250 characters.
MAX_STATE_CHARS = 2_048
VERSION = 1


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def call_digest(name: str, arguments: dict[str, Any]) -> str:
    """What identifies a tool call across its rounds: its name and its arguments."""
    canonical = json.dumps(
        {"name": name, "arguments": arguments}, sort_keys=True, separators=(",", ":")
    )
    return _b64(hashlib.sha256(canonical.encode()).digest())


class RequestStates:
    def __init__(self, settings: Settings, client: AsyncRedis) -> None:
        self.settings = settings
        self.redis = client
        self.keys = Keys.of(settings)

    async def _secret(self) -> bytes:
        if self.settings.request_state_secret:
            return self.settings.request_state_secret.encode()
        key = self.keys.request_state_key()
        with translated():
            stored = await self.redis.get(key)
            if stored is None:
                # SET NX: of the bridges racing to make it, one wins and all read its key.
                await self.redis.set(key, secrets.token_urlsafe(32), nx=True)
                stored = await self.redis.get(key)
        return str(stored).encode()  # the bridge's client decodes responses

    async def seal(self, owner: str, task_id: str, name: str, arguments: dict[str, Any]) -> str:
        payload = {
            "v": VERSION,
            "t": task_id,
            "o": owner,
            "c": call_digest(name, arguments),
            "x": int(time.time() * 1000) + self.settings.request_state_ttl_s * 1000,
            "n": secrets.token_urlsafe(6),
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        mac = hmac.new(await self._secret(), body, hashlib.sha256).digest()
        return f"{_b64(body)}.{_b64(mac)}"

    async def open(self, state: Any, owner: str, name: str, arguments: dict[str, Any]) -> str:
        """The task id ``state`` names, once it proves sealed here, unexpired, issued to
        ``owner`` and for this very call. Raises InvalidParams (-32602) otherwise."""
        if not isinstance(state, str) or len(state) > MAX_STATE_CHARS:
            raise InvalidParams("requestState must be a string this server issued")
        body_text, _, mac_text = state.partition(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (binascii.Error, ValueError):
            raise InvalidParams("requestState failed verification") from None
        expected = hmac.new(await self._secret(), body, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise InvalidParams("requestState failed verification")
        payload = json.loads(body)  # sealed here, so well-formed
        if payload.get("v") != VERSION:
            raise InvalidParams("requestState failed verification")
        if payload["o"] != owner:
            raise InvalidParams("requestState was not issued to this caller")
        if payload["c"] != call_digest(name, arguments):
            raise InvalidParams(
                "requestState was issued for another call: send the same tool name and "
                "arguments as the request that received it"
            )
        if payload["x"] < time.time() * 1000:
            raise InvalidParams("requestState expired: call the tool again without it")
        return str(payload["t"])
