"""The package boundary: a worker imports ``workers`` and ``bridge.shared``, never the HTTP
side of the bridge; and nothing of ours is imported under the short names ``bridge`` or
``workers``, which belong to the project (issue 12, item 6)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

HTTP_SIDE = ("starlette", "sse_starlette", "uvicorn", "httpx")


def _imported(*modules: str) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return list(json.loads(out))


def test_a_worker_imports_no_http_server_and_only_the_shared_bridge() -> None:
    loaded = _imported(
        "mcp_celery_bridge.workers.app",
        "mcp_celery_bridge.workers.signals",
        "mcp_celery_bridge.workers.examples",
    )
    assert [m for m in loaded if m.split(".")[0] in HTTP_SIDE] == []
    bridge = [
        m
        for m in loaded
        if m == "mcp_celery_bridge.bridge" or m.startswith("mcp_celery_bridge.bridge.")
    ]
    assert bridge and all(
        m in ("mcp_celery_bridge.bridge", "mcp_celery_bridge.bridge.shared")
        or m.startswith("mcp_celery_bridge.bridge.shared.")
        for m in bridge
    ), bridge


def test_the_shared_package_stands_alone() -> None:
    loaded = _imported(
        "mcp_celery_bridge.bridge.shared.registry",
        "mcp_celery_bridge.bridge.shared.settings",
        "mcp_celery_bridge.bridge.shared.logs",
    )
    outside = [
        m
        for m in loaded
        if m.startswith("mcp_celery_bridge.bridge.")
        and not m.startswith("mcp_celery_bridge.bridge.shared")
    ]
    assert outside == []
    assert "celery" not in loaded


def test_nothing_is_imported_under_the_short_names() -> None:
    loaded = _imported(
        "mcp_celery_bridge.bridge.app",
        "mcp_celery_bridge.bridge.cli",
        "mcp_celery_bridge.workers.app",
        "mcp_celery_bridge.workers.integration",
        "mcp_celery_bridge.workers.examples",
    )
    assert [m for m in loaded if m.split(".")[0] in ("bridge", "workers")] == []
