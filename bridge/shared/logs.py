"""Structured logs: one line per record, JSON when the output is not a terminal (so log
shippers parse it) and ``time level logger message key=value`` when it is.

Fields travel on a record as ``extra={"fields": {...}}``; :func:`fields` builds that from
keyword arguments and drops the ``None`` ones. Within an HTTP request, :func:`annotate` adds
fields (session, principal, JSON-RPC method, task id...) to the one ``request`` line the
transport writes at the end, whichever module learns them. Secrets never become fields: the
bridge logs who a caller is (principal, session), never the header that proved it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import Any, Literal

LogFormat = Literal["auto", "json", "text"]

#: Fields of the HTTP request being served, collected for its ``request`` line.
_request: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "mcp_bridge_request", default=None
)


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: ``log.info("...", extra=fields(task=..., status=...))``."""
    return {"fields": {k: v for k, v in values.items() if v is not None}}


def owner_fields(owner: str) -> dict[str, str]:
    """An owner key (``principal:<sub>`` or ``session:<id>``) as log fields."""
    kind, _, value = owner.partition(":")
    return {kind: value} if kind in ("principal", "session") and value else {}


def begin_request(**values: Any) -> dict[str, Any]:
    """Start collecting the fields of one request; returns the dict to log at its end."""
    collected = {k: v for k, v in values.items() if v is not None}
    _request.set(collected)
    return collected


#: Longest string a request field keeps: ids and methods come from the client, unchecked.
FIELD_MAX = 200


def annotate(**values: Any) -> None:
    """Add fields to the current request's log line (no-op outside a request)."""
    collected = _request.get()
    if collected is not None:
        collected.update(
            (k, v[:FIELD_MAX] if isinstance(v, str) else v)
            for k, v in values.items()
            if v is not None
        )


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every character a terminal or a log reader could act on escaped
    (``\\x1b``, ``\\n``, ``\\u2028``...): C0 and C1 controls (ESC starts the sequences that
    clear a screen or forge a link), line and paragraph separators, and invisible format
    characters (bidi overrides). Text from clients and tools reaches logs and the operator's
    tables through this."""
    if text.isprintable():
        return text  # the common case, checked in C
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in text)


#: Characters JSON leaves raw that a terminal or a reader of the line may act on.
_JSON_RAW = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    # Only what the bridge chose to log: other libraries' ``extra`` (Celery's carries a
    # task's arguments and return value) stays out.
    return dict(getattr(record, "fields", None) or {})


def no_results(record: logging.LogRecord) -> bool:
    """Celery's "succeeded in …: <return value>" line, without the return value: results
    can hold anything a tool returns, and the registry, not the log, keeps them."""
    if isinstance(record.args, dict) and "return_value" in record.args:
        record.args = {**record.args, "return_value": "(result not logged)"}
    return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extra(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))
        # Those characters can only sit inside JSON strings, where \\u escapes mean the same.
        return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # One record, one line (a traceback aside), and nothing a terminal acts on: a
        # client's method name or a tool's status message must not forge another line,
        # clear the screen or plant a link.
        record.message = printable(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        head, sep, tail = super().format(record).partition("\n")  # a traceback follows
        tail = "\n".join(printable(line) for line in tail.split("\n"))
        extra = _extra(record)
        if extra:
            head += "  " + " ".join(f"{k}={_text(v)}" for k, v in extra.items())
        return f"{head}{sep}{tail}"


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or any(c.isspace() for c in text):
        return printable(json.dumps(text, ensure_ascii=False))
    return printable(text)


def is_json(log_format: LogFormat, stream: Any = None) -> bool:
    """Whether lines go out as JSON: asked for, or "auto" off a terminal."""
    if log_format == "auto":
        isatty = getattr(stream if stream is not None else sys.stderr, "isatty", None)
        return not (isatty is not None and isatty())
    return log_format == "json"


def formatter(log_format: LogFormat, stream: Any = None) -> logging.Formatter:
    return JsonFormatter() if is_json(log_format, stream) else TextFormatter()


class _Prefixed(logging.Formatter):
    def __init__(self, inner: logging.Formatter, prefix: str) -> None:
        super().__init__()
        self.inner, self.prefix = inner, prefix

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(self.prefix + line for line in self.inner.format(record).splitlines())


def configure(level: str | int, log_format: LogFormat = "auto", prefix: str = "") -> None:
    """Route every logger (the bridge's, uvicorn's, Celery's) to one stderr handler;
    ``prefix`` starts each line (``dev`` names the process that wrote it)."""
    handler = logging.StreamHandler(sys.stderr)
    chosen = formatter(log_format, sys.stderr)
    handler.setFormatter(_Prefixed(chosen, prefix) if prefix else chosen)
    handler.addFilter(no_results)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error", "celery", "celery.task", "celery.worker"):
        # Let them propagate to the root handler instead of printing in their own format.
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    # One line per request comes from the transport, with the MCP fields; uvicorn's access
    # line would be a second, poorer one.
    logging.getLogger("uvicorn.access").disabled = True
    # Python's warnings (Celery's SecurityWarning, deprecations) as log lines in the same
    # format, not as bare text on stderr.
    logging.captureWarnings(True)


transitions = logging.getLogger("bridge.transitions")


def transition(
    task_id: str,
    status: str,
    message: str,
    *,
    owner: str = "",
    celery_id: str | None = None,
    tool: str | None = None,
    level: int = logging.INFO,
    **more: Any,
) -> None:
    """The one log line of a task's status change, where the change was applied."""
    if not transitions.isEnabledFor(level):
        return  # on every task's path: build nothing for a line nobody keeps
    transitions.log(
        level,
        "task %s %s: %s",
        task_id,
        status,
        message,
        extra=fields(
            task=task_id,
            status=str(status),
            celery_id=celery_id or None,
            tool=tool or None,
            **owner_fields(owner),
            **more,
        ),
    )
