"""``mcp-celery-bridge call --protocol 2026-07-28``: the same command, stateless.

Every request carries its version and capabilities in ``_meta`` (no session). With the
tasks extension declared, the server decides whether a call runs as a task: one that does
is followed with ``tasks/get`` at its poll interval (each new status printed), its questions
asked on the terminal and answered with ``tasks/update``, its result read from the finished
task. A plain call that asks answers ``input_required`` and is sent again with the answers
(``inputResponses``) and its ``requestState``. Ctrl-C cancels the task.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import httpx

from mcp_celery_bridge.bridge import forms, messages
from mcp_celery_bridge.bridge.caller import TERMINAL, exchange, status_line, texts


class StatelessClient:
    def __init__(
        self, url: str, token: str | None, *, asks: bool, tasks: bool, timeout: float = 30.0
    ) -> None:
        self.url = url
        self.meta = messages.modern_meta("mcp-celery-bridge call", tasks=tasks, elicitation=asks)
        self.http = httpx.Client(
            timeout=timeout, headers={"Authorization": f"Bearer {token}"} if token else None
        )
        self._next_id = 0

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The result of ``method`` (progress met on a streamed answer is printed)."""
        params = {**(params or {}), "_meta": self.meta}
        self._next_id += 1
        message = messages.request(self._next_id, method, params)
        headers = messages.modern_headers(method, params)
        return exchange(self.http, self.url, message, headers, _progress)[1]


def _progress(message: dict[str, Any]) -> None:
    params = message.get("params")
    if message.get("method") == "notifications/progress" and isinstance(params, dict):
        if params.get("message"):
            click.echo(f"working: {params['message']}", err=True)


def _answers(requests: dict[str, Any]) -> dict[str, Any]:
    """Each question (an ``elicitation/create``) asked on the terminal, keyed as asked."""
    answers: dict[str, Any] = {}
    for key, request in requests.items():
        params = request.get("params") if isinstance(request, dict) else None
        if isinstance(request, dict) and request.get("method") == "elicitation/create":
            answers[key] = forms.ask(params if isinstance(params, dict) else {})
    return answers


def call_tool_stateless(
    url: str, token: str | None, tool: str, arguments: dict[str, Any], as_task: bool
) -> int:
    """Run ``tool`` statelessly; the exit status is as for ``bridge.caller.call_tool``."""
    asks = sys.stdin.isatty()
    client = StatelessClient(url, token, asks=asks, tasks=as_task)
    try:
        params: dict[str, Any] = {"name": tool, "arguments": arguments}
        result = client.request("tools/call", params)
        while result.get("resultType") == "input_required":
            # A plain call that asked: the same call again, with the answers.
            follow_up = {
                **params,
                "inputResponses": _answers(result.get("inputRequests") or {}),
                "requestState": result.get("requestState"),
            }
            result = client.request("tools/call", follow_up)
        if result.get("resultType") != "task":
            click.echo(texts(result))
            return 1 if result.get("isError") else 0
        click.echo(f"task {result['taskId']}", err=True)
        try:
            return _follow(client, result, asks)
        except KeyboardInterrupt:
            client.request("tasks/cancel", {"taskId": result["taskId"]})
            click.echo(
                status_line(client.request("tasks/get", {"taskId": result["taskId"]})), err=True
            )
            return 130
    finally:
        client.close()


def _follow(client: StatelessClient, task: dict[str, Any], asks: bool) -> int:
    """Poll ``tasks/get`` until the task ends, printing each new status and answering its
    questions; prints the result and returns the exit status."""
    last, answered = "", set[str]()
    while True:
        line = status_line(task)
        if line != last:
            click.echo(line, err=True)
            last = line
        status = task["status"]
        if status in TERMINAL:
            break
        if status == "input_required" and asks:
            pending = {
                k: v for k, v in (task.get("inputRequests") or {}).items() if k not in answered
            }
            if pending:
                answers = _answers(pending)
                answered.update(answers)
                client.request(
                    "tasks/update", {"taskId": task["taskId"], "inputResponses": answers}
                )
        time.sleep(max(0.1, task.get("pollIntervalMs", 1000) / 1000))
        task = client.request("tasks/get", {"taskId": task["taskId"]})
    if task["status"] == "completed":
        result = task.get("result") or {}
        click.echo(texts(result))
        return 1 if result.get("isError") else 0
    if task["status"] == "failed":
        error = task.get("error") or {}
        click.echo(f"error: {error.get('message')} ({error.get('code')})", err=True)
    return 1
