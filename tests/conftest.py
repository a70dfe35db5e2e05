from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from hypothesis import settings

from tests.existing import Project, project_services
from tests.inline import InlineWorker, inline_worker
from tests.inproc import AppServer, AsyncTransport, app_server, settings_of
from tests.services import (
    Process,
    RedisServer,
    bridge_server,
    celery_worker,
    outside_settings,
    test_env,
)

#: The bearer tokens ``token_bridge`` accepts, and the principal each stands for.
TOKENS = "tok-alice:alice,tok-alice-1:alice,tok-alice-2:alice,tok-ann:ann,tok-bob:bob"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _own_settings_only() -> Iterator[None]:
    # Settings built in the test process and the environment of every child it starts
    # come from the tests alone, never from the shell the suite was started in.
    with pytest.MonkeyPatch.context() as patch:
        for name in outside_settings():
            patch.delenv(name)
        # Nor the runner's terminal size: an xdist worker has COLUMNS=80 in its environment,
        # which squeezed the operator's tables the CLI tests read (a test that wants a width
        # sets COLUMNS itself).
        for name in ("COLUMNS", "LINES"):
            patch.delenv(name, raising=False)
        # The one exception: the suite run with the registry's keys spread over shards (hash
        # tags, task ids naming their shard), as on a Redis Cluster, on its one Redis.
        if shards := os.environ.get("MCP_TEST_REDIS_SHARDS"):
            patch.setenv("MCP_BRIDGE_REDIS_SHARDS", shards)
        yield


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (a broker no other worker listens on, say): it
    keeps nothing, so stopping it is the whole clean-up."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The run's own redis-server: database 0 holds the registry and the broker of ``env``;
    a test that needs a broker no other worker listens on takes another database."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def env(redis_server: RedisServer) -> dict[str, str]:
    return test_env(redis_server.url)


@pytest.fixture(scope="session")
def redis_client(env: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(env["MCP_BRIDGE_REDIS_URL"], decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def worker(env: dict[str, str], log_dir: Path) -> Iterator[Process]:
    with celery_worker(env, log_dir, name="main") as proc:
        yield proc


@pytest.fixture(scope="session")
def bridge(env: dict[str, str], log_dir: Path, worker: Process) -> Iterator[str]:
    with bridge_server(env, log_dir, "bridge-a") as url:
        yield url


@pytest.fixture(scope="session")
def bridge_b(env: dict[str, str], log_dir: Path, worker: Process) -> Iterator[str]:
    with bridge_server(env, log_dir, "bridge-b") as url:
        yield url


# -- the fast tier: the app and the tool calls in this process (tests.inproc, tests.inline) --

#: Fixtures that start a process: a test that uses one is not on the fast tier.
PROCESS_FIXTURES = frozenset({"worker", "bridge", "bridge_b", "own_redis"})


@pytest.fixture(scope="session")
def fast_env(redis_server: RedisServer) -> dict[str, str]:
    """The settings of the in-process bridge and worker: the run's Redis, with a key prefix
    and a queue of their own (no worker process consumes it)."""
    return test_env(redis_server.url)


@pytest.fixture(scope="session")
def inline(fast_env: dict[str, str]) -> Iterator[InlineWorker]:
    with inline_worker(settings_of(fast_env)) as runner:
        yield runner


@pytest.fixture(scope="session")
def inproc(fast_env: dict[str, str], log_dir: Path, inline: InlineWorker) -> Iterator[AppServer]:
    """The bridge's app served in this process; tools run inline."""
    with app_server(settings_of(fast_env), log_dir / "inproc.log") as server:
        yield server


@pytest.fixture(scope="session")
def inproc_b(fast_env: dict[str, str], log_dir: Path, inline: InlineWorker) -> Iterator[AppServer]:
    """A second app on the same registry, as ``bridge_b`` is a second bridge process."""
    with app_server(settings_of(fast_env), log_dir / "inproc-b.log") as server:
        yield server


@pytest.fixture(scope="session")
def fast_bridge_b(inproc_b: AppServer) -> str:
    return inproc_b.url


@pytest.fixture(scope="session")
def fast_bridge(inproc: AppServer) -> str:
    """What ``bridge`` is to the process tier: the MCP endpoint's URL (``tests.client``
    reaches it in-process; an httpx client of one's own takes ``tests.inproc``'s
    transports)."""
    return inproc.url


def pytest_configure(config: pytest.Config) -> None:
    # A developer's loop (``pytest -m fast`` alone) runs a tenth of each property's examples;
    # the whole suite runs them all. ``--hypothesis-profile`` chooses otherwise.
    settings.register_profile("fast", max_examples=10)
    if config.getoption("markexpr") == "fast" and not config.getoption("hypothesis_profile"):
        settings.load_profile("fast")


#: The slowest files, slowest first (seconds each took in a whole run under xdist): they are
#: collected first, in this order, so that ``scripts/test`` (``--dist loadfile
#: --no-loadscope-reorder``) hands them out first and the run ends on short files, not on one
#: long file that started last. Out of date, it costs time, never a result.
SLOWEST_FIRST = (
    "test_fuzz.py",  # 85-90: every property's examples, all in this process (CPU)
    "test_conformance.py",  # 55-60: ~50 Node scenarios, six at a time
    "test_sentinel.py",  # 60: a primary, a replica, three sentinels; the core scenarios; a failover
    "test_cluster.py",  # 55: three Redis Cluster deployments; the core scenarios; a failover
    "test_cli.py",  # 40: dev stacks started and stopped
    "test_worker_loss.py",  # 40
    "test_cancel_race.py",  # 30-35
    "test_bridge_loss.py",  # 20-30
    "test_admin.py",  # 20-30: a CLI process per check
    "test_dev.py",  # 20
    "test_quotas.py",  # 15-20
    "test_fairness.py",  # 18
    "test_modern_clients.py",  # 10-18
    "test_preauth.py",  # 15
    "test_existing_project.py",  # 15: a Celery project's own workers
    "test_existing_rabbitmq.py",  # 15
    "test_existing_workflows.py",  # 15
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Before ``-m`` selects: a test on the in-process app is on the fast tier whatever its
    # module says, and a test marked fast (a unit test has no fixture to tell) starts no
    # process fixture.
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & {"inproc", "inline"}:
            item.add_marker(pytest.mark.fast)
        if item.get_closest_marker("fast") is not None and fixtures & PROCESS_FIXTURES:
            raise pytest.UsageError(f"{item.nodeid} is marked fast but starts a process")
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    # Stable: the tests of a file, and the files not named, keep their order.
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def token_bridge(fast_env: dict[str, str], log_dir: Path, inline: InlineWorker) -> Iterator[str]:
    """An in-process bridge that asks for a bearer token (one of ``TOKENS``)."""
    settings = settings_of({**fast_env, "MCP_BRIDGE_AUTH_TOKENS": TOKENS})
    with app_server(settings, log_dir / "bridge-tokens.log") as server:
        yield server.url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A client of in-process apps and bridge processes alike."""
    async with httpx.AsyncClient(timeout=30, transport=AsyncTransport()) as client:
        yield client


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """examples/existing-project bridged: its own workers, a bridge through its app."""
    data, logs = tmp_path_factory.mktemp("proj-redis"), tmp_path_factory.mktemp("proj-logs")
    with project_services(data, logs) as running:
        yield running


# -- the reliability figures (tests/reliability), printed at the end of the run ----------------

#: The name under which a figure travels in a test's report (``user_properties``), so that
#: under xdist the controller, not the worker that ran the test, prints it.
FIGURE = "reliability figure"
#: "test name: figure" lines, in the order their tests finished.
FIGURES: list[str] = []


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Records a figure the test measured, printed under "reliability figures" at the end."""

    def record(text: str) -> None:
        request.node.user_properties.append((FIGURE, f"{request.node.name}: {text}"))

    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # The teardown report carries every property the test recorded; under xdist it reaches
    # the controller, which prints the summary.
    if report.when == "teardown":
        FIGURES.extend(str(value) for name, value in report.user_properties if name == FIGURE)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
