"""JWT authentication under attack: the audience is required, every token failure is a 401
(never a 500), and tokens naming unknown keys neither hammer the identity provider nor hold
up valid tokens while it is slow."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mcp_celery_bridge.bridge.auth import Authenticator
from mcp_celery_bridge.bridge.shared.settings import Settings
from tests.jwks import Provider, publishing
from tests.services import ROOT, Process, bridge_server, free_port

pytestmark = pytest.mark.anyio

AUDIENCE = "mcp-bridge-jwt-tests"
REFRESH_S = 0.3


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def provider(rsa_key: rsa.RSAPrivateKey) -> Iterator[str]:
    with publishing(rsa_key, kid="rsa-1") as url:
        yield url


@pytest.fixture(scope="module")
def jwks_bridge(
    env: dict[str, str], log_dir: Path, worker: Process, provider: str
) -> Iterator[str]:
    settings = {
        **env,
        "MCP_BRIDGE_JWT_JWKS_URL": provider,
        "MCP_BRIDGE_JWT_AUDIENCE": AUDIENCE,
        # Short, so the test reaches the moment a refetch is allowed again.
        "MCP_BRIDGE_JWT_JWKS_REFRESH_S": str(REFRESH_S),
    }
    with bridge_server(settings, log_dir, "bridge-jwks") as url:
        yield url


def _claims(**override: Any) -> dict[str, Any]:
    return {"sub": "erin", "aud": AUDIENCE, "exp": int(time.time()) + 300, **override}


def _hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """A token HMAC-signed with any bytes (PyJWT refuses to sign with a PEM itself)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(secret, header + b"." + body, hashlib.sha256).digest())
    return (header + b"." + body + b"." + signature).decode()


async def _ping(http: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    return await http.post(
        url,
        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
    )


async def test_every_bad_token_is_a_401(jwks_bridge: str, rsa_key: rsa.RSAPrivateKey) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bad = {
        # An algorithm other than the key's, naming the published RSA key.
        "hs256 naming the rsa kid": jwt.encode(
            _claims(), "x" * 32, algorithm="HS256", headers={"kid": "rsa-1"}
        ),
        # The classic key confusion: the public key as an HMAC secret.
        "hs256 signed with the public pem": _hs256(_claims(), public_pem, "rsa-1"),
        "es256 naming the rsa kid": jwt.encode(
            _claims(), ec_key, algorithm="ES256", headers={"kid": "rsa-1"}
        ),
        "no audience": jwt.encode(
            {k: v for k, v in _claims().items() if k != "aud"},
            rsa_key,
            algorithm="RS256",
            headers={"kid": "rsa-1"},
        ),
        "alg none": jwt.encode(_claims(), None, algorithm="none", headers={"kid": "rsa-1"}),
        "not a jwt": "a.b.c",
        "garbage header": "eyJhbGciOi.e30.e30",
    }
    async with httpx.AsyncClient(timeout=30) as http:
        good = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
        assert (await _ping(http, jwks_bridge, good)).status_code == 200
        for why, token in bad.items():
            response = await _ping(http, jwks_bridge, token)
            assert response.status_code == 401, (why, response.status_code, response.text)
            assert response.json()["error"]["code"] == -32600, why


@pytest.mark.timeout(60)
async def test_unknown_key_ids_neither_flood_the_provider_nor_hold_up_valid_tokens(
    jwks_bridge: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    good = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})

    def forged() -> str:
        return jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": uuid.uuid4().hex})

    async with httpx.AsyncClient(timeout=30) as http:
        assert (await _ping(http, jwks_bridge, good)).status_code == 200  # the keys are known
        allowed = time.monotonic() + REFRESH_S
        while time.monotonic() < allowed:  # until a refetch is allowed again
            await anyio.sleep(0.05)
        before = Provider.fetches
        Provider.open.clear()  # the provider hangs from now on
        hung = time.monotonic()
        try:
            answers: list[int] = []
            async with anyio.create_task_group() as tg:

                async def attack() -> None:
                    answers.append((await _ping(http, jwks_bridge, forged())).status_code)

                for _ in range(50):
                    tg.start_soon(attack)
                with anyio.fail_after(10):
                    # Until an attacker reached the provider (which hangs), or all were
                    # answered without it.
                    while Provider.fetches == before and len(answers) < 50:
                        await anyio.sleep(0.02)
                # Whatever the attackers caused, a valid token is answered while the
                # provider still hangs.
                with anyio.fail_after(10):
                    assert (await _ping(http, jwks_bridge, good)).status_code == 200
                assert not Provider.open.is_set()
                # One refetch for fifty unknown key ids while it hangs: one at a time, the
                # next only after the hung one gave up (its 5 s timeout, which a loaded
                # machine may reach). Once it answers, an attacker delayed past the refresh
                # interval may cause one more, as it should: fetches are only spaced.
                during = Provider.fetches - before
                allowed_fetches = 1 + int((time.monotonic() - hung) // 5)
                Provider.open.set()
        finally:
            Provider.open.set()
        assert answers == [401] * 50
        assert during <= allowed_fetches, (during, allowed_fetches)


def test_jwt_mode_refuses_to_start_without_an_audience(env: dict[str, str]) -> None:
    settings = {**env, "MCP_BRIDGE_JWT_KEY": "a-secret-of-enough-length-for-hs256!!"}
    with pytest.raises(ValueError, match="AUDIENCE"):
        Authenticator(Settings(jwt_key=settings["MCP_BRIDGE_JWT_KEY"]))
    result = subprocess.run(
        [sys.executable, "-m", "mcp_celery_bridge.bridge.cli", "serve", "--port", str(free_port())],
        cwd=ROOT,
        env={**env, **settings, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "refusing JWT authentication without an audience" in result.stderr
