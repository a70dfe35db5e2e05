"""Structured logs: one JSON line per request and per task transition, in the bridge and in
the worker, carrying the session, task and Celery ids, and no secrets."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_celery_bridge.bridge.shared import logs
from tests.client import RpcError, connect
from tests.inproc import AppServer
from tests.services import Process

# The plain functions below run synchronously; anyio only picks up the async ones.
pytestmark = pytest.mark.anyio


def _entries(log: Path) -> list[dict[str, Any]]:
    found = []
    # The process may be writing its last line right now: read only finished lines.
    for line in log.read_text(errors="replace").split("\n")[:-1]:
        if line.startswith("{"):
            found.append(json.loads(line))  # every line the process wrote is one object
    return found


@pytest.mark.fast
def test_json_lines_carry_fields_and_exceptions() -> None:
    record = logging.LogRecord("bridge.x", logging.WARNING, __file__, 1, "hi %s", ("you",), None)
    record.fields = {"task": "t1", "session": "s1"}
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["message"] == "hi you" and entry["level"] == "warning"
    assert entry["logger"] == "bridge.x" and entry["task"] == "t1" and entry["session"] == "s1"
    assert entry["time"].endswith("Z")

    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    entry = json.loads(logs.JsonFormatter().format(record))
    assert "ValueError: boom" in entry["exception"]


@pytest.mark.fast
def test_text_lines_for_a_terminal() -> None:
    record = logging.LogRecord("bridge.x", logging.INFO, __file__, 1, "done", (), None)
    record.fields = {"task": "t1", "message": "two words"}
    line = logs.TextFormatter().format(record)
    assert line.endswith('done  task=t1 message="two words"')


@pytest.mark.fast
def test_auto_format_follows_the_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(logs.formatter("auto", Tty()), logs.TextFormatter)
    assert isinstance(logs.formatter("auto", io.StringIO()), logs.JsonFormatter)
    assert isinstance(logs.formatter("json", Tty()), logs.JsonFormatter)


@pytest.mark.fast
def test_owner_fields() -> None:
    assert logs.owner_fields("principal:alice") == {"principal": "alice"}
    assert logs.owner_fields("session:abc") == {"session": "abc"}
    assert logs.owner_fields("") == {}


@pytest.mark.timeout(60)
async def test_one_line_per_request_and_per_transition(
    bridge: str, worker: Process, log_dir: Path
) -> None:
    async with connect(bridge) as client:
        task = await client.create_task("echo", {"text": "logged"})
        result = await client.call("tasks/result", {"taskId": task["taskId"]})
        assert result["content"][0]["text"] == "logged"
        session = client.session_id
    task_id = task["taskId"]
    bridge_log, worker_log = log_dir / "bridge-a.log", Path(worker.log)

    def lines() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return _entries(bridge_log), _entries(worker_log)

    with anyio.fail_after(10):
        while not any(
            e.get("task") == task_id and e.get("status") == "completed" for e in lines()[1]
        ):
            await anyio.sleep(0.05)
    in_bridge, in_worker = lines()

    requests = [e for e in in_bridge if e["logger"] == "bridge.requests"]
    create = next(e for e in requests if e.get("rpc") == "tools/call" and e.get("task") == task_id)
    assert create["session"] == session and create["status"] == 200 and create["http"] == "POST"
    assert create["era"] == "legacy" and isinstance(create["ms"], float)
    celery_id = create["celery_id"]
    assert any(e.get("rpc") == "tasks/result" and e.get("task") == task_id for e in requests)
    assert any(e.get("rpc") == "initialize" and e.get("session") == session for e in requests)

    moves = [
        e
        for e in in_bridge + in_worker
        if e["logger"] == "bridge.transitions" and e["task"] == task_id
    ]
    assert [e["status"] for e in moves] == ["working", "working", "completed"], moves
    assert moves[0]["message"] == f"task {task_id} working: queued"
    assert moves[1]["message"].startswith(f"task {task_id} working: running on main@")
    assert moves[1]["run"] == 1
    for entry in moves:
        assert entry["celery_id"] == celery_id and entry["session"] == session
        assert entry["tool"] == "echo"


async def test_errors_are_annotated(fast_bridge: str, inproc: AppServer) -> None:
    async with connect(fast_bridge) as client:
        with pytest.raises(RpcError):
            await client.call("tasks/get", {"taskId": "no-such-task"})
    with anyio.fail_after(5):
        while True:
            failed = [
                e
                for e in _entries(inproc.log)
                if e.get("rpc") == "tasks/get" and e.get("task") == "no-such-task"
            ]
            if failed:
                break
            await anyio.sleep(0.05)
    assert failed[0]["error"] == -32602 and failed[0]["status"] == 200


@pytest.mark.fast
def test_request_fields_from_the_client_are_bounded() -> None:
    line = logs.begin_request(http="POST")
    logs.annotate(rpc="x" * 10_000, id=7, session=None)
    assert line == {"http": "POST", "rpc": "x" * logs.FIELD_MAX, "id": 7}


@pytest.mark.fast
def test_a_newline_in_a_message_does_not_forge_a_text_line() -> None:
    record = logging.LogRecord(
        "bridge.requests", logging.INFO, __file__, 1, "POST %s 200", ("x\nFAKE line",), None
    )
    assert "\n" not in logs.TextFormatter().format(record)


@pytest.mark.fast
def test_celery_extras_and_return_values_stay_out() -> None:
    # What celery.app.trace logs for a success: the context (with the arguments and the
    # return value) both as the format's arguments and as ``extra={"data": ...}``.
    context = {"id": "c1", "name": "mcp.echo", "return_value": "SECRET", "runtime": 0.1}
    record = logging.LogRecord(
        "celery.app.trace",
        logging.INFO,
        __file__,
        1,
        "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
        (context,),
        None,
    )
    record.data = {"kwargs": {"password": "SECRET"}}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.no_results)
    handler.handle(record)
    assert "SECRET" not in stream.getvalue()
    assert json.loads(stream.getvalue())["message"].endswith("(result not logged)")


@pytest.mark.timeout(60)
async def test_progress_reports_are_not_transitions(
    bridge: str, worker: Process, log_dir: Path
) -> None:
    async with connect(bridge) as client:
        task = await client.create_task("sleep", {"seconds": 0.3, "steps": 3})
        await client.call("tasks/result", {"taskId": task["taskId"]})

    def moves() -> list[str]:
        return [
            e["message"].split(": ", 1)[1]
            for e in _entries(Path(worker.log)) + _entries(log_dir / "bridge-a.log")
            if e["logger"] == "bridge.transitions" and e.get("task") == task["taskId"]
        ]

    with anyio.fail_after(10):
        while "completed" not in moves():
            await anyio.sleep(0.05)
    # Queued, running, completed: the three "step i/3" reports changed no status.
    seen = moves()
    assert len(seen) == 3 and {"queued", "completed"} < set(seen), seen
    assert any(m.startswith("running on ") for m in seen), seen


@pytest.mark.timeout(60)
def test_a_worker_in_json_mode_starts_with_json_lines_only(worker: Process) -> None:
    # Off a terminal the worker logs JSON: Celery's banner (stdout) becomes one line with its
    # facts, and its warnings (running as root, say) are lines too, not bare text.
    text = worker.output()
    assert "ready." in text
    startup = text[: text.index("ready.")].rsplit("\n", 1)[0].split("\n")
    plain = [line for line in startup if line.strip() and not line.startswith("{")]
    assert plain == [], plain
    entries = [json.loads(line) for line in startup if line.startswith("{")]
    (banner,) = [e for e in entries if e["logger"] == "mcp_celery_bridge.workers.app"]
    assert banner["message"].endswith("starting") and banner["pool"].endswith("prefork")
    assert "mcp.echo" in banner["tasks"] and banner["queues"]
    assert banner["broker"].startswith("redis://")
