"""Optional bearer authentication: static tokens, or JWTs verified against a key or a JWKS.

With authentication on, tasks belong to the principal (the token's ``sub``), whichever
session or request made them; without it, to the session (legacy era) or to nobody (the
stateless era, where the unguessable task id is the capability)."""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any

import jwt

from mcp_celery_bridge.bridge.jwks import KeySet
from mcp_celery_bridge.bridge.shared.errors import Unauthorized
from mcp_celery_bridge.bridge.shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    subject: str

    @property
    def owner(self) -> str:
        return f"principal:{self.subject}"


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        if (settings.jwt_key or settings.jwt_jwks_url) and not settings.jwt_audience:
            # Without an audience, a token minted for any other service of the same
            # identity provider would be accepted (a confused deputy).
            raise ValueError("JWT authentication needs MCP_BRIDGE_JWT_AUDIENCE")
        self.settings = settings
        self.enabled = settings.auth_enabled
        self._jwks = (
            KeySet(
                settings.jwt_jwks_url,
                min_refresh_s=settings.jwt_jwks_refresh_s,
                max_age_s=settings.jwt_jwks_max_age_s,
            )
            if settings.jwt_jwks_url
            else None
        )

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

    async def _key(self, header: dict[str, Any]) -> tuple[Any, str]:
        """The key to verify a token with, and the one algorithm allowed for it."""
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.settings.jwt_algorithms:
            raise Unauthorized("invalid token (algorithm not allowed)")
        if self._jwks is None:
            return self.settings.jwt_key, algorithm
        kid = header.get("kid")
        found = await self._jwks.key(kid) if isinstance(kid, str) else None
        if found is None:
            raise Unauthorized("invalid token (unknown key)")
        # The key decides its algorithm: an HS256 or ES256 token naming an RSA key is refused,
        # never tried with that key as something it is not.
        if found.algorithm_name != algorithm:
            raise Unauthorized("invalid token (algorithm does not match the key)")
        return found.key, algorithm

    async def _verify_jwt(self, token: str) -> Principal:
        settings = self.settings
        try:
            key, algorithm = await self._key(jwt.get_unverified_header(token))
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer or None,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token ({type(exc).__name__})") from None
        except (ValueError, TypeError, AttributeError) as exc:
            # A key of another kind than the algorithm needs (a configured PEM used as an
            # ES256 key, say): the token is refused, not the request failed.
            log.info("JWT refused: %s: %s", type(exc).__name__, exc)
            raise Unauthorized("invalid token (key does not fit)") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("the token has no subject")
        return Principal(subject)
