"""The official MCP conformance suite (npm @modelcontextprotocol/conformance) against a real
bridge and a real Celery worker, in both protocol eras.

``scripts/conformance-setup`` (run by scripts/test) installs Node 22 and the pinned suite
versions into .conformance/. Every applicable server scenario of each (suite version, era)
run is one test; all of them start at once, a few suites at a time, when the first test
asks, so the whole run takes about as long as its slowest scenarios. A scenario passes when
its checks.json holds no FAILURE other than the not-applicable checks named below."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import services
from tests.services import ROOT, Process, bridge_server, celery_worker

CONFORMANCE = ROOT / ".conformance"
NODE = CONFORMANCE / "node" / "node_modules" / ".bin" / "node"
STABLE = "0.1.16"
ALPHA = "0.2.0-alpha.12"
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
#: Suites run at once: each is a Node process, and the machine has two cores.
PARALLEL = 6
#: Scenarios with sub-second windows (server-stateless reads a worker-run tool call's first
#: frame within 500-600 ms): they run alone, before the others start, so five Node processes
#: starting beside them cannot push a worker round trip past the window.
ALONE = {"server-stateless"}

#: The server scenarios of a tools + tasks server, per (suite version, era).
COMMON = [
    "tools-list",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-error",
    "tools-call-with-progress",
    "json-schema-2020-12",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
]
SESSIONS = [
    "server-initialize",
    "ping",
    "tools-call-elicitation",
    "elicitation-sep1034-defaults",
    "elicitation-sep1330-enums",
    "server-sse-polling",
]
TASKS = [
    "tasks-lifecycle",
    "tasks-capability-negotiation",
    "tasks-wire-fields",
    "tasks-request-state-removal",
    "tasks-mrtr-input",
    "tasks-request-headers",
    "tasks-dispatch-and-envelope",
    "tasks-status-notifications",
    "tasks-required-task-error",
]
SCENARIOS: dict[tuple[str, str], list[str]] = {
    (STABLE, LEGACY): [*COMMON, *SESSIONS],
    (ALPHA, LEGACY): [*COMMON, *SESSIONS, "server-session-lifecycle"],
    (ALPHA, MODERN): [
        *COMMON,
        *TASKS,
        "server-stateless",
        "caching",
        "http-header-validation",
        "http-custom-header-server-validation",
        "input-required-result-unsupported-methods",
        "input-required-result-validate-input",
        "input-required-result-basic-elicitation",
        "input-required-result-request-state",
        "input-required-result-multi-round",
        "input-required-result-missing-input-response",
        "input-required-result-result-type",
        "input-required-result-tampered-state",
        "input-required-result-ignore-extra-params",
    ],
}

#: Server scenarios of the suites that are not run, and why.
NO_SAMPLING = "its input requests include sampling/createMessage: the bridge offers no sampling"
EXCLUDED: dict[str, str] = {
    "logging-set-level": "the bridge offers no logging capability (logging/setLevel)",
    "tools-call-with-logging": "the bridge offers no logging capability (notifications/message)",
    "completion-complete": "the bridge offers no completions",
    "tools-call-sampling": "the bridge offers no sampling",
    "resources-list": "the bridge offers no resources",
    "resources-read-text": "the bridge offers no resources",
    "resources-read-binary": "the bridge offers no resources",
    "resources-templates-read": "the bridge offers no resources",
    "resources-subscribe": "the bridge offers no resources",
    "resources-unsubscribe": "the bridge offers no resources",
    "sep-2164-resource-not-found": "the bridge offers no resources",
    "prompts-list": "the bridge offers no prompts",
    "prompts-get-simple": "the bridge offers no prompts",
    "prompts-get-with-args": "the bridge offers no prompts",
    "prompts-get-embedded-resource": "the bridge offers no prompts",
    "prompts-get-with-image": "the bridge offers no prompts",
    "sep-2640-skills-directory": "the skills extension: the bridge offers no resources",
    "sep-2640-skills-enumeration": "the skills extension: the bridge offers no resources",
    "sep-2640-skills-manifest": "the skills extension: the bridge offers no resources",
    "tasks-mrtr-composition": (
        "a task-required tool that first asks in plain rounds (InputRequiredResult) and "
        "becomes a task on the last round: a bridge tool asks from its body, running on a "
        "worker, so a call is a task from its first request or a plain call to its end"
    ),
    "input-required-result-basic-sampling": NO_SAMPLING,
    "input-required-result-basic-list-roots": "its input request is roots/list: the bridge "
    "never lists the client's roots",
    "input-required-result-multiple-input-requests": NO_SAMPLING + " (and roots/list)",
    "input-required-result-non-tool-request": "InputRequiredResult on prompts/get: the bridge "
    "offers no prompts",
    "input-required-result-capability-check": "needs a tool that asks by sampling when the "
    "client declares sampling only: the bridge offers no sampling, and without elicitation a "
    "bridge tool cannot ask at all",
}

#: Checks that do not apply although their scenario does: (scenario, check id) -> why.
NOT_APPLICABLE_CHECKS: dict[tuple[str, str], str] = {
    ("caching", "sep-2549-prompts-list-caching-hints"): "no prompts: prompts/list is -32601",
    ("caching", "sep-2549-resources-list-caching-hints"): "no resources: -32601",
    ("caching", "sep-2549-resources-templates-list-caching-hints"): "no resources: -32601",
    ("server-stateless", "sep-2575-server-rejects-undeclared-capability"): (
        "needs a tool that requires the client's sampling capability; the bridge offers no "
        "sampling, and a tool cannot declare a required client capability"
    ),
    ("server-stateless", "sep-2575-missing-capability-http-400"): (
        "the HTTP status of the -32021 the check above would provoke"
    ),
}

#: Scenarios failing for a bridge bug: (suite version, era, scenario) -> the diagnosis.
KNOWN_FAILURES: dict[tuple[str, str, str], str] = {}


@dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str
    checks: list[dict[str, object]] | None


def suite_entry(version: str) -> Path:
    return (
        CONFORMANCE
        / version
        / "node_modules"
        / "@modelcontextprotocol"
        / "conformance"
        / "dist"
        / "index.js"
    )


def installed() -> bool:
    return NODE.exists() and all(suite_entry(v).exists() for v in (STABLE, ALPHA))


def run_suite(url: str, suite: str, era: str, scenario: str, out: Path) -> Outcome:
    command = [str(NODE), str(suite_entry(suite)), "server", "--url", url]
    command += ["--scenario", scenario, "--spec-version", era, "-o", str(out)]
    if scenario.startswith("tasks-"):
        # Extension scenarios are off the spec timeline: --force runs them at this era.
        command.append("--force")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=100, check=False)
    except subprocess.TimeoutExpired as exc:
        return Outcome(-1, f"timed out: {exc.stdout!r}", None)
    found = sorted(out.glob("*/checks.json"))
    checks = json.loads(found[0].read_text()) if found else None
    return Outcome(done.returncode, done.stdout + done.stderr, checks)


CASES = [
    pytest.param(
        suite,
        era,
        scenario,
        id=f"{suite}-{era}-{scenario}",
        marks=(
            [pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[(suite, era, scenario)])]
            if (suite, era, scenario) in KNOWN_FAILURES
            else []
        ),
    )
    for (suite, era), scenarios in SCENARIOS.items()
    for scenario in scenarios
]


@pytest.fixture(scope="module")
def runs(
    env: dict[str, str], log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[tuple[str, str, str], Future[Outcome]]]:
    if not installed():
        if os.environ.get("MCP_TEST_SKIP_CONFORMANCE") and not os.environ.get("CI"):
            pytest.skip("the conformance suite is not installed (scripts/conformance-setup)")
        pytest.fail("the conformance suite is not installed: run scripts/conformance-setup")
    # Its own bridge and worker: the fixture tools stay out of the other tests' tools/list.
    own = {
        **services.test_env(env["MCP_BRIDGE_REDIS_URL"]),
        "MCP_BRIDGE_TOOL_MODULES": "tests.conformance_tools",
    }
    root = tmp_path_factory.mktemp("conformance")
    with contextlib.ExitStack() as stack:
        worker: Process = stack.enter_context(
            celery_worker(own, log_dir, concurrency=4, name="conformance")
        )
        url = stack.enter_context(bridge_server(own, log_dir, "bridge-conformance"))
        pool = stack.enter_context(ThreadPoolExecutor(PARALLEL))
        futures: dict[tuple[str, str, str], Future[Outcome]] = {}
        # The ALONE scenarios first, each waited for before anything else starts.
        for n, case in sorted(enumerate(CASES), key=lambda item: item[1].values[2] not in ALONE):
            suite, era, scenario = case.values
            futures[(suite, era, scenario)] = pool.submit(  # type: ignore[arg-type]
                run_suite, url, suite, era, scenario, root / str(n)
            )
            if scenario in ALONE:
                futures[(suite, era, scenario)].exception()
        yield futures  # type: ignore[misc]
        for future in futures.values():
            future.cancel()
        assert worker.alive(), worker.output()[-4000:]


def test_exclusions_are_disjoint_from_the_runs() -> None:
    ran = {scenario for scenarios in SCENARIOS.values() for scenario in scenarios}
    assert not ran & EXCLUDED.keys()
    assert {key[:2] for key in KNOWN_FAILURES} <= SCENARIOS.keys()
    assert all(key[2] in SCENARIOS[key[:2]] for key in KNOWN_FAILURES)


@pytest.mark.parametrize(("suite", "era", "scenario"), CASES)
@pytest.mark.timeout(300)
def test_scenario(
    runs: dict[tuple[str, str, str], Future[Outcome]], suite: str, era: str, scenario: str
) -> None:
    outcome = runs[(suite, era, scenario)].result(timeout=280)
    assert outcome.checks is not None, f"the scenario did not run:\n{outcome.output}"
    failed = [
        f"{check.get('id')}: {check.get('errorMessage')}"
        for check in outcome.checks
        if check.get("status") == "FAILURE"
        and (scenario, check.get("id")) not in NOT_APPLICABLE_CHECKS
    ]
    assert not failed, "\n".join(failed) + "\n\n" + outcome.output[-6000:]


@pytest.mark.parametrize("suite", [STABLE, ALPHA])
def test_every_server_scenario_is_run_or_excluded(suite: str) -> None:
    if not installed():
        pytest.skip("the conformance suite is not installed; the scenario tests say so")
    listing = subprocess.run(
        [str(NODE), str(suite_entry(suite)), "list", "--server"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    listed = {line.split()[1] for line in listing.splitlines() if line.startswith("  - ")}
    ran = {
        scenario
        for (version, _), names in SCENARIOS.items()
        if version == suite
        for scenario in names
    }
    assert listed, listing
    assert listed <= ran | EXCLUDED.keys(), sorted(listed - ran - EXCLUDED.keys())
