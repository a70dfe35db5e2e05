"""Every Redis key the bridge and the workers use.

| key                          | type    | TTL                                                |
|------------------------------|---------|----------------------------------------------------|
| ``{p}:session:{sid}``        | hash    | ``session_ttl_s``, renewed on every request        |
| ``{p}:task:{task_id}``       | hash    | none while running; the task's ``ttl`` once final  |
| ``{p}:owner:{owner}:tasks``  | zset    | 2 x ``task_ttl_max_ms`` after the last create;     |
|                              |         | entries of expired tasks are dropped on list       |
| ``{p}:call:{owner}:{rid}``   | string  | the task id behind a running plain call (request   |
|                              |         | id ``rid`` as JSON); deleted when the call ends    |
| ``{p}:owner:{owner}:inflight``| zset   | 2 x ``task_ttl_max_ms`` after the last create;     |
|                              |         | task ids created and maybe running; ended ones are |
|                              |         | pruned when the owner reaches its in-flight limit  |
| ``{p}:owner:{owner}:rate:{m}``| string | 61 s; creations by the owner in clock minute ``m`` |
| ``{p}:task:{id}:inputs``    | hash    | questions a running tool asked and no one answered |
|                              |         | yet (key -> request); session TTL, gone at the end |
| ``{p}:task:{id}:answer:{k}`` | list    | the answer to question ``k``, for the asking worker|
| ``{p}:owner:{owner}:asking`` | set     | session TTL after the last question; legacy tasks  |
|                              |         | that asked: members with nothing pending are       |
|                              |         | dropped when a GET stream reads the set            |
| ``{p}:seq``                  | string  | none; the counter that orders tasks in lists       |
| ``{p}:events:{owner}``       | stream  | ``session_ttl_s`` after the last append; MAXLEN ~  |
| ``{p}:channel``              | pub/sub | every event, to every bridge process               |
| ``{p}:leases``               | zset    | none; task id -> lease deadline (ms, Redis clock)  |
|                              |         | of each running tool body; entries leave when the  |
|                              |         | body ends or the reaper fails the task             |

The task hash fields are listed in ``bridge.registry``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    def session(self, sid: str) -> str:
        return f"{self.prefix}:session:{sid}"

    def task(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    def inputs(self, task_id: str) -> str:
        # Derived from the task key: transition.lua finds it the same way.
        return f"{self.task(task_id)}:inputs"

    def answer(self, task_id: str, key: str) -> str:
        return f"{self.task(task_id)}:answer:{key}"

    def owner_tasks(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}:tasks"

    def call(self, owner: str, request_id: str) -> str:
        return f"{self.prefix}:call:{owner}:{request_id}"

    def asking(self, owner: str) -> str:
        # transition.lua derives it from the task key the same way.
        return f"{self.prefix}:owner:{owner}:asking"

    def inflight(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}:inflight"

    def rate(self, owner: str, minute: int) -> str:
        return f"{self.prefix}:owner:{owner}:rate:{minute}"

    def seq(self) -> str:
        return f"{self.prefix}:seq"

    def events(self, owner: str) -> str:
        return f"{self.prefix}:events:{owner}"

    def channel(self) -> str:
        return f"{self.prefix}:channel"

    def leases(self) -> str:
        return f"{self.prefix}:leases"
