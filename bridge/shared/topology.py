"""Where the registry's Redis is: one server (``redis://``, ``rediss://``, ``unix://``), a
primary found through Redis Sentinel, or a Redis Cluster; and how Celery is told the same.

A Sentinel deployment is one URL, so that everything that takes a Redis URL takes it::

    sentinel://[[user]:password@]host1:26379,host2:26379,host3:26379/0?master=mymaster
    sentinels://...   (the same over TLS: the sentinels, the primary and its replicas)

``password`` (and ``user``) authenticate to the primary and its replicas; a
``sentinel_password`` query parameter authenticates to the sentinels when they require it.
Clients ask the sentinels for the primary and ask again after a failover (redis-py's
``SentinelConnectionPool``, kombu's and Celery's sentinel transports), so bridges and workers
follow the new primary by themselves.

A Redis Cluster is one URL too, naming some of its nodes (the client learns the rest)::

    redis+cluster://[[user]:password@]host1:6379,host2:6379   (rediss+cluster:// for TLS)

It holds the registry only: Celery's Redis transport and result backend know no Cluster, so
the broker and the result backend are set apart (RabbitMQ, or a Redis that is not one)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

SCHEME = "sentinel://"
#: The same over TLS: the sentinels, the primary and its replicas all speak TLS.
TLS_SCHEME = "sentinels://"
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


@dataclass(frozen=True)
class Sentinels:
    hosts: list[tuple[str, int]]
    master: str
    db: int
    username: str | None
    password: str | None
    sentinel_password: str | None
    tls: bool = False

    def celery_url(self) -> str:
        """The same deployment as kombu's and Celery's sentinel transports take it: one
        ``sentinel://`` URL per sentinel, joined by ``;`` (the master name goes in the
        transport options: ``celery_options``)."""
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:{self.password}@"
        return ";".join(f"sentinel://{auth}{host}:{port}/{self.db}" for host, port in self.hosts)

    def celery_options(self, ca_file: str = "") -> dict[str, Any]:
        options: dict[str, Any] = {"master_name": self.master}
        sentinel_kwargs: dict[str, Any] = {}
        if self.sentinel_password:
            sentinel_kwargs["password"] = self.sentinel_password
        if self.tls:
            # To the sentinels; the primary's connections take broker_use_ssl (settings).
            sentinel_kwargs.update(ssl=True, ssl_cert_reqs="required", ssl_ca_certs=ca_file or None)
        if sentinel_kwargs:
            options["sentinel_kwargs"] = sentinel_kwargs
        return options


@dataclass(frozen=True)
class _Parts:
    """A multi-host URL's parts: ``scheme://[user[:password]@]h1:p1,h2:p2[/path][?query]``."""

    hosts: list[tuple[str, int]]
    username: str | None
    password: str | None
    path: str
    query: dict[str, list[str]]


def _parts(rest: str, kind: str, default_port: int) -> _Parts:
    """The parts of a URL of ``kind`` after its scheme; ValueError when it names no host or
    a bad one."""
    rest, _, query = rest.partition("?")
    userinfo, _, rest = rest.rpartition("@")
    hosts_part, _, path = rest.partition("/")
    hosts = []
    for item in filter(None, hosts_part.split(",")):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", str(default_port))
        if not port.isdigit():
            raise ValueError(f"a {kind} URL has a bad host:port: {item!r}")
        hosts.append((host.strip("[]"), int(port)))
    if not hosts:
        raise ValueError(f"a {kind} URL needs at least one host:port")
    username, password = None, None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    return _Parts(hosts, username, password, path.strip("/"), parse_qs(query))


def sentinels(url: str) -> Sentinels | None:
    """The Sentinel deployment ``url`` names, or None for a plain Redis URL. Raises
    ValueError for a ``sentinel://`` URL that names no host or no master."""
    scheme = next((s for s in (SCHEME, TLS_SCHEME) if url.startswith(s)), None)
    if scheme is None:
        return None
    parts = _parts(url[len(scheme) :], f"{scheme} Redis", 26379)
    master = parts.query.get("master", [""])[0]
    if not master:
        raise ValueError("a sentinel:// Redis URL needs ?master=<the primary's name>")
    return Sentinels(
        hosts=parts.hosts,
        master=master,
        db=int(parts.path) if parts.path.isdigit() else 0,
        username=parts.username,
        password=parts.password,
        sentinel_password=parts.query.get("sentinel_password", [None])[0],
        tls=scheme == TLS_SCHEME,
    )


@dataclass(frozen=True)
class Cluster:
    hosts: list[tuple[str, int]]
    username: str | None
    password: str | None
    tls: bool


def cluster(url: str) -> Cluster | None:
    """The Redis Cluster ``url`` names, or None for another URL. Raises ValueError for a
    cluster URL that names no node."""
    scheme = next((s for s in CLUSTER_SCHEMES if url.startswith(s)), None)
    if scheme is None:
        return None
    parts = _parts(url[len(scheme) :], "Redis Cluster", 6379)
    if parts.path not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    return Cluster(parts.hosts, parts.username, parts.password, tls=scheme.startswith("rediss"))


def celery_url(url: str) -> str:
    """``url`` as Celery takes it (a Sentinel URL rewritten; any other as it is)."""
    found = sentinels(url)
    return found.celery_url() if found is not None else url


def celery_options(url: str, ca_file: str = "") -> dict[str, Any]:
    """The transport options Celery needs for ``url`` (a Sentinel's master name, and how to
    reach its sentinels)."""
    if url.startswith((SCHEME, TLS_SCHEME)) and "?" in url:
        found = sentinels(url)
        return found.celery_options(ca_file) if found is not None else {}
    return {}


_PASSWORD = re.compile(r"(://[^:/@;,]*:)[^@/;]*@")
_QUERY_SECRET = re.compile(r"((?:^|[?&])sentinel_password=)[^&]*")


def shown(url: str) -> str:
    """``url`` as logs, CLI output and health answers may show it: passwords masked."""
    return _QUERY_SECRET.sub(r"\1**", _PASSWORD.sub(r"\1**@", url))
