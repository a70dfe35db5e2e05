"""Optional bearer authentication: static tokens, or JWTs verified against a key or a JWKS.

With authentication on, tasks belong to the principal (the token's ``sub``), whichever
session or request made them; without it, to the session (legacy era) or to nobody (the
stateless era, where the unguessable task id is the capability)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import anyio.to_thread
import jwt

from bridge.errors import HttpError
from bridge.settings import Settings


@dataclass(frozen=True)
class Principal:
    subject: str

    @property
    def owner(self) -> str:
        return f"principal:{self.subject}"


class Unauthorized(HttpError):
    def __init__(self, message: str) -> None:
        super().__init__(401, f"Unauthorized: {message}")


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = settings.auth_enabled
        self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url) if settings.jwt_jwks_url else None

    async def authenticate(self, authorization: str | None) -> Principal | None:
        """The caller's principal; None when authentication is off. Raises Unauthorized."""
        if not self.enabled:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("a bearer token is required")
        token = token.strip()
        for known, principal in self.settings.auth_tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return Principal(principal)
        if self.settings.jwt_key or self._jwks is not None:
            return await self._verify_jwt(token)
        raise Unauthorized("unknown token")

    async def _verify_jwt(self, token: str) -> Principal:
        settings = self.settings
        try:
            if self._jwks is not None:
                # Fetching (and caching) the key set blocks: keep it off the event loop.
                key = (
                    await anyio.to_thread.run_sync(self._jwks.get_signing_key_from_jwt, token)
                ).key
            else:
                key = settings.jwt_key
            claims = jwt.decode(
                token,
                key,
                algorithms=settings.jwt_algorithms,
                audience=settings.jwt_audience or None,
                issuer=settings.jwt_issuer or None,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": bool(settings.jwt_audience),
                },
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token ({type(exc).__name__})") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("the token has no subject")
        return Principal(subject)
