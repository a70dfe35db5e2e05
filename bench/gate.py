"""A gate in Redis that benchmark tasks wait for: many tasks are created first, then the
gate opens and they all finish. Imports nothing of the bridge (the raw worker uses it)."""

from __future__ import annotations

import os
import time

import redis

_client: tuple[int, redis.Redis] | None = None


def gate_client(env: str) -> redis.Redis:
    """A Redis client of this process (made after a prefork fork, pid-checked), from the
    URL in the environment variable ``env``."""
    global _client
    if _client is None or _client[0] != os.getpid():
        url = os.environ.get(env, "redis://127.0.0.1:6379/9")
        _client = (os.getpid(), redis.Redis.from_url(url))
    return _client[1]


def wait_gate(client: redis.Redis, key: str) -> None:
    while not client.exists(key):
        time.sleep(0.01)
