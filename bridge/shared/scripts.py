"""The registry's Lua scripts (``bridge/shared/lua``) as Redis runs them, and what both views
of the registry (``bridge.shared.registry``, ``bridge.shared.sync_registry``) hand them:
the arguments of ``transition.lua`` and the log line of an applied change."""

from __future__ import annotations

import functools
import json
import logging
from importlib.resources import files
from typing import Any

from mcp_celery_bridge.bridge.shared import logs
from mcp_celery_bridge.bridge.shared.keys import Keys
from mcp_celery_bridge.bridge.shared.records import Outcome, TaskStatus
from mcp_celery_bridge.bridge.shared.schema import lua_prelude
from mcp_celery_bridge.bridge.shared.settings import Settings


@functools.cache
def source(name: str) -> str:
    """The text of script ``name`` as it is loaded into Redis: the schema's Lua prelude,
    then the script."""
    return (
        lua_prelude()
        + files("mcp_celery_bridge.bridge.shared").joinpath("lua", f"{name}.lua").read_text()
    )


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def logged(task_id: str, outcome: Outcome, message: str, level: int = logging.INFO) -> Outcome:
    # Every status change goes through the scripts, so it is logged here, once, by the
    # process that made it (``bridge.transitions``).
    if outcome.applied and outcome.status is not None:
        logs.transition(
            task_id,
            outcome.status,
            message,
            owner=outcome.owner,
            celery_id=outcome.celery_id,
            tool=outcome.tool,
            level=level,
        )
    return outcome


def transition_args(
    settings: Settings,
    keys: Keys,
    task_id: str,
    owner: str,
    status: TaskStatus,
    message: str,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    worker: str = "",
    only_if_changed: bool = False,
    progress: tuple[float, float | None] | None = None,
    input_request: tuple[str, dict[str, Any]] | None = None,
    lease_of: str = "",
    withdraw: str = "",
) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of transition.lua (its header says what each one is)."""
    return (
        [
            keys.task(task_id),
            keys.events(owner),
            keys.inputs(task_id),
            keys.usage(owner),
            keys.usage_expiry(owner),
            keys.leases_of(task_id),
            keys.running(owner),
            keys.asking(owner),
        ],
        [
            status.value,
            message,
            compact(result) if result is not None else "",
            compact(error) if error is not None else "",
            worker,
            settings.stream_maxlen,
            settings.session_ttl_s * 1000,
            keys.owner_channel(owner),
            "1" if only_if_changed else "0",
            repr(float(progress[0])) if progress is not None else "",
            repr(float(progress[1])) if progress and progress[1] is not None else "",
            lease_of,
            input_request[0] if input_request else "",
            compact(input_request[1]) if input_request else "",
            withdraw,
            settings.max_bytes_per_owner,
            owner,
            keys.publish,
        ],
    )
