"""Fixtures of the fault tests: an environment of their own per test (key prefix and queue, so
no other worker takes their tasks), and the figures each test measured, printed at the end
of the run."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

#: "test name: figure" lines, printed in the terminal summary.
FIGURES: list[str] = []


@pytest.fixture
def own_env(env: dict[str, str]) -> dict[str, str]:
    run = uuid.uuid4().hex[:6]
    return {
        **env,
        "MCP_BRIDGE_KEY_PREFIX": f"{env['MCP_BRIDGE_KEY_PREFIX']}-{run}",
        "MCP_BRIDGE_QUEUE": f"{env['MCP_BRIDGE_QUEUE']}-{run}",
    }


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    def record(text: str) -> None:
        FIGURES.append(f"{request.node.name}: {text}")

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
