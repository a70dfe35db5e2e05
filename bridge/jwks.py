"""The signing keys an identity provider publishes (a JWKS URL), cached by key id.

A token's key is found without waiting whenever it is known: a valid token never waits for
the identity provider. An unknown ``kid`` may trigger one refetch, but at most one fetch
runs at a time and fetches come at least ``min_refresh_s`` apart, so tokens naming made-up
key ids cost the provider (and the bridge) nothing more than a set lookup. A key set older
than ``max_age_s`` is refreshed in the background, its keys still served meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import jwt

log = logging.getLogger(__name__)


class KeySet:
    def __init__(
        self,
        url: str,
        *,
        min_refresh_s: float = 30.0,
        max_age_s: float = 300.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.min_refresh_s = min_refresh_s
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = float("-inf")  # monotonic time of the last fetch attempt
        self._loaded = float("-inf")  # ... and of the last successful one
        self._fetch: asyncio.Task[None] | None = None

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The key ``kid``, or None when the provider does not publish it."""
        now = time.monotonic()
        found = self._keys.get(kid)
        if found is not None:
            if now - self._loaded > self.max_age_s:
                self._refresh(now)  # in the background: this token goes on with the key
            return found
        if self._fetch is None and now - self._fetched < self.min_refresh_s:
            return None  # fetched a moment ago and it was not there: not worth asking again
        fetch = self._refresh(now)
        if fetch is not None:
            await asyncio.shield(fetch)
        return self._keys.get(kid)

    def _refresh(self, now: float) -> asyncio.Task[None] | None:
        if self._fetch is None:
            if now - self._fetched < self.min_refresh_s and self._keys:
                return None
            self._fetched = now
            self._fetch = asyncio.create_task(self._load(), name="mcp-jwks-fetch")
        return self._fetch

    async def _load(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as http:
                response = await http.get(self.url)
                response.raise_for_status()
                self._keys = _parse(response.json())
                self._loaded = time.monotonic()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("could not fetch the JWKS at %s: %s", self.url, exc)
        finally:
            self._fetch = None


def _parse(document: Any) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS document, by key id (others are skipped)."""
    keys: dict[str, jwt.PyJWK] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        if isinstance(kid, str):
            keys[kid] = key
    if not keys and entries:
        raise ValueError("no usable signing key in the key set")
    return keys
