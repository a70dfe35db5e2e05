"""Per-process state of a worker: its settings and its store client.

The settings are read from the environment once per process, on first use: importing a tool
module (or ``workers``) reads nothing. A runner that runs tools in its own process (the
tests' in-process tier, say) hands its own instead, before any tool runs::

    runtime.configure(Settings(redis_url=..., key_prefix=...))

Prefork children inherit the parent's memory, so a Redis connection made before the fork
would be shared: the registry client is made on first use in each process (pid-checked).
"""

from __future__ import annotations

import os

from mcp_celery_bridge.bridge.shared.clients import sync_client
from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.bridge.shared.store import WorkerStore
from mcp_celery_bridge.bridge.shared.sync_registry import SyncRegistry

_settings: Settings | None = None
#: (pid that made it, the store), or a handed store (pid None), used in any process.
_store: tuple[int | None, WorkerStore] | None = None


def configure(settings: Settings | None, store: WorkerStore | None = None) -> None:
    """Use ``settings`` in this process from now on (None: read the environment again on
    next use), and ``store`` as the registry (None: a Redis registry made from the settings
    on next use)."""
    global _settings, _store
    _settings = settings
    _store = (None, store) if store is not None else None


def settings() -> Settings:
    """This process's settings."""
    global _settings
    if _settings is None:
        _settings = Settings()
    return _settings


def registry() -> WorkerStore:
    """This process's view of the task registry."""
    global _store
    pid = os.getpid()
    if _store is None or _store[0] not in (None, pid):
        current = settings()
        client = sync_client(current.redis_url, patient=True, ca_file=current.redis_ca_file)
        _store = (pid, SyncRegistry(current, client))
    return _store[1]
