"""Seed the task registry directly with the bridge's own ``Registry.create`` (no HTTP, no
Celery: the tasks are never run). ``python -m bench.seed OWNER COUNT`` with the bridge's
``MCP_BRIDGE_*`` environment; the listing scenario calls ``seed_owner``."""

from __future__ import annotations

import asyncio
import secrets
import sys
import uuid

from mcp_celery_bridge.bridge.shared.clients import async_client
from mcp_celery_bridge.bridge.shared.registry import Registry
from mcp_celery_bridge.bridge.shared.settings import Settings

#: Creates in flight at once.
CONCURRENCY = 64


def seed_settings() -> Settings:
    """The bridge's settings, with its per-owner creation limits (where this version of
    the bridge has them) lifted: seeded tasks stay ``working`` and are made in bulk."""
    lifted = {"max_inflight_per_owner": 10**9, "max_creates_per_minute": 10**9}
    fields = Settings.model_fields
    return Settings(**{k: v for k, v in lifted.items() if k in fields})  # type: ignore[arg-type]


async def seed_owner(owner: str, count: int, ttl_ms: int = 3_600_000) -> list[str]:
    """Create ``count`` working tasks of ``owner``, in order; their ids."""
    settings = seed_settings()
    client = async_client(settings.redis_url)
    registry = Registry(settings, client)
    ids = [secrets.token_urlsafe(24) for _ in range(count)]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for task_id in ids:
        queue.put_nowait(task_id)

    async def worker() -> None:
        while not queue.empty():
            task_id = queue.get_nowait()
            await registry.create(
                task_id=task_id,
                owner=owner,
                tool="echo",
                celery_id=str(uuid.uuid4()),
                ttl_ms=ttl_ms,
                message="queued",
            )

    try:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    finally:
        await client.aclose()
    return ids


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m bench.seed OWNER COUNT")
    ids = asyncio.run(seed_owner(argv[0], int(argv[1])))
    print(f"seeded {len(ids)} tasks for {argv[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
