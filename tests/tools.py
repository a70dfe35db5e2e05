"""Tools only the tests declare (loaded with MCP_BRIDGE_TOOL_MODULES)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

from pydantic import Field

from mcp_celery_bridge.workers.tools import tool


@tool(task_support="required")
def mark_after(seconds: float, path: str) -> str:
    """Write our pid to `path`.pid, busy-loop for `seconds`, then write `path` (the side
    effect a cancel must prevent)."""
    Path(path + ".pid").write_text(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    Path(path).write_text("done")
    return "marked"


@tool(task_support="forbidden")
def add(a: int, b: int) -> int:
    """Add two integers; never runs as a task."""
    return a + b


@tool(task_support="optional")
def structured(n: int) -> dict[str, int]:
    """Return a dict, which becomes structuredContent."""
    return {"n": n, "square": n * n}


@tool(task_support="optional")
def nap(seconds: float) -> str:
    """Sleep `seconds` in small steps, stopping when cancelled (an optional-task tool)."""
    from mcp_celery_bridge.workers.context import current

    ctx = current()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(0.05)
    return "rested"


@tool(task_support="optional")
def blob(size: int) -> str:
    """Return `size` characters."""
    return "x" * size


@tool(task_support="optional")
def tick(steps: int, seconds: float) -> str:
    """Report `steps` progress steps over `seconds` (an optional-task tool with progress)."""
    from mcp_celery_bridge.workers.context import current

    ctx = current()
    for done in range(1, steps + 1):
        time.sleep(seconds / steps)
        ctx.report_progress(done, steps, f"tick {done}/{steps}")
    return f"ticked {steps} times"


@tool(task_support="required")
def ask_two(first: str, second: str, timeout: float = 60.0, second_timeout: float = 60.0) -> str:
    """Ask `first` and `second` at once, from two threads, and return both answers; after
    each answer, report progress ("1 of 2 answered", then "2 of 2 answered")."""
    import threading

    from mcp_celery_bridge.workers.context import InputTimeout, current

    ctx = current()
    schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    answers: dict[str, str] = {}
    lock = threading.Lock()

    def ask(question: str, seconds: float) -> None:
        try:
            answer = ctx.ask(question, schema, timeout=seconds)
            text = str((answer.content or {}).get("text", answer.action))
        except InputTimeout:
            text = "no answer"
        with lock:
            answers[question] = text
            ctx.report_progress(len(answers), 2, f"{len(answers)} of 2 answered")

    threads = [
        threading.Thread(target=ask, args=(first, timeout)),
        threading.Thread(target=ask, args=(second, second_timeout)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return f"{first}={answers.get(first)}; {second}={answers.get(second)}"


@tool(task_support="optional")
def ask_once(question: str, timeout: float = 30.0) -> str:
    """Ask `question` (a text answer) and return the answer, or what happened instead."""
    from mcp_celery_bridge.workers.context import InputTimeout, InputUnavailable, current

    schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    try:
        answer = current().ask(question, schema, timeout=timeout)
    except InputUnavailable:
        return "nobody to ask"
    except InputTimeout:
        return "no answer"
    return f"{answer.action}: {(answer.content or {}).get('text', '')}"


@tool(task_support="optional")
def regional(
    region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})],
    shard: Annotated[int, Field(json_schema_extra={"x-mcp-header": "Shard"})] = 0,
) -> str:
    """Name the region and shard, which clients mirror into Mcp-Param-* headers."""
    return f"{region}/{shard}"


@tool(task_support="optional")
def total(values: list[float], weights: dict[str, float] | None = None) -> float:
    """Sum `values`, plus `weights`' values (nested numbers, for the finiteness check)."""
    return sum(values) + sum((weights or {}).values())


@tool(task_support="required")
def stubborn(seconds: float) -> str:
    """Busy-loop for `seconds`, ignoring the soft time limit (only the kill stops it)."""
    from celery.exceptions import SoftTimeLimitExceeded

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            while time.monotonic() < deadline:
                pass
        except SoftTimeLimitExceeded:
            continue
    return "outlasted"


@tool(task_support="required", time_limit=1.5)
def hurried(seconds: float) -> str:
    """Busy-loop for `seconds`; its own time limit is 1.5 s, whatever the setting says."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return "made it"


@tool(task_support="optional")
def ask_many(questions: list[str], together: bool = False, timeout: float = 30.0) -> str:
    """Ask each of `questions` (keys q0, q1, ...; a text answer each), one after the other,
    or all at once from as many threads when `together`; return the answers."""
    from concurrent.futures import ThreadPoolExecutor

    from mcp_celery_bridge.workers.context import InputTimeout, current

    ctx = current()
    schema = {"type": "object", "properties": {"text": {"type": "string"}}}

    def ask(numbered: tuple[int, str]) -> str:
        try:
            answer = ctx.ask(numbered[1], schema, timeout=timeout, key=f"q{numbered[0]}")
        except InputTimeout:
            return "no answer"
        return str((answer.content or {}).get("text", answer.action))

    if together:
        with ThreadPoolExecutor(len(questions)) as pool:
            answers = list(pool.map(ask, enumerate(questions)))
    else:
        answers = [ask(numbered) for numbered in enumerate(questions)]
    return "; ".join(answers)
