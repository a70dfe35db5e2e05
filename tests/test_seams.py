"""The seams of the request path (issue 16), checked without services: the catalogue holds
only the tools of its modules, the transport imports no era, every era is registered with
its versions, and one mapping turns exceptions into answers."""

from __future__ import annotations

import ast
import json
import logging
import uuid
from pathlib import Path

import pytest

from mcp_celery_bridge.bridge import eras
from mcp_celery_bridge.bridge.catalogue import Catalogue
from mcp_celery_bridge.bridge.eras.legacy import answered_in_band
from mcp_celery_bridge.bridge.eras.modern import http_status
from mcp_celery_bridge.bridge.faults import Answering, fault_response, transport_status
from mcp_celery_bridge.bridge.shared.errors import (
    HeaderMismatch,
    InvalidMeta,
    InvalidParams,
    MethodNotFound,
    StoreUnavailable,
    Unauthorized,
)
from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.workers.tools import catalogue, tool

pytestmark = [pytest.mark.fast, pytest.mark.timeout(30)]
BRIDGE = Path(__file__).resolve().parent.parent / "bridge"


def test_the_catalogue_holds_only_its_modules_tools(caplog: pytest.LogCaptureFixture) -> None:
    name = f"stray_{uuid.uuid4().hex[:8]}"

    @tool(name=name)
    def stray() -> str:
        return "declared here, in no tool module"

    assert name in catalogue()  # imported in this process...
    with caplog.at_level(logging.WARNING, logger="mcp_celery_bridge.bridge.catalogue"):
        held = Catalogue.load(Settings(tool_modules=["mcp_celery_bridge.workers.examples"]))
    assert name not in held.names  # ...but no module of the settings declares it
    # A worker would run it, but no client can call it: the start says so, by name.
    [warning] = [
        r.getMessage() for r in caplog.records if r.name == "mcp_celery_bridge.bridge.catalogue"
    ]
    assert warning.startswith("tools not served (declared outside MCP_BRIDGE_TOOL_MODULES): ")
    assert name in warning.split(": ", 1)[1].split(", ")
    assert held.names[:2] == ["echo", "sleep"]  # declaration order
    assert held.get("echo") is catalogue()["echo"]


def test_the_transport_imports_no_era() -> None:
    tree = ast.parse((BRIDGE / "transport.py").read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not any(m.startswith("mcp_celery_bridge.bridge.eras.") for m in imported), imported


def test_the_eras_are_registered_with_their_versions() -> None:
    assert [era.versions[0] for era in eras.ERAS] == ["2026-07-28", "2025-11-25"]


def _answer(exc: BaseException, known: Answering) -> tuple[int, dict[str, object]]:
    response = fault_response(exc, known)
    return response.status_code, json.loads(bytes(response.body)) if response.body else {}


def test_one_mapping_from_exception_to_answer() -> None:
    status, body = _answer(Unauthorized("a bearer token is required"), Answering(7))
    assert status == 401 and "id" not in body  # a refusal names no request
    assert fault_response(Unauthorized("x"), Answering()).headers["www-authenticate"] == "Bearer"
    # Before an era answers in-band: the store is 503, a bug 500, never a traceback.
    status, body = _answer(StoreUnavailable("redis down"), Answering(3))
    assert status == 503 and body["id"] == 3
    assert body["error"] == {
        "code": -32603,
        "message": "Internal error: the task store is unavailable",
    }
    status, body = _answer(RuntimeError("a bug"), Answering())
    assert status == 500 and body["error"] == {"code": -32603, "message": "Internal error"}
    assert transport_status(KeyError()) == 500
    # The legacy era answers a handled request's error with 200, the modern one by class.
    assert _answer(MethodNotFound("x"), Answering(1, answered_in_band))[0] == 200
    modern = Answering(1, http_status)
    assert _answer(MethodNotFound("x"), modern)[0] == 404
    assert _answer(InvalidMeta("x"), modern)[0] == 400
    assert _answer(InvalidParams("x"), modern)[0] == 200
    assert _answer(HeaderMismatch("x"), modern)[0] == 400
