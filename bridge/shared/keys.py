"""Every Redis key the bridge and the workers use.

| key                          | type    | TTL                                                |
|------------------------------|---------|----------------------------------------------------|
| ``{p}:session:{sid}``        | hash    | ``session_ttl_s``, renewed on every request        |
| ``{p}:principal:{pr}:sessions``| zset  | ``session_ttl_s``, renewed with each of its        |
|                              |         | sessions; session id -> created ms (``pr`` is ""   |
|                              |         | for unauthenticated callers); pruned of ended      |
|                              |         | sessions when it reaches its limit                 |
| ``{p}:task:{task_id}``       | hash    | none while running; the task's ``ttl`` once final  |
| ``{p}:owner:{owner}:tasks``  | zset    | 2 x ``task_ttl_max_ms`` after the last create;     |
|                              |         | entries of expired tasks are dropped on list       |
| ``{p}:call:{owner}:{rid}``   | string  | the task id behind a running plain call (request   |
|                              |         | id ``rid`` as JSON); deleted when the call ends    |
| ``{p}:owner:{owner}:inflight``| zset   | 2 x ``task_ttl_max_ms`` after the last create;     |
|                              |         | task ids created and maybe running; ended ones are |
|                              |         | pruned when the owner reaches its in-flight limit  |
| ``{p}:owner:{owner}:rate:{m}``| string | 61 s; creations by the owner in clock minute ``m`` |
| ``{p}:owner:{owner}:running``| zset    | 2 x ``task_ttl_max_ms`` after a worker last took a |
|                              |         | lease for the owner; task id -> start (ms): its    |
|                              |         | tasks holding a worker (``max_running_per_owner``);|
|                              |         | removed at the end (ended ones also pruned when a  |
|                              |         | worker next takes a lease for the owner)           |
| ``{p}:owner:{owner}:usage``  | hash    | 2 x ``task_ttl_max_ms`` after the last create or   |
|                              |         | transition; bytes the owner holds: ``total``, and  |
|                              |         | task id -> bytes charged for that task (below)     |
| ``{p}:owner:{owner}:usage:expiry``| zset | as ``usage``; task id -> when its record expires |
|                              |         | (ms; ``inf`` while it runs)                        |
| ``{p}:task:{id}:inputs``    | hash    | questions a running tool asked and no one answered |
|                              |         | yet (key -> request); session TTL, gone at the end |
| ``{p}:task:{id}:answer:{k}`` | list    | the answer to question ``k``, for the asking worker|
| ``{p}:task:{id}:flow``      | hash    | 2 x ``task_ttl_max_ms`` after the last change; the |
|                              |         | Celery tasks of a workflow the task started, their |
|                              |         | states, counts and final results (flow.lua)        |
| ``{p}:owner:{owner}:asking`` | set     | session TTL after the last question; legacy tasks  |
|                              |         | that asked: members with nothing pending are       |
|                              |         | dropped when a GET stream reads the set            |
| ``{p}:probe``                | string  | 10 s; written by ``/readyz`` (a replica refuses it)|
| ``{p}:owner:{owner}:seq``    | string  | as ``tasks``; the counter that orders the owner's  |
|                              |         | tasks in its list (seeded from the list's last one |
|                              |         | when missing, so order survives its expiry)        |
| ``{p}:request-state-key``    | string  | none; the random HMAC key sealing ``requestState`` |
|                              |         | when ``request_state_secret`` is unset, made once  |
|                              |         | by the first bridge that needs it (lost: states in |
|                              |         | flight are refused, and a new key is made)         |
| ``{p}:events:{owner}``       | stream  | ``session_ttl_s`` after the last append; MAXLEN ~  |
| ``{p}:{db}:events:{owner}``  | pub/sub | (on a Cluster a shard channel in the owner's slot, |
|                              |         | ``{p}:{<n>}:{db}:events:{owner}``: SPUBLISH)       |
|                              |         | the owner's task events and the closing of its     |
|                              |         | sessions' GET streams, to the bridge processes     |
|                              |         | holding something of that owner (a stream, a       |
|                              |         | waiter, a task in flight they created: bridge.     |
|                              |         | listener). ``db``: the registry's database number: |
|                              |         | Redis pub/sub ignores databases, so deployments on |
|                              |         | two databases of one Redis would otherwise hear    |
|                              |         | each other's events                                |
| ``{p}:{db}:channel``         | pub/sub | nothing now; every bridge process stays subscribed |
|                              |         | (it keeps the listener in pub/sub mode, and hears  |
|                              |         | the events of workers of the previous version,     |
|                              |         | which published every event here, in an upgrade)   |
| ``{p}:leases``               | zset    | none; task id -> lease deadline (ms, Redis clock)  |
|                              |         | of each running tool body; entries leave when the  |
|                              |         | body ends or the reaper fails the task             |
|                              |         | (one set per shard: ``{p}:{<n>}:leases``)          |

The task hash fields are declared in ``bridge.shared.schema``. The Lua scripts are handed
every key they use from here, except the keys of other tasks and sessions they come across
(create.lua, list.lua, pending.lua, session.lua): those they build from the prefix they are
handed, ``task_prefix(owner)`` or ``session_prefix(principal)``, and ``inputs`` by appending
``:inputs``.

Byte accounting (``max_bytes_per_owner``): create.lua charges a task with its record's
fields (plus 200 bytes of field names and numbers) and the Celery message it queues (the
arguments); transition.lua adds what each change stores: a result, an error, a question,
and, for a change of status or a question, the event it appends to the owner's stream (or,
for a task outside the stream, its status message). Progress reports are not charged: the
stream's ``stream_maxlen`` bounds them, and ``max_progress_token_bytes`` their token. The
charge stays until the record expires (``usage:expiry``), though a question is gone at the
end and an event may be trimmed from the stream earlier: the count errs high, never low.
Expired tasks are subtracted by the next creates of the owner (at most 100 each). Sessions
are not charged: their number per principal and their size are capped instead
(``max_sessions_per_principal``, ``max_client_info_chars``), as are answers (one per
question asked, gone when the worker takes it).

Shards (``redis_shards``, for a Redis Cluster): with more than one, every key of a task, an
owner or a session carries a hash tag naming its shard, ``{prefix}:{<n>}:...``, so that every
script touches one slot. An owner's shard is a hash of the owner; its tasks' ids end in
``.<n>`` (``Keys.new_id``), so a task's keys are found from its id alone and lie in its
owner's slot; a session's id ends in its principal's shard. Leases are one set per shard
(``leases(n)``), which the reaper reads in turn. With one shard (a single Redis or a
Sentinel deployment) keys carry no tag and ids no suffix. The table shows one shard.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from mcp_celery_bridge.bridge.shared.settings import Settings


@dataclass(frozen=True)
class Keys:
    prefix: str
    #: The database of the registry's Redis (its URL's): it names the pub/sub channel.
    database: int = 0
    #: How many shards the keys are spread over (see above).
    shards: int = 1
    #: Events go on shard channels (SPUBLISH, in the owner's slot): on a Redis Cluster.
    sharded_channels: bool = False

    @classmethod
    def of(cls, settings: Settings) -> Keys:
        return cls(
            settings.key_prefix,
            settings.redis_database,
            settings.shards,
            sharded_channels=settings.redis_cluster,
        )

    @property
    def publish(self) -> str:
        """The command that publishes on ``owner_channel``."""
        return "SPUBLISH" if self.sharded_channels else "PUBLISH"

    # -- shards ----------------------------------------------------------------------------
    def shard_of(self, name: str) -> int:
        """The shard of an owner or a principal."""
        return zlib.crc32(name.encode()) % self.shards if self.shards > 1 else 0

    def shard_of_id(self, some_id: str) -> int:
        """The shard of a task or session id: the one it names, else (an id this deployment
        did not make, or made with one shard) a hash of it, so that any id maps to one slot."""
        if self.shards == 1:
            return 0
        _, dot, tail = some_id.rpartition(".")
        # ASCII digits only: isdigit() takes "²", which int() refuses.
        if dot and tail.isascii() and tail.isdigit() and str(int(tail)) == tail:
            if int(tail) < self.shards:
                return int(tail)
        return self.shard_of(some_id)

    def new_id(self, random_part: str, owner: str) -> str:
        """A task id (or a session id, for a principal) in ``owner``'s shard."""
        return random_part if self.shards == 1 else f"{random_part}.{self.shard_of(owner)}"

    def _at(self, shard: int) -> str:
        # The hash tag, with one shard none: keys as they were before shards.
        return f"{self.prefix}:" if self.shards == 1 else f"{self.prefix}:{{{shard}}}:"

    def _owner(self, owner: str) -> str:
        return f"{self._at(self.shard_of(owner))}owner:{owner}"

    # -- keys ------------------------------------------------------------------------------
    def session_prefix(self, principal: str) -> str:
        """The sessions of ``principal`` are this plus their id (session.lua prunes so)."""
        return f"{self._at(self.shard_of(principal))}session:"

    def session(self, sid: str) -> str:
        return f"{self._at(self.shard_of_id(sid))}session:{sid}"

    def task_prefix(self, owner: str) -> str:
        """The tasks of ``owner`` are this plus their id (the scripts that meet other tasks
        of an owner build their keys so)."""
        return f"{self._at(self.shard_of(owner))}task:"

    def task(self, task_id: str) -> str:
        return f"{self._at(self.shard_of_id(task_id))}task:{task_id}"

    def inputs(self, task_id: str) -> str:
        # Derived from the task key: pending.lua finds it the same way (from ``task_prefix``).
        return f"{self.task(task_id)}:inputs"

    def flow(self, task_id: str) -> str:
        return f"{self.task(task_id)}:flow"

    def answer(self, task_id: str, key: str) -> str:
        return f"{self.task(task_id)}:answer:{key}"

    def principal_sessions(self, principal: str) -> str:
        return f"{self._at(self.shard_of(principal))}principal:{principal}:sessions"

    def usage(self, owner: str) -> str:
        return f"{self._owner(owner)}:usage"

    def usage_expiry(self, owner: str) -> str:
        return f"{self._owner(owner)}:usage:expiry"

    def owner_tasks(self, owner: str) -> str:
        return f"{self._owner(owner)}:tasks"

    def owner_seq(self, owner: str) -> str:
        return f"{self._owner(owner)}:seq"

    def call(self, owner: str, request_id: str) -> str:
        return f"{self._at(self.shard_of(owner))}call:{owner}:{request_id}"

    def asking(self, owner: str) -> str:
        return f"{self._owner(owner)}:asking"

    def inflight(self, owner: str) -> str:
        return f"{self._owner(owner)}:inflight"

    def running(self, owner: str) -> str:
        return f"{self._owner(owner)}:running"

    def rate(self, owner: str, minute: int) -> str:
        return f"{self._owner(owner)}:rate:{minute}"

    def request_state_key(self) -> str:
        return f"{self.prefix}:request-state-key"

    def events(self, owner: str) -> str:
        return f"{self._at(self.shard_of(owner))}events:{owner}"

    def channel(self) -> str:
        return f"{self.prefix}:{self.database}:channel"

    def owner_channel(self, owner: str) -> str:
        # In the owner's slot, where the scripts that announce its events run.
        return f"{self._at(self.shard_of(owner))}{self.database}:events:{owner}"

    def probe(self) -> str:
        return f"{self.prefix}:probe"

    def leases(self, shard: int = 0) -> str:
        return f"{self._at(shard)}leases"

    def leases_of(self, task_id: str) -> str:
        """The lease set a task's lease is in (its shard's)."""
        return self.leases(self.shard_of_id(task_id))
