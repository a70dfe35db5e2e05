-- Create a task record, and index it under its owner when it is listed.
-- KEYS[1] task hash   KEYS[2] owner index (zset)   KEYS[3] the owner's sequence counter
-- ARGV[1] task id  ARGV[2] owner  ARGV[3] tool  ARGV[4] celery id  ARGV[5] ttl ms
-- ARGV[6] poll interval ms  ARGV[7] hidden ("1" or "0")  ARGV[8] status message
-- ARGV[9] owner index TTL ms  ARGV[10] listed ("1": in the owner's list and event stream,
-- the legacy era's view; modern-era tasks and plain calls are neither)
-- KEYS[4] the owner's in-flight set (zset)  KEYS[5] the owner's creations this minute
-- ARGV[11] most tasks in flight per owner  ARGV[12] most creations per owner per minute
-- ARGV[13] task hash key prefix (to find which in-flight tasks have ended)
-- ARGV[14] the progressToken of the request that made the task, as JSON ("" for none)
-- ARGV[15] "1" when the caller can answer questions the tool asks (elicitation)
-- KEYS[6] the Celery queue (list)  ARGV[16] the Celery message to push onto it, or "" when
-- the bridge publishes through Celery itself (a broker other than this Redis)
-- KEYS[7] the owner's usage (hash: "total" and task id -> bytes charged)
-- KEYS[8] when each charged task's bytes leave Redis (zset: task id -> ms, inf while running)
-- ARGV[17] most bytes an owner may hold  ARGV[18] the protocol era that made the task
-- Returns {created_ms, seq}; refused(which, limit) at a limit; an error when the id is taken.
if redis.call('EXISTS', KEYS[1]) == 1 then
  -- The same call again (a client retry of a script whose reply was lost): it happened
  -- once, answer as then; the message is not queued twice.
  local same = redis.call('HMGET', KEYS[1], 'celery_id', 'created', 'seq')
  if same[1] == ARGV[4] then
    return {tonumber(same[2]), tonumber(same[3])}
  end
  return redis.error_reply('task id already exists')
end
if tonumber(redis.call('GET', KEYS[5]) or '0') >= tonumber(ARGV[12]) then
  return refused('creations-per-minute', ARGV[12])
end
local most = tonumber(ARGV[11])
if redis.call('ZCARD', KEYS[4]) >= most then
  -- Only at the limit is the set pruned of tasks that have ended (or expired), so a create
  -- costs O(1) until then and O(limit) at worst.
  for _, tid in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    local st = redis.call('HGET', ARGV[13] .. tid, 'status')
    if (not st) or is_terminal(st) then
      redis.call('ZREM', KEYS[4], tid)
    end
  end
  if redis.call('ZCARD', KEYS[4]) >= most then
    return refused('tasks-in-flight', ARGV[11])
  end
end
local now = now_ms()
-- The byte budget: tasks whose record has expired no longer count (at most 100 are dropped
-- per create, so the cost stays bounded; the rest go on the next creates).
for _, tid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', now, 'LIMIT', 0, 100)) do
  local freed = tonumber(redis.call('HGET', KEYS[7], tid) or '0')
  redis.call('HINCRBY', KEYS[7], 'total', -freed)
  redis.call('HDEL', KEYS[7], tid)
  redis.call('ZREM', KEYS[8], tid)
end
-- What this create stores: the record (its fields, and about 200 bytes of numbers and
-- field names) and the queued message with the arguments.
local charge = 200 + #ARGV[1] + #ARGV[2] + #ARGV[3] + #ARGV[4] + #ARGV[8] + #ARGV[14] + #ARGV[16]
if tonumber(redis.call('HGET', KEYS[7], 'total') or '0') + charge > tonumber(ARGV[17]) then
  return refused('bytes', ARGV[17])
end
redis.call('HINCRBY', KEYS[7], 'total', charge)
redis.call('HSET', KEYS[7], ARGV[1], charge)
redis.call('ZADD', KEYS[8], 'inf', ARGV[1])
redis.call('PEXPIRE', KEYS[7], ARGV[9])
redis.call('PEXPIRE', KEYS[8], ARGV[9])
redis.call('INCR', KEYS[5])
redis.call('PEXPIRE', KEYS[5], 61000)
redis.call('ZADD', KEYS[4], now, ARGV[1])
redis.call('PEXPIRE', KEYS[4], ARGV[9])
if redis.call('EXISTS', KEYS[3]) == 0 then
  -- Per owner, not one counter for the deployment (a hot key, in another slot of a
  -- Cluster); when it has expired (or the owner's tasks were numbered by the counter of the
  -- deployment, before), it goes on from the owner's last listed task.
  local last = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if last[2] then redis.call('SET', KEYS[3], last[2]) end
end
local seq = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[9])
redis.call('HSET', KEYS[1],
  'id', ARGV[1], 'owner', ARGV[2], 'tool', ARGV[3], 'celery_id', ARGV[4],
  'status', STATUS.WORKING, 'message', ARGV[8], 'created', now, 'updated', now,
  'ttl', ARGV[5], 'poll', ARGV[6], 'hidden', ARGV[7], 'listed', ARGV[10], 'seq', seq,
  'ptoken', ARGV[14], 'can_ask', ARGV[15], 'era', ARGV[18])
if ARGV[10] == '1' then
  redis.call('ZADD', KEYS[2], seq, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[9])
end
if ARGV[16] ~= '' then
  -- What kombu's Redis transport does to publish (LPUSH; workers BRPOP): recorded and
  -- queued in one step.
  redis.call('LPUSH', KEYS[6], ARGV[16])
end
return {now, seq}
