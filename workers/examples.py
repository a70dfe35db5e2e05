"""Demo tools, used by the README and the tests."""

from __future__ import annotations

import time

from mcp_celery_bridge.workers.context import current
from mcp_celery_bridge.workers.tools import tool


@tool(task_support="optional")
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@tool(task_support="required")
def sleep(seconds: float, steps: int = 10) -> str:
    """Sleep for `seconds` in `steps` steps, reporting progress; stops early when cancelled."""
    ctx = current()
    steps = max(1, steps)
    for done in range(1, steps + 1):
        ctx.check_cancelled()
        time.sleep(seconds / steps)
        ctx.report_progress(done, steps, f"step {done}/{steps}")
    return f"slept {seconds:g}s in {steps} steps"


@tool(task_support="required")
def spin(seconds: float) -> str:
    """Busy-loop the CPU for `seconds`; never checks for cancellation (terminate stops it)."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return f"spun {n} times in {seconds:g}s"


@tool(task_support="required")
def confirm(question: str, timeout: float = 120.0) -> str:
    """Ask the user `question` (yes or no) and return the answer."""
    answer = current().ask(
        question,
        {
            "type": "object",
            "properties": {"confirm": {"type": "boolean", "title": "Confirm?"}},
            "required": ["confirm"],
        },
        timeout=timeout,
    )
    if answer.action != "accept":
        return f"the user chose to {answer.action}"
    return "confirmed" if (answer.content or {}).get("confirm") else "not confirmed"


@tool(task_support="required")
def fail(message: str) -> str:
    """Raise an error with `message`."""
    raise RuntimeError(message)
