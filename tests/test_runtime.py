"""A worker process reads its settings once, on first use, unless a runner hands its own
(``workers.runtime``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.bridge.shared.sync_registry import SyncRegistry
from mcp_celery_bridge.workers import runtime

pytestmark = [pytest.mark.fast, pytest.mark.timeout(60)]


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Unconfigured for the test; afterwards as before (the in-process runner of the fast
    # tier configured this process for the whole run).
    monkeypatch.setattr(runtime, "_settings", None)
    monkeypatch.setattr(runtime, "_store", None)
    yield


def test_settings_are_read_once_per_process(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_BRIDGE_KEY_PREFIX", "first")
    first = runtime.settings()
    monkeypatch.setenv("MCP_BRIDGE_KEY_PREFIX", "second")
    assert runtime.settings() is first and first.key_prefix == "first"
    store = runtime.registry()
    assert isinstance(store, SyncRegistry) and store.settings is first
    assert runtime.registry() is store


def test_a_runner_hands_its_own_settings(fresh: None) -> None:
    mine = Settings(key_prefix="inline")
    runtime.configure(mine)
    assert runtime.settings() is mine
    store = runtime.registry()
    assert isinstance(store, SyncRegistry) and store.keys.prefix == "inline"
    handed = SyncRegistry(mine, store.redis)
    runtime.configure(mine, handed)
    assert runtime.registry() is handed


def test_importing_the_worker_side_reads_no_settings() -> None:
    # A setting that cannot be parsed: reading the settings would fail the import.
    code = (
        "import json, workers, workers.examples, workers.signals\n"
        "from workers import runtime\n"
        "print(json.dumps([runtime._settings is None, runtime._store is None]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={"MCP_BRIDGE_LEASE_S": "not a number", "PATH": ""},
    ).stdout
    assert json.loads(out) == [True, True]
