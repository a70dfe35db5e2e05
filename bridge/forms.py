"""An elicitation answered in the terminal: the requested schema (a flat object of strings,
numbers, integers, booleans and enums, as MCP allows) becomes one prompt per field.

Enter accepts each field (its default, if it has one); an empty optional field is left
out; end of input (Ctrl-D) declines the whole question.
"""

from __future__ import annotations

from typing import Any

import click


def ask(params: dict[str, Any]) -> dict[str, Any]:
    """The ``ElicitResult`` for an ``elicitation/create``'s params, asked on the terminal."""
    click.echo(f"? {params.get('message', '(no message)')}", err=True)
    schema = params.get("requestedSchema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    required = set(schema.get("required", [])) if isinstance(schema, dict) else set()
    content: dict[str, Any] = {}
    try:
        if not isinstance(properties, dict) or not properties:
            if not click.confirm("  accept", default=True, err=True):
                return {"action": "decline"}
            return {"action": "accept", "content": {}}
        for name, field in properties.items():
            value = _field(name, field if isinstance(field, dict) else {}, name in required)
            if value is not None:
                content[name] = value
    except click.Abort:  # end of input
        click.echo("  declined", err=True)
        return {"action": "decline"}
    return {"action": "accept", "content": content}


def _field(name: str, field: dict[str, Any], required: bool) -> Any:
    label = f"  {field.get('title') or name}"
    if field.get("description"):
        label += f" ({field['description']})"
    default = field.get("default")
    kind = field.get("type")
    choices = field.get("enum") or [
        option["const"] for option in field.get("oneOf", []) if isinstance(option, dict)
    ]
    if kind == "boolean":
        return click.confirm(
            label, default=bool(default) if default is not None else None, err=True
        )
    if choices:
        return click.prompt(
            label,
            type=click.Choice([str(c) for c in choices]),
            default=default,
            show_choices=True,
            err=True,
        )
    types = {"integer": int, "number": float}
    value = click.prompt(
        label,
        type=types.get(str(kind), str),
        default=default if default is not None else ("" if not required else None),
        show_default=default is not None,
        err=True,
    )
    if value == "" and not required:
        return None
    return value
