"""Redis deployments beyond one server, built from the ``redis-server`` binary on free
loopback ports: a primary, a replica and three sentinels (``SentinelSet``); a Redis Cluster
of three primaries, with replicas or not (``RedisCluster``); a server that speaks only TLS
(``TlsRedis``)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.services import Process, RedisServer, free_port, spawn, wait_for

MASTER = "mcpmaster"


@dataclass
class SentinelSet:
    root: Path
    #: Every server and sentinel speaks only TLS (replication and the sentinels' links
    #: too), with certificates for 127.0.0.1 made by a CA of the test's own (``ca``).
    tls: bool = False
    primary: RedisServer = field(init=False)
    replica: RedisServer = field(init=False)
    sentinel_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    sentinels: list[Process] = field(default_factory=list)

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"sentinel{'s' if self.tls else ''}://{hosts}/{db}?master={MASTER}"

    @property
    def ca(self) -> Path:
        return self.root / "tls" / "ca.crt"

    def _tls(self) -> list[str]:
        """The TLS settings of every server and sentinel (as configuration lines)."""
        if not self.tls:
            return []
        tls = self.root / "tls"
        return [
            f"tls-cert-file {tls / 'server.crt'}",
            f"tls-key-file {tls / 'server.key'}",
            f"tls-ca-cert-file {self.ca}",
            "tls-auth-clients no",
            "tls-replication yes",
        ]

    def _server(self, name: str) -> RedisServer:
        port = free_port()
        options = [arg for line in self._tls() for arg in (f"--{line.split()[0]}", line.split()[1])]
        if self.tls:
            options += ["--port", "0", "--tls-port", str(port)]
        server = RedisServer(
            self.root / name, port, options=options, tls_ca=self.ca if self.tls else None
        )
        server.start()
        return server

    def _client(self, port: int, **kwargs: Any) -> redis.Redis:
        tls = {"ssl": True, "ssl_ca_certs": str(self.ca)} if self.tls else {}
        return redis.Redis(port=port, **tls, **kwargs)

    def start(self) -> None:
        for name in ("primary", "replica", "sentinels", "tls"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        if self.tls:
            certificates(self.root / "tls")
        self.primary = self._server("primary")
        self.replica = self._server("replica")
        client = self._client(self.replica.port)
        try:
            client.replicaof("127.0.0.1", self.primary.port)
            wait_for(
                lambda: client.info("replication").get("master_link_status") == "up",
                20,
                "the replica's link to the primary",
            )
        finally:
            client.close()
        for port in self.sentinel_ports:
            conf = self.root / "sentinels" / f"sentinel-{port}.conf"
            # A sentinel rewrites its configuration file as it learns: one each, writable.
            listen = f"port 0\ntls-port {port}\n" if self.tls else f"port {port}\n"
            conf.write_text(
                listen + "\n".join(self._tls()) + "\nbind 127.0.0.1\n"
                f"dir {self.root / 'sentinels'}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
            )
            log = self.root / "sentinels" / f"sentinel-{port}.log"
            self.sentinels.append(
                spawn("sentinel", ["redis-server", str(conf), "--sentinel"], {}, log)
            )
        wait_for(lambda: all(self._knows_replica(p) for p in self.sentinel_ports), 30, "sentinels")

    def _knows_replica(self, port: int) -> bool:
        try:
            with contextlib.closing(self._client(port, socket_connect_timeout=0.5)) as client:
                master = client.sentinel_master(MASTER)
        except redis.RedisError:
            return False
        others, replicas = master.get("num-other-sentinels", 0), master.get("num-slaves", 0)
        return int(others) >= 2 and int(replicas) >= 1

    def current_primary_port(self) -> int:
        """The primary's port as the first sentinel that answers names it."""
        for port in self.sentinel_ports:
            try:
                with contextlib.closing(self._client(port)) as client:
                    _, primary = client.sentinel_get_master_addr_by_name(MASTER)
                    return int(primary)
            except redis.RedisError:
                continue
        raise AssertionError("no sentinel answers")

    def stop(self) -> None:
        for proc in self.sentinels:
            proc.stop()
        for name in ("replica", "primary"):
            server: RedisServer | None = getattr(self, name, None)
            if server is not None:
                server.stop()


@contextlib.contextmanager
def sentinel_set(root: Path, tls: bool = False) -> Iterator[SentinelSet]:
    topology = SentinelSet(root, tls)
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


@dataclass
class RedisCluster:
    """Primaries sharing the 16,384 slots in equal ranges, each with ``replicas`` replicas."""

    root: Path
    #: Nodes that speak only TLS (clients and the cluster bus), with certificates made
    #: for 127.0.0.1 by a CA of the test's own (``ca``).
    tls: bool = False
    nodes: list[RedisServer] = field(default_factory=list)  # the primaries
    replicas: list[RedisServer] = field(default_factory=list)  # of nodes[i % len(nodes)]
    bus_ports: dict[int, int] = field(default_factory=dict)  # by port

    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"{'rediss' if self.tls else 'redis'}+cluster://{hosts}"

    @property
    def ca(self) -> Path:
        return self.root / "tls" / "ca.crt"

    def _tls_options(self, port: int) -> list[str]:
        if not self.tls:
            return []
        tls = self.root / "tls"
        return [
            "--port", "0", "--tls-port", str(port), "--tls-cluster", "yes",
            "--tls-cert-file", str(tls / "server.crt"), "--tls-key-file", str(tls / "server.key"),
            "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no",
        ]  # fmt: skip

    def _node(self, name: str) -> RedisServer:
        node_dir = self.root / name
        node_dir.mkdir(parents=True, exist_ok=True)
        bus = free_port()
        # The bus port is given: the default (port + 10000) may be taken, or past 65535.
        options = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(node_dir / "nodes.conf"),
            "--cluster-port", str(bus),
            "--cluster-node-timeout", "2000",
        ]  # fmt: skip
        port = free_port()
        options += self._tls_options(port)
        node = RedisServer(node_dir, port, options=options, tls_ca=self.ca if self.tls else None)
        node.start()
        self.bus_ports[node.port] = bus
        return node

    def start(self, size: int = 3, replicas: int = 0) -> None:
        if self.tls:
            (self.root / "tls").mkdir(parents=True, exist_ok=True)
            certificates(self.root / "tls")
        self.nodes = [self._node(f"node-{i}") for i in range(size)]
        self.replicas = [self._node(f"replica-{i}") for i in range(size * replicas)]
        everyone = self.nodes + self.replicas
        clients = [n.client(decode_responses=True) for n in everyone]
        try:
            per = 16384 // size
            for i, client in enumerate(clients[:size]):
                last = 16383 if i == size - 1 else (i + 1) * per - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
            first = self.nodes[0].port
            for client in clients[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", first, self.bus_ports[first])
            wait_for(
                lambda: all(_agrees(client, len(everyone)) for client in clients),
                30,
                "the cluster's nodes to agree",
            )
            for i, client in enumerate(clients[size:]):
                primary = clients[i % size].execute_command("CLUSTER", "MYID")
                client.execute_command("CLUSTER", "REPLICATE", primary)
            for client in clients[size:]:
                wait_for(
                    lambda c=client: c.info("replication").get("master_link_status") == "up",
                    30,
                    "a replica's link to its primary",
                )
        finally:
            for client in clients:
                client.close()

    def move_slot(self, slot: int, to: RedisServer) -> None:
        """Move ``slot`` and its keys to the primary ``to``, as a reshard does it: importing
        and migrating marks, MIGRATE of the keys in batches, then every node told."""
        tls = {"ssl": True, "ssl_ca_certs": str(self.ca)} if self.tls else {}
        with contextlib.closing(redis.RedisCluster("127.0.0.1", self.nodes[0].port, **tls)) as rc:
            owner = rc.nodes_manager.get_node_from_slot(slot).port
        clients = {n.port: n.client(decode_responses=True) for n in self.nodes}
        try:
            ids = {port: c.execute_command("CLUSTER", "MYID") for port, c in clients.items()}
            source, target = clients[owner], clients[to.port]
            target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
            source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to.port])
            while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                source.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
            for client in clients.values():
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[to.port])
        finally:
            for client in clients.values():
                client.close()

    def stop(self) -> None:
        for node in self.nodes + self.replicas:
            node.stop()


def _agrees(client: redis.Redis, size: int) -> bool:
    raw = str(client.execute_command("CLUSTER", "INFO"))
    info = dict(line.split(":", 1) for line in raw.split() if ":" in line)
    return info.get("cluster_state") == "ok" and info.get("cluster_known_nodes") == str(size)


@contextlib.contextmanager
def redis_cluster(
    root: Path, size: int = 3, replicas: int = 0, tls: bool = False
) -> Iterator[RedisCluster]:
    cluster = RedisCluster(root, tls)
    try:
        cluster.start(size, replicas)
        yield cluster
    finally:
        cluster.stop()


@dataclass
class TlsRedis:
    """A redis-server that speaks only TLS, its certificate (for 127.0.0.1) signed by a CA of
    the test's own, made with the openssl command."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: Process | None = None

    @property
    def ca(self) -> Path:
        return self.root / "ca.crt"

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._certificates()
        command = ["redis-server", "--port", "0", "--tls-port", str(self.port)]
        command += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--tls-cert-file", str(self.root / "server.crt")]
        command += ["--tls-key-file", str(self.root / "server.key")]
        command += ["--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no"]
        self.proc = spawn("redis-tls", command, {}, self.root / "redis.log")

        def answers() -> bool:
            assert self.proc is not None and self.proc.alive(), self.root / "redis.log"
            try:
                with contextlib.closing(
                    redis.Redis(
                        host="127.0.0.1", port=self.port, ssl=True, ssl_ca_certs=str(self.ca)
                    )
                ) as client:
                    return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, 10, f"the TLS redis-server on port {self.port}")

    def _certificates(self) -> None:
        certificates(self.root)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def certificates(root: Path) -> None:
    """A CA of the test's own (``ca.crt``) and a certificate for 127.0.0.1 it signed
    (``server.crt``, ``server.key``), made with the openssl command in ``root``."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        "/CN=mcp-test-ca", "-keyout", "ca.key", "-out", "ca.crt",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr",
    )  # fmt: skip
    (root / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-out", "server.crt", "-extfile", "san.cnf",
    )  # fmt: skip


@contextlib.contextmanager
def tls_redis(root: Path) -> Iterator[TlsRedis]:
    server = TlsRedis(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
