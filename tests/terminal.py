"""A ``mcp-celery-bridge`` command on a pseudo-terminal of its own, as a person at a shell
would run it: what it printed so far, typing a line, Ctrl-C and Ctrl-D."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.services import ROOT, wait_for

# Makes the terminal given as stdin the controlling terminal of the new session, then runs
# the command: the terminal's Ctrl-C then reaches that process's group, as in a shell.
_WITH_TERMINAL = """\
import fcntl, os, sys, termios
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
os.execv(sys.argv[1], sys.argv[1:])
"""


@dataclass
class Terminal:
    """The command's process and the terminal's side we hold (``fd``); a thread reads
    everything the command prints into ``output``."""

    popen: subprocess.Popen[bytes]
    fd: int
    output: bytearray = field(default_factory=bytearray)
    _reader: threading.Thread = field(init=False)

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def expect(self, text: str, timeout: float = 30) -> None:
        def printed() -> bool:
            if text in self.text():
                return True
            if self.popen.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"ended without {text!r}: {self.text()}")
            return False

        wait_for(printed, timeout, f"{text!r} in: {self.text()}", every=0.02)

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def ctrl_c(self) -> None:
        os.write(self.fd, b"\x03")

    def ctrl_d(self) -> None:
        os.write(self.fd, b"\x04")

    def finish(self, timeout: float = 30) -> int:
        """The command's exit status, once it and its output have ended."""
        code = self.popen.wait(timeout)
        self._reader.join(timeout=5)
        return code

    def _read(self) -> None:
        with contextlib.suppress(OSError):  # EIO once the last process left the terminal
            while chunk := os.read(self.fd, 65536):
                self.output += chunk

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


@contextlib.contextmanager
def in_terminal(args: list[str], env: dict[str, str] | None = None) -> Iterator[Terminal]:
    """``mcp-celery-bridge ARGS`` with a new terminal as its controlling terminal; killed
    (its whole process group) if still running at the end."""
    parent, child = os.openpty()
    popen = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _WITH_TERMINAL,
            sys.executable,
            "-m",
            "mcp_celery_bridge.bridge.cli",
            *args,
        ],
        cwd=ROOT,
        env=env,
        stdin=child,
        stdout=child,
        stderr=child,
        start_new_session=True,
    )
    os.close(child)
    terminal = Terminal(popen, parent)
    try:
        yield terminal
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
        terminal._reader.join(timeout=5)
        os.close(parent)
