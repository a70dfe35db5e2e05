"""Declaring existing Celery tasks as tools (``workers.bridged``): what the bridge lists and
checks, from the task's signature or a schema given by hand. No worker: declaring runs
nothing (tests/test_existing_project.py runs them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, shared_task

from mcp_celery_bridge.bridge.catalogue import declared_in
from mcp_celery_bridge.workers import bridged, expose, tool
from mcp_celery_bridge.workers.tools import _catalogue

pytestmark = pytest.mark.fast


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("bridged-test", set_as_current=False)
    before = dict(_catalogue)
    yield app
    # Declarations register process-wide: leave the catalogue as the other tests know it.
    _catalogue.clear()
    _catalogue.update(before)
    app.close()


def test_tool_stacked_on_a_bound_task_keeps_the_task_and_leaves_self_out(app: Celery) -> None:
    @tool(task_support="required", name="bridged_report")
    @app.task(bind=True, name="proj.tasks.report")
    def report(self: Any, rows: int, title: str = "report") -> dict[str, Any]:
        """Build a report."""
        return {"rows": rows}

    declared = _catalogue["bridged_report"]
    # Still the Celery task (a lazy one until the app is finalized): .delay() works.
    assert bridged.is_task(report) and report.name == "proj.tasks.report"
    assert declared.bridged and declared.celery_name == "proj.tasks.report"
    assert declared.description == "Build a report."
    assert declared.task_support == "required"
    schema = declared.input_schema
    assert set(schema["properties"]) == {"rows", "title"}
    assert schema["required"] == ["rows"]
    assert declared.problems({"rows": 3}) is None
    assert declared.problems({"rows": "many"}) is not None
    assert declared.problems({"rows": 3, "self": 1}) is not None  # extra arguments refused


def test_a_shared_task_is_declared_by_its_import_path() -> None:
    before = dict(_catalogue)
    try:
        declared = expose("tests.test_bridged.shared_add", name="shared_add_tool")
        assert declared.task_name == "tests.test_bridged.shared_add"
        assert declared.input_schema["required"] == ["x", "y"]
        assert declared.problems({"x": 1, "y": 2}) is None
        # Declared here, in this module: served when it is a configured tool module.
        assert declared.module == __name__
        assert [t.name for t in declared_in([__name__])] == ["shared_add_tool"]
    finally:
        _catalogue.clear()
        _catalogue.update(before)


def plain_function() -> None:
    """Not a task."""


@shared_task
def shared_add(x: int, y: int) -> int:
    return x + y


def test_a_task_by_name_with_a_schema_imports_nothing(app: Celery) -> None:
    schema = {
        "type": "object",
        "properties": {"invoice": {"type": "string", "pattern": "^INV-[0-9]+$"}},
        "required": ["invoice"],
        "additionalProperties": False,
    }
    declared = expose("billing.tasks.send_invoice", name="send_invoice", input_schema=schema)
    assert declared.celery_name == "billing.tasks.send_invoice"
    assert declared.input_schema == schema
    assert declared.input_schema is not schema  # a copy: a client cannot change ours
    assert declared.problems({"invoice": "INV-12"}) is None
    assert declared.problems({"invoice": "12"}) == "invoice: '12' does not match '^INV-[0-9]+$'"
    assert declared.problems({}) == "arguments: 'invoice' is a required property"


@pytest.mark.parametrize(
    ("target", "schema", "error"),
    [
        ("no_such_module.tasks.work", None, "cannot import the task 'no_such_module.tasks.work'"),
        ("tests.test_bridged.plain_function", None, "is not a Celery task but function"),
        ("x.tasks.y", {"type": "array"}, "an input schema must be of type object"),
    ],
)
def test_a_task_that_cannot_be_declared_says_why(
    app: Celery, target: str, schema: dict[str, Any] | None, error: str
) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
        expose(target, input_schema=schema)


def test_is_task_tells_tasks_and_shared_task_proxies_from_functions(app: Celery) -> None:
    @app.task
    def plain(x: int) -> int:
        return x

    assert bridged.is_task(plain)
    assert bridged.is_task(shared_add)
    assert not bridged.is_task(shared_add.run)
    assert not bridged.is_task(test_is_task_tells_tasks_and_shared_task_proxies_from_functions)
