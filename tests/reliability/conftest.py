"""Fixtures of the fault tests: an environment of their own per test (key prefix and queue, so
no other worker takes their tasks). The ``figure`` fixture, which prints what a test measured
at the end of the run, is in ``tests/conftest.py``: the process that prints the summary (the
xdist controller) loads that one."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def own_env(env: dict[str, str]) -> dict[str, str]:
    run = uuid.uuid4().hex[:6]
    return {
        **env,
        "MCP_BRIDGE_KEY_PREFIX": f"{env['MCP_BRIDGE_KEY_PREFIX']}-{run}",
        "MCP_BRIDGE_QUEUE": f"{env['MCP_BRIDGE_QUEUE']}-{run}",
    }
