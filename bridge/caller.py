"""``mcp-celery-bridge call``: a small MCP client for trying a bridge from a shell.

It speaks 2025-11-25 like any client would: ``initialize``, a task-augmented ``tools/call``,
``tasks/get`` at the task's poll interval (printing each new status), ``tasks/result``, and
the session's DELETE. Ctrl-C cancels the task (``tasks/cancel``) before leaving.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click
import httpx

from mcp_celery_bridge.bridge import forms, messages

VERSION = messages.LEGACY_VERSION
TERMINAL = ("completed", "failed", "cancelled")


class CallFailed(click.ClickException):
    """The bridge answered with an error or something that is not MCP."""


class Client:
    def __init__(
        self, url: str, token: str | None, timeout: float = 30.0, *, asks: bool = False
    ) -> None:
        headers = messages.post_headers()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url
        #: Whether a tool's questions are asked on this terminal (elicitation declared).
        self.asks = asks
        self.http = httpx.Client(headers=headers, timeout=timeout)
        self.session: str | None = None
        #: The version ``initialize`` negotiated; sent on every later request.
        self.version: str | None = None
        self._next_id = 0

    def close(self) -> None:
        if self.session is not None:
            try:
                self.http.delete(self.url, headers=self._session_headers())
            except httpx.HTTPError:
                pass  # the session expires on its own
        self.http.close()

    def _session_headers(self) -> dict[str, str]:
        return messages.session_headers(self.session, self.version)

    def _post(self, message: dict[str, Any]) -> httpx.Response:
        try:
            return self.http.post(self.url, json=message, headers=self._session_headers())
        except httpx.HTTPError as exc:
            raise CallFailed(f"cannot reach {self.url}: {exc}") from exc

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The result of ``method``. A streamed answer may carry the tool's questions first:
        each is asked on the terminal and answered before the answer is read on."""
        self._next_id += 1
        message = messages.request(self._next_id, method, params)
        headers, result = exchange(
            self.http, self.url, message, self._session_headers(), self._serve
        )
        if method == "initialize":
            self.session = headers.get("mcp-session-id")
            self.version = str(result.get("protocolVersion") or VERSION)
        return result

    def notify(self, method: str) -> None:
        self._post(messages.notification(method))

    def _serve(self, message: dict[str, Any]) -> None:
        """A server message met on a stream: a question, its withdrawal, progress."""
        method = message.get("method")
        params = message.get("params") or {}
        if method == "elicitation/create" and "id" in message:
            if self.asks:
                answer: dict[str, Any] = {"result": forms.ask(params)}
            else:
                answer = {"error": {"code": -32601, "message": "this client cannot ask"}}
            self._post({"jsonrpc": "2.0", "id": message["id"], **answer})
        elif method == "notifications/cancelled":
            click.echo("  (the question was withdrawn)", err=True)
        elif method == "notifications/progress" and params.get("message"):
            click.echo(f"working: {params['message']}", err=True)


def exchange(
    http: httpx.Client,
    url: str,
    message: dict[str, Any],
    headers: dict[str, str],
    serve: Callable[[dict[str, Any]], None],
) -> tuple[httpx.Headers, dict[str, Any]]:
    """POST the request ``message``: the response's headers and the request's result, from a
    JSON body or from an SSE stream (whose messages before the answer go to ``serve``, as
    they arrive). A JSON-RPC error, or anything not MCP, raises ``CallFailed``."""
    try:
        with http.stream(
            "POST", url, json=message, headers=headers, timeout=httpx.Timeout(30.0, read=None)
        ) as response:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                reply = _streamed(response, message["id"], serve)
            else:
                response.read()
                reply = _reply(response)
    except httpx.HTTPError as exc:
        raise CallFailed(f"cannot reach {url}: {exc}") from exc
    if "error" in reply:
        error = reply["error"]
        raise CallFailed(f"{message['method']}: {error.get('message')} ({error.get('code')})")
    return response.headers, dict(reply["result"])


def _streamed(
    response: httpx.Response, request_id: int, serve: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """The answer to ``request_id`` from an SSE response, serving what comes before it."""
    for event in messages.read_events(response.iter_bytes()):  # read as it arrives
        try:
            message = json.loads(event.data)
        except ValueError:
            raise CallFailed(f"not JSON on the stream: {event.data[:200]}") from None
        if messages.is_answer(message, request_id):
            return dict(message)
        if isinstance(message, dict):
            serve(message)
    raise CallFailed(f"HTTP {response.status_code}: the stream ended without an answer")


def _reply(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC response in a JSON body (a streamed one is read by ``_streamed``)."""
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            message = response.json()
        except ValueError:
            message = None
        if isinstance(message, dict) and ("result" in message or "error" in message):
            return message
    raise CallFailed(f"HTTP {response.status_code}: {response.text[:300]}")


def texts(result: dict[str, Any]) -> str:
    parts = [c.get("text", "") for c in result.get("content", []) if c.get("type") == "text"]
    return "\n".join(parts) if parts else json.dumps(result)


def status_line(task: dict[str, Any]) -> str:
    message = task.get("statusMessage")
    return (
        f"{task['status']}: {message}" if message and message != task["status"] else task["status"]
    )


def call_tool(
    url: str, token: str | None, tool: str, arguments: dict[str, Any], as_task: bool
) -> int:
    """Run ``tool``; prints statuses to stderr and the result's text to stdout. Returns the
    exit status: 0 when the tool succeeded, 1 when it failed or was cancelled."""
    # Questions are asked only where someone can answer them.
    client = Client(url, token, asks=sys.stdin.isatty())
    try:
        initialized = client.request(
            "initialize",
            messages.initialize_params(
                "mcp-celery-bridge call", {"elicitation": {"form": {}}} if client.asks else {}
            ),
        )
        client.notify("notifications/initialized")
        params: dict[str, Any] = {"name": tool, "arguments": arguments}
        if as_task and not _takes_tasks(client, initialized, tool):
            # The spec forbids a task for a tool (or server) that does not take one.
            click.echo(f"{tool} is not run as a task here: a plain call", err=True)
            as_task = False
        if not as_task:
            result = client.request("tools/call", params)
            click.echo(texts(result))
            return 1 if result.get("isError") else 0
        created = client.request("tools/call", {**params, "task": {}})["task"]
        task_id = created["taskId"]
        click.echo(f"task {task_id}", err=True)
        try:
            task = _follow(client, created)
            if task["status"] == "input_required":
                # The spec's sequence: tasks/result delivers the pending questions (answered
                # here), then the result.
                result = client.request("tasks/result", {"taskId": task_id})
                task = client.request("tasks/get", {"taskId": task_id})
                click.echo(status_line(task), err=True)
                click.echo(texts(result))
                return 0 if task["status"] == "completed" else 1
        except KeyboardInterrupt:
            try:
                task = client.request("tasks/cancel", {"taskId": task_id})
            except CallFailed:
                # It ended first (a terminal task cannot be cancelled): say how.
                task = client.request("tasks/get", {"taskId": task_id})
            click.echo(status_line(task), err=True)
            return 130
        if task["status"] == "cancelled":
            return 1  # its line said so; a cancelled task has no result to print
        result = client.request("tasks/result", {"taskId": task_id})
        click.echo(texts(result))
        return 0 if task["status"] == "completed" else 1
    finally:
        client.close()


def _takes_tasks(client: Client, initialized: dict[str, Any], tool: str) -> bool:
    """Whether the server runs ``tool`` as a task: it declares task-augmented tools/call,
    and the tool's ``execution.taskSupport`` is "optional" or "required"."""
    tasks = initialized.get("capabilities", {}).get("tasks", {})
    if "call" not in tasks.get("requests", {}).get("tools", {}):
        return False
    cursor = None
    while True:
        page = client.request("tools/list", {"cursor": cursor} if cursor else {})
        for declared in page.get("tools", []):
            if declared.get("name") == tool:
                support = declared.get("execution", {}).get("taskSupport")
                return support in ("optional", "required")
        cursor = page.get("nextCursor")
        if not cursor:
            return True  # unknown: let tools/call answer for it


def _follow(client: Client, task: dict[str, Any]) -> dict[str, Any]:
    """Poll ``tasks/get`` until the task is terminal, echoing each new status."""
    last = ""
    while True:
        line = status_line(task)
        if line != last:
            click.echo(line, err=True)
            last = line
        if task["status"] in TERMINAL or (task["status"] == "input_required" and client.asks):
            return task
        time.sleep(max(0.1, task.get("pollInterval", 1000) / 1000))
        task = client.request("tasks/get", {"taskId": task["taskId"]})
