"""The fixture tools the official MCP conformance suite (npm @modelcontextprotocol/conformance)
calls, written with the public tool API only. Names, arguments and results are the ones
each scenario's description asks for; tests/test_conformance.py runs the scenarios."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mcp_celery_bridge import InputTimeout, InputUnavailable, current, tool

#: A 1x1 red PNG and a tiny 8 kHz WAV, the smallest media the content scenarios accept.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
WAV = "UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQgAAACAgICAgICAgA=="


@tool(task_support="optional")
def test_simple_text() -> str:
    """Return a fixed text (tools-call-simple-text)."""
    return "This is a simple text response for testing."


@tool(task_support="optional")
def test_image_content() -> dict[str, Any]:
    """Return a PNG image (tools-call-image)."""
    return {"content": [{"type": "image", "data": PNG, "mimeType": "image/png"}]}


@tool(task_support="optional")
def test_audio_content() -> dict[str, Any]:
    """Return a WAV sound (tools-call-audio)."""
    return {"content": [{"type": "audio", "data": WAV, "mimeType": "audio/wav"}]}


@tool(task_support="optional")
def test_embedded_resource() -> dict[str, Any]:
    """Return an embedded text resource (tools-call-embedded-resource)."""
    resource = {
        "uri": "test://embedded-resource",
        "mimeType": "text/plain",
        "text": "This is an embedded resource content.",
    }
    return {"content": [{"type": "resource", "resource": resource}]}


@tool(task_support="optional")
def test_multiple_content_types() -> dict[str, Any]:
    """Return text, an image and a resource at once (tools-call-mixed-content)."""
    resource = {
        "uri": "test://mixed-content-resource",
        "mimeType": "application/json",
        "text": '{"test":"data","value":123}',
    }
    return {
        "content": [
            {"type": "text", "text": "Multiple content types test:"},
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            {"type": "resource", "resource": resource},
        ]
    }


@tool(task_support="optional")
def test_error_handling() -> str:
    """Always fail (tools-call-error)."""
    raise RuntimeError("This tool intentionally returns an error for testing")


@tool(task_support="optional")
def test_tool_with_progress() -> str:
    """Report 0/100, 50/100 and 100/100 about 50 ms apart (tools-call-with-progress)."""
    ctx = current()
    for done in (0, 50, 100):
        ctx.report_progress(done, 100)
        if done < 100:
            # Over the worker's minimum interval between two progress writes.
            time.sleep(0.06)
    return "Tool with progress executed successfully"


def _elicit(message: str, schema: dict[str, Any]) -> str:
    answer = current().ask(message, schema, timeout=30)
    return f"Elicitation completed: action={answer.action}, content={answer.content or {}}"


@tool(task_support="optional")
def test_elicitation(message: str) -> str:
    """Ask the user for a name and an e-mail address (tools-call-elicitation)."""
    schema = {
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        "required": ["username", "email"],
    }
    answer = current().ask(message, schema, timeout=30)
    return f"User response: action={answer.action}, content={answer.content or {}}"


@tool(task_support="optional")
def test_elicitation_sep1034_defaults() -> str:
    """Ask with a default for every primitive type (elicitation-sep1034-defaults)."""
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "default": "John Doe"},
            "age": {"type": "integer", "default": 30},
            "score": {"type": "number", "default": 95.5},
            "status": {
                "type": "string",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": {"type": "boolean", "default": True},
        },
    }
    return _elicit("Please review your information", schema)


@tool(task_support="optional")
def test_elicitation_sep1330_enums() -> str:
    """Ask with each of the five enum shapes (elicitation-sep1330-enums)."""
    titled = [
        {"const": "value1", "title": "First Option"},
        {"const": "value2", "title": "Second Option"},
        {"const": "value3", "title": "Third Option"},
    ]
    choices = [
        {"const": "value1", "title": "First Choice"},
        {"const": "value2", "title": "Second Choice"},
        {"const": "value3", "title": "Third Choice"},
    ]
    options = ["option1", "option2", "option3"]
    schema = {
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "enum": options},
            "titledSingle": {"type": "string", "oneOf": titled},
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {"type": "array", "items": {"type": "string", "enum": options}},
            "titledMulti": {"type": "array", "items": {"anyOf": choices}},
        },
    }
    return _elicit("Please select options", schema)


def _schema_2020_12(schema: dict[str, Any]) -> None:
    # The scenario checks that keywords pydantic does not write survive tools/list.
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["allOf"] = [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}]
    schema["if"] = {
        "properties": {"contactMethod": {"const": "phone"}},
        "required": ["contactMethod"],
    }
    schema["then"] = {"required": ["phone"]}
    schema["else"] = {"required": ["email"]}


class address(BaseModel):
    model_config = ConfigDict(json_schema_extra={"$anchor": "addressDef"})

    street: str | None = None
    city: str | None = None


Address = address  # the field below is named address too


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_schema_2020_12)

    name: str | None = None
    address: Address | None = None
    contactMethod: Literal["phone", "email"] | None = None
    phone: str | None = None
    email: str | None = None


@tool(name="json_schema_2020_12_tool", description="Tool with JSON Schema 2020-12 features")
def json_schema_tool(contact: Contact) -> str:
    """Echo the contact (json-schema-2020-12)."""
    return contact.model_dump_json(exclude_none=True)


@tool(task_support="optional")
def test_reconnection() -> str:
    """Take a moment, so the response comes after the stream's priming event
    (server-sse-polling)."""
    time.sleep(0.2)
    return "Reconnection test completed"


# -- diagnostics of server-stateless (2026-07-28) ---------------------------------------------


@tool(task_support="optional")
def test_streaming_elicitation() -> str:
    """Try to ask a question during a plain call: the answer's stream must carry no
    independent request (the question comes as an InputRequiredResult, which the scenario
    does not follow up: a short timeout frees the worker)."""
    try:
        answer = current().ask(
            "Streaming question?", {"type": "object", "properties": {}}, timeout=5
        )
    except (InputUnavailable, InputTimeout):
        return "no question could be asked"
    return f"answered: {answer.action}"


@tool(task_support="optional")
def test_logging_tool() -> str:
    """Log a line: a request that set no log level must get no notifications/message."""
    logging.getLogger(__name__).info("test_logging_tool ran")
    return "logged"


# -- the tasks extension (tasks-* scenarios) --------------------------------------------------


@tool(task_support="forbidden")
def greet(name: str) -> str:
    """Greet `name`; never a task."""
    return f"Hello, {name}!"


def _work(seconds: float) -> None:
    """The body's workload: ``seconds`` of it, stopping as soon as the task is cancelled."""
    ctx = current()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


@tool(task_support="optional")
def slow_compute(seconds: float, label: str = "") -> str:
    """Sleep `seconds`, stopping as soon as the task is cancelled."""
    _work(seconds)
    return f"computed {label or 'result'} after {seconds:g}s"


@tool(task_support="required")
def failing_job() -> str:
    """Fail with a tool error after about a second of work."""
    # The conformance scenario polls the task and must see it `working` before it fails:
    # the body works for a second (cancellable, as any tool's work) and then raises.
    _work(1.0)
    raise RuntimeError("failing_job always fails")


@tool(task_support="required")
def protocol_error_job() -> str:
    """Kill the pool process running it: the task fails without any tool result."""
    os._exit(1)


@tool(task_support="required")
def confirm_delete(filename: str) -> str:
    """Ask whether to delete `filename`."""
    schema = {
        "type": "object",
        "properties": {"confirm": {"type": "boolean", "title": f"Delete {filename}?"}},
        "required": ["confirm"],
    }
    answer = current().ask(f"Delete {filename}?", schema, timeout=30)
    confirmed = answer.action == "accept" and (answer.content or {}).get("confirm")
    return f"deleted {filename}" if confirmed else f"kept {filename}"


@tool(task_support="required")
def multi_input() -> str:
    """Ask two questions at once (from two threads): the task shows both in inputRequests."""
    ctx = current()
    schema = {"type": "object", "properties": {"value": {"type": "string"}}}
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(
            lambda message: ctx.ask(message, schema, timeout=30),
            ["First value?", "Second value?"],
        )
    return f"got {first.content} and {second.content}"


@tool(task_support="optional")
def regional_echo(
    region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})],
    text: str = "",
) -> str:
    """Echo `text` in `region`, which clients mirror into Mcp-Param-Region
    (http-custom-header-server-validation)."""
    return f"{region}: {text}"


# -- multi round-trip requests (input-required-result-* scenarios, 2026-07-28) ---------------
#: Several scenarios ask and never follow up: the worker slot is back after this long.
ROUND_TIMEOUT_S = 15


def _text_answer(key: str, message: str, field: str) -> str:
    schema = {
        "type": "object",
        "properties": {field: {"type": "string"}},
        "required": [field],
    }
    answer = current().ask(message, schema, timeout=ROUND_TIMEOUT_S, key=key)
    return str((answer.content or {}).get(field, answer.action))


@tool(task_support="forbidden")
def test_input_required_result_elicitation() -> str:
    """Ask for the user's name (question key `user_name`) and greet them."""
    return f"Hello, {_text_answer('user_name', 'What is your name?', 'name')}!"


@tool(task_support="forbidden")
def test_input_required_result_request_state() -> str:
    """Ask for a confirmation (key `confirm`); the follow-up's requestState names the call."""
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    answer = current().ask("Please confirm", schema, timeout=ROUND_TIMEOUT_S, key="confirm")
    return f"state-ok: {answer.action}, ok={(answer.content or {}).get('ok')}"


@tool(task_support="forbidden")
def test_input_required_result_multi_round() -> str:
    """Ask two questions one after the other (keys `step1`, `step2`): three rounds."""
    name = _text_answer("step1", "Step 1: What is your name?", "name")
    color = _text_answer("step2", "Step 2: What is your favorite color?", "color")
    return f"{name} likes {color}"


@tool(task_support="forbidden")
def test_input_required_result_tampered_state() -> str:
    """Ask for a confirmation; a follow-up with an altered requestState is refused."""
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    answer = current().ask("Please confirm", schema, timeout=ROUND_TIMEOUT_S, key="confirm")
    return f"confirmed: {answer.action}"
