"""Deployments sharing one Redis: two on different databases of it, with the same key prefix,
never hear each other's events (Redis pub/sub ignores the database number)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.client import RawClient, connect
from tests.inproc import AppServer, app_server, settings_of
from tests.services import RedisServer, eventually
from tests.test_metrics import _samples

pytestmark = [pytest.mark.anyio, pytest.mark.fast]

LAG = "mcp_bridge_notification_lag_seconds_count"


async def test_a_deployment_on_another_database_hears_none_of_the_events(
    inproc: AppServer, fast_env: dict[str, str], redis_server: RedisServer, log_dir: Path
) -> None:
    ours = settings_of(fast_env)
    assert ours.redis_database == 0
    # The same key prefix, so the same channel name but for the database.
    other = ours.model_copy(update={"redis_url": redis_server.database(5)})
    assert other.redis_database == 5 and other.key_prefix == ours.key_prefix
    with app_server(other, log_dir / "other-database.log") as neighbour:

        def heard() -> float:
            return _samples(neighbour.url).get((LAG, ()), 0.0)

        async with connect(neighbour.url) as theirs, connect(inproc.url) as client:
            # What a cancel of its own makes the neighbour hear (nothing runs its tasks).
            start = heard()
            await cancel_one(theirs)
            per_cancel = await eventually(lambda: heard() - start, 10, "the neighbour's event")
            mine_before = _samples(inproc.url).get((LAG, ()), 0.0)
            created = await client.create_task("echo", {"text": "hello"})
            await client.wait_status(created["taskId"], {"completed"})
            await eventually(
                lambda: _samples(inproc.url).get((LAG, ()), 0.0) > mine_before, 10, "our events"
            )
            # Pub/sub delivers in publish order: once the neighbour heard a cancel of its own
            # made after our task ended, it would have heard our task's events before it.
            await cancel_one(theirs)
            await eventually(lambda: heard() >= start + 2 * per_cancel, 10, "its second event")
            assert heard() == start + 2 * per_cancel


async def cancel_one(client: RawClient) -> None:
    created = await client.create_task("echo", {"text": "never runs"})
    await client.call("tasks/cancel", {"taskId": created["taskId"]})
