"""`mcp-celery-bridge call` on a terminal: a tool's questions are asked there (a form for
the requested schema), for a task and for a plain call; what it prints at the end."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.services import ROOT


@dataclass
class Terminal:
    """A process on a pseudo-terminal, and everything it printed so far."""

    proc: subprocess.Popen[bytes]
    fd: int
    seen: bytearray = field(default_factory=bytearray)

    def expect(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} in: {self.seen.decode(errors='replace')}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the other side closed: the process ended
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"ended without {text!r}: {self.seen.decode()}")
                self.seen += chunk

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def finish(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        with contextlib.suppress(OSError):
            while chunk := os.read(self.fd, 4096):
                self.seen += chunk
        return code


@contextlib.contextmanager
def terminal(args: list[str]) -> Iterator[Terminal]:
    parent, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", *args],
        cwd=ROOT,
        stdin=child,
        stdout=child,
        stderr=child,
        start_new_session=True,
    )
    os.close(child)
    try:
        yield Terminal(proc, parent)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(parent)


@pytest.mark.timeout(60)
def test_call_asks_the_tasks_question_on_the_terminal(bridge: str) -> None:
    with terminal(["call", "confirm", '{"question": "Ship it?"}', "--url", bridge]) as tty:
        tty.expect("? Ship it?")
        tty.expect("[y/n]")
        tty.type("y")
        assert tty.finish() == 0, tty.seen.decode()
    out = tty.seen.decode()
    assert "completed\r\n" in out  # the status once, not "completed: completed"
    assert out.rstrip().endswith("confirmed")


@pytest.mark.timeout(60)
def test_end_of_input_declines(bridge: str) -> None:
    with terminal(["call", "confirm", '{"question": "Delete all?"}', "--url", bridge]) as tty:
        tty.expect("[y/n]")
        os.write(tty.fd, b"\x04")  # Ctrl-D
        tty.finish()
    assert "the user chose to decline" in tty.seen.decode()


@pytest.mark.timeout(60)
def test_a_plain_call_asks_on_the_terminal_too(bridge: str) -> None:
    args = ["call", "ask_once", '{"question": "Your name?"}', "--url", bridge, "--no-task"]
    with terminal(args) as tty:
        tty.expect("? Your name?")
        tty.expect("text:")
        tty.type("Ada")
        assert tty.finish() == 0, tty.seen.decode()
    assert tty.seen.decode().rstrip().endswith("accept: Ada")


@pytest.mark.timeout(60)
def test_an_operator_cancel_ends_call_without_an_error(bridge: str, env: dict[str, str]) -> None:
    # A task cancelled by someone else: `call` says so once, and prints no error after it.
    with terminal(["call", "sleep", '{"seconds": 30}', "--url", bridge]) as tty:
        tty.expect("working: step")
        task_id = next(
            line.split()[1] for line in tty.seen.decode().splitlines() if line.startswith("task ")
        )
        subprocess.run(
            [sys.executable, "-m", "bridge.cli", "tasks", "cancel", task_id],
            cwd=ROOT,
            check=True,
            capture_output=True,
            env={**os.environ, **env},
        )
        assert tty.finish() == 1
    out = tty.seen.decode()
    assert out.rstrip().splitlines()[-1].startswith("cancelled")
    assert "-32603" not in out
