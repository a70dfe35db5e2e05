"""The registry on a Redis Cluster (three primaries, private redis-server processes), the
broker and result backend on a Redis of their own (Celery knows no Cluster): the core
scenarios work through a ``redis+cluster://`` URL, every script touching one slot, with two
bridges and a worker spread over the nodes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
import redis
from redis.crc import key_slot

from tests import core, services
from tests.client import TERMINAL, RawClient, connect, running_pid
from tests.existing import completed, failure_text, project_services
from tests.reliability.harness import Recorder
from tests.services import (
    ROOT,
    Bridge,
    Process,
    RedisServer,
    celery_worker,
    eventually,
    keys_of,
    running_bridge,
)
from tests.test_metrics import _samples as metric_samples
from tests.test_streams import collect_until, twin
from tests.topologies import RedisCluster, redis_cluster

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


@dataclass
class Deployment:
    cluster: RedisCluster
    broker: RedisServer
    env: dict[str, str]
    bridges: list[Bridge]
    worker: Process


def cluster_env(cluster: RedisCluster, broker: RedisServer, **extra: str) -> dict[str, str]:
    return {
        **services.test_env(cluster.url()),
        "MCP_BRIDGE_BROKER_URL": broker.database(0),
        "MCP_BRIDGE_RESULT_BACKEND": broker.database(1),
        "MCP_BRIDGE_REDIS_SHARDS": "64",
        **extra,
    }


@contextlib.contextmanager
def deployment(root: Path) -> Iterator[Deployment]:
    logs = root / "logs"
    logs.mkdir(parents=True)
    broker = RedisServer(logs)
    broker.start()
    try:
        with redis_cluster(root / "cluster") as cluster:
            env = cluster_env(cluster, broker, MCP_BRIDGE_MAX_INFLIGHT_PER_OWNER="2")
            with (
                celery_worker(env, logs, 3, name="cluster") as worker,
                running_bridge(env, logs, "bridge-cluster-a") as first,
                running_bridge(env, logs, "bridge-cluster-b") as second,
            ):
                yield Deployment(cluster, broker, env, [first, second], worker)
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def cluster_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("cluster")) as found:
        yield found


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The operator CLI (``python -m mcp_celery_bridge.bridge.cli ARGS``) on ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "mcp_celery_bridge.bridge.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def keys_per_node(found: Deployment) -> list[int]:
    prefix = found.env["MCP_BRIDGE_KEY_PREFIX"]
    counts = []
    for node in found.cluster.nodes:
        with contextlib.closing(redis.Redis(port=node.port)) as client:
            counts.append(sum(1 for _ in client.scan_iter(match=f"{prefix}:*", count=1000)))
    return counts


async def test_tasks_run_notify_and_list_across_the_nodes(cluster_deployment: Deployment) -> None:
    # Enough owners that each node serves some of them but once in ~5,000 runs.
    await core.tasks_notify_and_list(cluster_deployment.bridges[0].url, owners=24)
    # Owners spread over the shards, and so over the nodes: every node holds some.
    assert all(count > 0 for count in keys_per_node(cluster_deployment)), keys_per_node(
        cluster_deployment
    )


async def test_a_stream_resumes_on_the_other_bridge_with_last_event_id(
    cluster_deployment: Deployment,
) -> None:
    await core.stream_resumes_on_the_other_bridge(*(b.url for b in cluster_deployment.bridges))


async def test_events_go_on_shard_channels_held_at_the_owners_node(
    cluster_deployment: Deployment,
) -> None:
    first, second = (bridge.url for bridge in cluster_deployment.bridges)
    env = cluster_deployment.env
    keys = keys_of(env)
    async with connect(first) as client:
        channel = keys.owner_channel(f"session:{client.session_id}")
        async with client.stream() as events:
            # The bridge holding the stream subscribed the owner's shard channel at the node
            # serving its slot, and no classic channel of it anywhere.
            port = cluster_deployment.cluster.nodes[0].port
            with contextlib.closing(redis.RedisCluster("127.0.0.1", port)) as whole:
                node = whole.get_node_from_key(channel)
            with contextlib.closing(redis.Redis(port=node.port)) as at_node:
                shard_subs = at_node.execute_command("PUBSUB", "SHARDNUMSUB", channel)
                assert shard_subs[1] == 1, shard_subs
                assert at_node.pubsub_numsub(channel)[0][1] == 0
            created = await client.create_task("echo", {"text": "sharded"})
            await collect_until(events, created["taskId"], "completed", timeout=20)
            # Ending the session through the other bridge ends the stream here (its
            # closing goes over the same channel).
            other = twin(client, second, client.http)
            deleted = await other.http.delete(second, headers=other.headers())
            assert deleted.status_code == 200, deleted.text
            with anyio.fail_after(10):
                async for _ in events:
                    pass


async def test_cancel_terminates_the_run_on_a_cluster(cluster_deployment: Deployment) -> None:
    await core.cancel_terminates(cluster_deployment.bridges[1].url)


async def test_the_per_owner_limit_holds_on_a_cluster(cluster_deployment: Deployment) -> None:
    await core.per_owner_limit(cluster_deployment.bridges[0].url, 2)


async def test_the_stateless_era_runs_tasks_and_plain_calls_on_a_cluster(
    cluster_deployment: Deployment,
) -> None:
    await core.stateless_era(*(b.url for b in cluster_deployment.bridges))


async def test_the_fleets_running_tasks_are_counted_across_the_shards(
    cluster_deployment: Deployment,
) -> None:
    # /metrics reads every shard's lease set (one pipeline, each to its node).
    url = cluster_deployment.bridges[0].url
    async with connect(url) as client:
        task = await client.create_task("sleep", {"seconds": 20, "steps": 200})
        node, _ = await running_pid(client, task["taskId"])
        running = {
            labels: value
            for (name, labels), value in metric_samples(url).items()
            if name == "mcp_bridge_tasks_running"
        }
        assert running.get((("worker", node),), 0) >= 1, running
        await client.call("tasks/cancel", {"taskId": task["taskId"]})


async def test_the_operator_cli_lists_and_shows_tasks_on_every_node(
    cluster_deployment: Deployment,
) -> None:
    async with connect(cluster_deployment.bridges[0].url) as client:
        created = await client.create_task("echo", {"text": "seen by the operator"})
        await client.wait_status(created["taskId"], TERMINAL, 30)
    env = cluster_deployment.env
    listed = cli(env, "tasks", "list", "--owner", f"session:{client.session_id}", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [t["id"] for t in json.loads(listed.stdout)["tasks"]] == [created["taskId"]]
    shown = cli(env, "tasks", "show", created["taskId"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["mcp"]["status"] == "completed"


async def test_a_lost_worker_fails_its_task_from_its_shards_leases(
    cluster_deployment: Deployment, tmp_path: Path
) -> None:
    # A bridge and worker of their own (their own queue and keys): the module's keep running.
    env = cluster_env(cluster_deployment.cluster, cluster_deployment.broker)
    await core.lost_worker(env, tmp_path)


async def test_readiness_fails_when_the_cluster_is_down(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    broker = own_redis
    with redis_cluster(tmp_path / "cluster") as cluster:
        env = cluster_env(cluster, broker)
        with running_bridge(env, logs, "bridge-cluster-down") as bridge:
            readyz = bridge.url.removesuffix("/mcp") + "/readyz"
            async with httpx.AsyncClient(timeout=10) as http:

                async def redis_check() -> str:
                    return str((await http.get(readyz)).json()["redis"])

                assert await redis_check() == "ok"
                # One primary of three gone (no replica to take over): the cluster is
                # down once the others agree, and so is the bridge (no worker here, so
                # it was unready already: the Redis check is what changes).
                cluster.nodes[-1].kill()
                found = await eventually(
                    lambda: _not_ok(redis_check), 30, "/readyz to report the cluster down"
                )
                assert found.startswith(("cluster down", "unreachable")), found


async def _not_ok(check: Callable[[], Awaitable[str]]) -> str | None:
    found = await check()
    return None if found == "ok" else found


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({}, "broker_url must be set apart from a Redis Cluster"),
        ({"MCP_BRIDGE_BROKER_URL": "amqp://x"}, "result_backend must be set apart"),
        (
            {
                "MCP_BRIDGE_BROKER_URL": "amqp://x",
                "MCP_BRIDGE_RESULT_BACKEND": "rpc://",
                "MCP_BRIDGE_REDIS_SHARDS": "1",
            },
            "at least 2 on a Redis Cluster",
        ),
    ],
)
def test_a_cluster_registry_needs_a_broker_and_shards_of_its_own(
    extra: dict[str, str], named: str
) -> None:
    # Refused at start, in one line, before anything is served or connected.
    env = {**services.test_env("redis+cluster://:s3cret@127.0.0.1:1"), **extra}
    done = cli(env, "serve", "--port", "1")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert named in done.stderr
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr


#: Tasks created before a primary is killed (MCP_TEST_FAILOVER_TASKS, as test_sentinel's).
IN_FLIGHT = int(os.environ.get("MCP_TEST_FAILOVER_TASKS", "24"))


@pytest.mark.timeout(240)
async def test_after_a_primary_dies_its_replica_takes_over_and_nothing_is_lost(
    tmp_path: Path,
    own_redis: RedisServer,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    broker = own_redis
    with redis_cluster(tmp_path / "cluster", replicas=1) as cluster:
        env = cluster_env(cluster, broker, MCP_BRIDGE_LEASE_S="15")
        with (
            celery_worker(env, logs, 4, name="cluster-failover"),
            running_bridge(env, logs, "bridge-cluster-failover") as bridge,
        ):
            await _failover(cluster, env, bridge)


async def _failover(cluster: RedisCluster, env: dict[str, str], bridge: Bridge) -> None:
    keys = keys_of(env)

    def kill_the_owners_primary(client: RawClient) -> None:
        # The primary holding this owner's tasks, stream and channel.
        owner_key = keys.owner_tasks(f"session:{client.session_id}")
        with contextlib.closing(redis.RedisCluster("127.0.0.1", cluster.nodes[0].port)) as rc:
            port = rc.get_node_from_key(owner_key).port
        next(node for node in cluster.nodes if node.port == port).kill()

    figures = await core.failover(bridge.url, kill_the_owners_primary, IN_FLIGHT)
    print(f"Cluster, {figures}")


async def test_a_tls_cluster_is_checked_against_the_given_ca(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    broker = own_redis
    with redis_cluster(tmp_path / "cluster", tls=True) as cluster:
        assert cluster.url().startswith("rediss+cluster://")
        env = cluster_env(cluster, broker, MCP_BRIDGE_REDIS_CA_FILE=str(cluster.ca))
        with (
            celery_worker(env, logs, 2, name="cluster-tls"),
            running_bridge(env, logs, "bridge-cluster-tls") as bridge,
        ):
            await core.tasks_notify_and_list(bridge.url, owners=2)
        # Without the CA the certificate is not trusted, and nothing falls back to an
        # unchecked connection: the bridge is unready and says why.
        untrusted = cluster_env(cluster, broker)
        with running_bridge(untrusted, logs, "bridge-cluster-untrusted") as bridge:
            readyz = bridge.url.removesuffix("/mcp") + "/readyz"
            async with httpx.AsyncClient(timeout=10) as http:
                body = (await http.get(readyz)).json()
            assert "not trusted" in body["redis"], body


@pytest.mark.parametrize("args", [("tasks", "list"), ("tasks", "show", "abc.1")])
def test_the_operator_cli_says_an_unreachable_cluster_in_one_line(args: tuple[str, ...]) -> None:
    env = {
        **services.test_env(f"redis+cluster://:s3cret@127.0.0.1:{services.free_port()}"),
        "MCP_BRIDGE_BROKER_URL": "amqp://x",
        "MCP_BRIDGE_RESULT_BACKEND": "rpc://",
    }
    done = cli(env, *args)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Redis at redis+cluster://:**@127.0.0.1" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr


async def test_a_moved_slot_takes_its_streams_with_it(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    # A reshard moves the slot of an owner's keys and channel to another primary while the
    # owner's stream is open: the node gives the shard channel up (sunsubscribe), the bridge
    # subscribes it where it now lives, the stream resumes, and nothing is missed.
    logs = tmp_path / "logs"
    logs.mkdir()
    with redis_cluster(tmp_path / "cluster") as cluster:
        env = cluster_env(cluster, own_redis)
        keys = keys_of(env)
        with (
            celery_worker(env, logs, 2, name="cluster-reshard"),
            running_bridge(env, logs, "bridge-cluster-reshard") as bridge,
        ):
            async with connect(bridge.url) as client, anyio.create_task_group() as tg:
                recorder = Recorder(client)
                await tg.start(recorder.run)
                before = (await client.create_task("echo", {"text": "before"}))["taskId"]
                await recorder.wait_terminal({before}, 30)
                channel = keys.owner_channel(f"session:{client.session_id}")
                slot = key_slot(channel.encode())
                port = cluster.nodes[0].port
                with contextlib.closing(redis.RedisCluster("127.0.0.1", port)) as rc:
                    here = rc.nodes_manager.get_node_from_slot(slot).port
                cluster.move_slot(slot, next(n for n in cluster.nodes if n.port != here))
                after = (await client.create_task("echo", {"text": "after"}))["taskId"]
                await recorder.wait_terminal({before, after}, 30)
                tg.cancel_scope.cancel()
            assert "slot moved" in bridge.output()
    assert recorder.connects >= 2, "the stream should have ended and resumed"
    terminal = recorder.terminal()
    assert [n.status for n in terminal[before]] == ["completed"]
    assert [n.status for n in terminal[after]] == ["completed"]


@pytest.mark.filterwarnings("ignore:The experimental tasks API:DeprecationWarning")
async def test_an_existing_projects_workflow_runs_on_a_cluster_registry(tmp_path: Path) -> None:
    # examples/existing-project: its own app, broker and result backend (a plain Redis), the
    # bridge's registry on the Cluster; a chord as one MCP task (its book and the task's
    # hash in one slot), followed through the MCP SDK client.
    logs, data = tmp_path / "logs", tmp_path / "data"
    logs.mkdir()
    data.mkdir()
    with (
        redis_cluster(tmp_path / "cluster") as cluster,
        project_services(data, logs, registry=cluster) as project,
    ):
        result, _ = await completed(
            project.url,
            "survey",
            {"stations": ["north", "south", "east"], "seconds": 0.1},
            lambda seen: (4.0, 4.0, "4 of 4 parts done") in seen.progress,
        )
        assert result.structuredContent == {"stations": 3, "mean": 7.0}
        text = await failure_text(
            project.url, "survey", {"stations": ["north", "broken-7"], "seconds": 0.1}
        )
        assert text == "ValueError: station broken-7 does not answer"
