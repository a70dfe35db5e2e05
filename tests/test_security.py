"""Who may see what: bearer authentication (static tokens, JWTs with a key or a JWKS),
tasks bound to principals in both eras, the refusal to serve a non-loopback address
unauthenticated, and the audit trail. On in-process apps with these settings (the fast tier);
the refusal to serve is the command line's, in a process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.client import ModernClient, RpcError, connect
from tests.inline import InlineWorker
from tests.inproc import AsyncTransport, app_server, settings_of
from tests.jwks import publishing
from tests.services import ROOT, free_port

pytestmark = pytest.mark.anyio

HS_SECRET = "a-test-secret-of-enough-length-for-hs256"


async def test_requests_without_a_valid_token_are_401(
    token_bridge: str, http: httpx.AsyncClient
) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    for auth in (None, "Bearer nope", "Basic dG9rLWJvYjo=", "Bearer", "bearer tok-alice-1x"):
        sent = {**headers, **({"Authorization": auth} if auth else {})}
        response = await http.post(token_bridge, json=body, headers=sent)
        assert response.status_code == 401, auth
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["message"].startswith("Unauthorized")
    modern = ModernClient(token_bridge, http)
    status, _ = await modern.send(*modern.build("server/discover"))
    assert status == 401


async def test_tasks_belong_to_the_principal_across_sessions(token_bridge: str) -> None:
    async with (
        connect(token_bridge, token="tok-alice-1") as alice,
        connect(token_bridge, token="tok-alice-2") as alice_again,
        connect(token_bridge, token="tok-bob") as bob,
    ):
        task = await alice.create_task("echo", {"text": "mine"})
        # The same principal sees it from another session (and another token).
        assert (await alice_again.get_task(task["taskId"]))["taskId"] == task["taskId"]
        listed = {t["taskId"] for t in (await alice_again.call("tasks/list"))["tasks"]}
        assert task["taskId"] in listed
        # Another principal: exactly like a task that does not exist.
        for method in ("tasks/get", "tasks/result", "tasks/cancel"):
            with pytest.raises(RpcError) as err:
                await bob.call(method, {"taskId": task["taskId"]})
            with pytest.raises(RpcError) as unknown:
                await bob.call(method, {"taskId": "no-such-task-id"})
            assert err.value.code == unknown.value.code == -32602
            assert err.value.message.replace(task["taskId"], "X") == unknown.value.message.replace(
                "no-such-task-id", "X"
            )
        assert task["taskId"] not in {t["taskId"] for t in (await bob.call("tasks/list"))["tasks"]}

        # A session used with another principal's token is "not found".
        bob.session_id = alice.session_id
        response = await bob.post({"jsonrpc": "2.0", "id": 99, "method": "ping"})
        assert response.status_code == 404


async def test_modern_tasks_are_bound_to_the_principal(token_bridge: str) -> None:
    async with (
        httpx.AsyncClient(
            timeout=30, transport=AsyncTransport(), headers={"Authorization": "Bearer tok-alice-1"}
        ) as alice_http,
        httpx.AsyncClient(
            timeout=30, transport=AsyncTransport(), headers={"Authorization": "Bearer tok-bob"}
        ) as bob_http,
        httpx.AsyncClient(
            timeout=30, transport=AsyncTransport(), headers={"Authorization": "Bearer tok-alice-2"}
        ) as alice2_http,
    ):
        alice, bob = ModernClient(token_bridge, alice_http), ModernClient(token_bridge, bob_http)
        created = await alice.request(
            "tools/call", {"name": "sleep", "arguments": {"seconds": 0.1, "steps": 1}}
        )
        await ModernClient(token_bridge, alice2_http).wait_status(created["taskId"], {"completed"})
        for method, extra in (
            ("tasks/get", {}),
            ("tasks/cancel", {}),
            ("tasks/update", {"inputResponses": {}}),
        ):
            with pytest.raises(RpcError) as err:
                await bob.request(method, {"taskId": created["taskId"], **extra})
            assert err.value.code == -32602
        # The legacy view of the same principal sees it too.
        async with connect(token_bridge, token="tok-alice-1") as legacy_alice:
            assert (await legacy_alice.get_task(created["taskId"]))["status"] == "completed"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url(rsa_key: rsa.RSAPrivateKey) -> Iterator[str]:
    with publishing(rsa_key, kid="test-key", alg="RS256") as url:
        yield url


@pytest.fixture(scope="module")
def jwt_bridge(
    fast_env: dict[str, str], log_dir: Path, inline: InlineWorker, jwks_url: str
) -> Iterator[str]:
    settings = {
        **fast_env,
        "MCP_BRIDGE_JWT_JWKS_URL": jwks_url,
        "MCP_BRIDGE_JWT_ISSUER": "https://issuer.test",
        "MCP_BRIDGE_JWT_AUDIENCE": "mcp-bridge",
    }
    with app_server(settings_of(settings), log_dir / "bridge-jwt.log") as server:
        yield server.url


def _claims(**override: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "carol",
        "iss": "https://issuer.test",
        "aud": "mcp-bridge",
        "exp": now + 300,
        **override,
    }


async def test_jwts_are_verified_against_the_jwks(
    jwt_bridge: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    def sign(claims: dict[str, Any], key: Any = rsa_key) -> str:
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "test-key"})

    async with connect(jwt_bridge, token=sign(_claims())) as carol:
        task = await carol.create_task("echo", {"text": "signed"})
        assert (await carol.call("tasks/result", {"taskId": task["taskId"]}))["content"][0][
            "text"
        ] == "signed"

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = {
        "expired": sign(_claims(exp=int(time.time()) - 10)),
        "wrong audience": sign(_claims(aud="someone-else")),
        "wrong issuer": sign(_claims(iss="https://evil.test")),
        "no subject": sign({k: v for k, v in _claims().items() if k != "sub"}),
        "other key": sign(_claims(), other_key),
        "hs256 with the public key as secret": jwt.encode(_claims(), HS_SECRET, algorithm="HS256"),
    }
    async with httpx.AsyncClient(timeout=30, transport=AsyncTransport()) as http:
        for why, token in bad.items():
            response = await http.post(
                jwt_bridge,
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            assert response.status_code == 401, why


async def test_jwts_with_a_shared_secret(
    fast_env: dict[str, str], log_dir: Path, inline: InlineWorker
) -> None:
    settings = {
        **fast_env,
        "MCP_BRIDGE_JWT_KEY": HS_SECRET,
        "MCP_BRIDGE_JWT_ALGORITHMS": "HS256",
        "MCP_BRIDGE_JWT_AUDIENCE": "mcp-bridge",
    }
    with app_server(settings_of(settings), log_dir / "bridge-hs256.log") as server:
        url = server.url
        claims = {k: v for k, v in _claims(sub="dave").items() if k != "iss"}
        token = jwt.encode(claims, HS_SECRET, algorithm="HS256")
        async with connect(url, token=token) as dave:
            assert await dave.call("ping") == {}
        async with httpx.AsyncClient(timeout=30, transport=AsyncTransport()) as http:
            forged = jwt.encode(
                _claims(sub="dave"), "another-secret-of-enough-length!!", algorithm="HS256"
            )
            response = await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={"Authorization": f"Bearer {forged}", "Content-Type": "application/json"},
            )
            assert response.status_code == 401


def test_refuses_a_non_loopback_address_without_authentication(env: dict[str, str]) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcp_celery_bridge.bridge.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
        ],
        cwd=ROOT,
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "refusing to serve 0.0.0.0 without authentication" in result.stderr


async def test_the_audit_trail(token_bridge: str, log_dir: Path) -> None:
    async with (
        connect(token_bridge, token="tok-alice-1") as alice,
        connect(token_bridge, token="tok-bob") as bob,
    ):
        task = await alice.create_task("echo", {"text": "audited"})
        await alice.call("tasks/result", {"taskId": task["taskId"]})
        with pytest.raises(RpcError):
            await alice.call("tasks/cancel", {"taskId": task["taskId"]})
        with pytest.raises(RpcError):
            await bob.call("tasks/get", {"taskId": task["taskId"]})

    def entries() -> list[dict[str, Any]]:
        found = []
        for line in (log_dir / "bridge-tokens.log").read_text().splitlines():
            if "bridge.audit" in line:
                entry = json.loads(line[line.index("{") :])
                if entry.get("task") == task["taskId"]:
                    found.append(entry)
        return found

    with anyio.fail_after(5):
        while len(entries()) < 4:
            await anyio.sleep(0.05)
    by_event = {e["audit"]: e for e in entries()}
    assert set(by_event) == {"task.create", "task.result", "task.cancel", "task.lookup_failed"}
    assert (
        by_event["task.create"]["principal"] == "alice"
        and by_event["task.create"]["tool"] == "echo"
    )
    assert by_event["task.create"]["session"] == alice.session_id
    assert by_event["task.lookup_failed"]["principal"] == "bob"
    assert "tok-" not in (log_dir / "bridge-tokens.log").read_text(), "no secrets in logs"


async def test_deleting_a_session_ends_only_its_own_stream(token_bridge: str) -> None:
    async with (
        connect(token_bridge, token="tok-alice-1") as first,
        connect(token_bridge, token="tok-alice-2") as second,
    ):
        async with first.stream() as first_events, second.stream() as second_events:
            response = await first.http.delete(
                token_bridge, headers=first.headers(Accept="text/event-stream")
            )
            assert response.status_code == 200
            with anyio.fail_after(10):
                async for _ in first_events:
                    raise AssertionError("the deleted session's stream must end")
            # The principal's other session keeps its stream, and its tasks.
            task = await second.create_task("echo", {"text": "still here"})
            with anyio.fail_after(20):
                async for _, message in second_events:
                    params = message["params"]
                    if params["taskId"] == task["taskId"] and params["status"] == "completed":
                        break
