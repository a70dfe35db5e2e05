"""`mcp-celery-bridge call` on a terminal: a tool's questions are asked there (a form for
the requested schema), for a task and for a plain call; what it prints at the end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.services import ROOT
from tests.terminal import in_terminal


@pytest.mark.timeout(60)
def test_call_asks_the_tasks_question_on_the_terminal(bridge: str) -> None:
    with in_terminal(["call", "confirm", '{"question": "Ship it?"}', "--url", bridge]) as tty:
        tty.expect("? Ship it?")
        tty.expect("[y/n]")
        tty.type("y")
        assert tty.finish() == 0, tty.text()
    out = tty.text()
    assert "completed\r\n" in out  # the status once, not "completed: completed"
    assert out.rstrip().endswith("confirmed")


@pytest.mark.timeout(60)
def test_end_of_input_declines(bridge: str) -> None:
    with in_terminal(["call", "confirm", '{"question": "Delete all?"}', "--url", bridge]) as tty:
        tty.expect("[y/n]")
        tty.ctrl_d()
        tty.finish()
    assert "the user chose to decline" in tty.text()


@pytest.mark.timeout(60)
def test_a_plain_call_asks_on_the_terminal_too(bridge: str) -> None:
    args = ["call", "ask_once", '{"question": "Your name?"}', "--url", bridge, "--no-task"]
    with in_terminal(args) as tty:
        tty.expect("? Your name?")
        tty.expect("text:")
        tty.type("Ada")
        assert tty.finish() == 0, tty.text()
    assert tty.text().rstrip().endswith("accept: Ada")


@pytest.mark.timeout(60)
def test_the_stateless_era_asks_a_tasks_question_on_the_terminal(bridge: str) -> None:
    args = ["call", "confirm", '{"question": "Ship it?"}', "--url", bridge]
    with in_terminal([*args, "--protocol", "2026-07-28"]) as tty:
        tty.expect("? Ship it?")
        tty.expect("[y/n]")
        tty.type("y")
        assert tty.finish() == 0, tty.text()
    out = tty.text()
    assert "input_required" in out and "completed\r\n" in out
    assert out.rstrip().endswith("confirmed")


@pytest.mark.timeout(60)
def test_the_stateless_era_asks_a_plain_calls_question_on_the_terminal(bridge: str) -> None:
    args = ["call", "ask_once", '{"question": "Your name?"}', "--url", bridge, "--no-task"]
    with in_terminal([*args, "--protocol", "2026-07-28"]) as tty:
        tty.expect("? Your name?")
        tty.expect("text:")
        tty.type("Ada")
        assert tty.finish() == 0, tty.text()
    assert tty.text().rstrip().endswith("accept: Ada")


@pytest.mark.timeout(60)
def test_an_operator_cancel_ends_call_without_an_error(bridge: str, env: dict[str, str]) -> None:
    # A task cancelled by someone else: `call` says so once, and prints no error after it.
    with in_terminal(["call", "sleep", '{"seconds": 30}', "--url", bridge]) as tty:
        tty.expect("working: step")
        task_id = next(
            line.split()[1] for line in tty.text().splitlines() if line.startswith("task ")
        )
        subprocess.run(
            [sys.executable, "-m", "mcp_celery_bridge.bridge.cli", "tasks", "cancel", task_id],
            cwd=ROOT,
            check=True,
            capture_output=True,
            env={**os.environ, **env},
        )
        assert tty.finish() == 1
    out = tty.text()
    assert out.rstrip().splitlines()[-1].startswith("cancelled")
    assert "-32603" not in out
