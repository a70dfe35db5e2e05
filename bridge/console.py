"""What the operator commands (``bridge.admin``) print: rich tables for people, indented
JSON for scripts, and timestamps in UTC."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import click
from rich.columns import Columns
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mcp_celery_bridge.bridge.shared.logs import printable


def console() -> Console:
    # Piped output (a file, `less`, a test) would otherwise be squeezed to 80 columns and
    # wrap the ids; an explicit COLUMNS still wins.
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=200 if wide else None)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def iso(ms: int, z: bool = False) -> str:
    """UTC, ISO 8601; ``z``: the compact ``Z`` suffix for tables."""
    text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z") if z else text


def ago(ms: int, now_ms: int) -> str:
    """How long ago, compactly: a table column stays narrow enough for a terminal;
    ``--json`` has the exact times."""
    return span(max(0, (now_ms - ms) // 1000))


def span(s: int) -> str:
    """A duration, compactly ("42s", "3m05s", "2h07m", "4d03h"): never a clock time."""
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def print_table(
    title: str, columns: list[str], rows: list[list[str | Text]], caption: str, fold: set[str]
) -> None:
    table = Table(title=title, title_justify="left", caption=caption)
    for name in columns:
        # Only the long free-form columns fold: ids and timestamps stay whole and copyable.
        table.add_column(
            name, no_wrap=name not in fold, overflow="fold", min_width=12 if name in fold else None
        )
    for row in rows:
        # Plain strings come from tools and clients: never markup, and escaped (rich keeps
        # ESC, so a clientInfo could clear the operator's screen or plant a link).
        table.add_row(*(Text(printable(cell)) if isinstance(cell, str) else cell for cell in row))
    console().print(table)


def print_fields(sections: dict[str, dict[str, str]]) -> None:
    """Side by side, one two-column table of ``field  value`` per titled section."""
    tables = []
    for title, fields in sections.items():
        table = Table(title=title, title_justify="left", show_header=False)
        table.add_column("field", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        for name, value in fields.items():
            lines = value.split("\n")  # a JSON value shown indented keeps its lines
            table.add_row(name, Text("\n".join(printable(line) for line in lines)))
        tables.append(table)
    console().print(Columns(tables))
