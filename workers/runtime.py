"""Per-process state of a worker: settings and the registry client.

Prefork children inherit the parent's memory, so a Redis connection made before the fork
would be shared. The client is made on first use in each process (pid-checked)."""

from __future__ import annotations

import os

from bridge.shared.clients import sync_client
from bridge.shared.settings import Settings
from bridge.shared.sync_registry import SyncRegistry

_state: tuple[int, SyncRegistry] | None = None


def registry() -> SyncRegistry:
    global _state
    pid = os.getpid()
    if _state is None or _state[0] != pid:
        settings = Settings()
        _state = (pid, SyncRegistry(settings, sync_client(settings.redis_url)))
    return _state[1]
