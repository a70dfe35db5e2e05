-- Take or renew the lease of a running tool body, by the Redis server's clock (so workers
-- and bridges never compare their own clocks).
-- KEYS[1] task hash   KEYS[2] lease set (zset: task id -> deadline ms)
-- ARGV[1] task id  ARGV[2] lease length ms
-- ARGV[3] holder ("" to renew; otherwise take the lease: count a run, record the holder)
-- ARGV[4] most runs allowed (taking the lease for one more run is refused)
-- Taking the lease also starts the run in the record, announced like a transition (the
-- worker's first registry call does both, one round trip): KEYS[3] the owner's event
-- stream; ARGV[5] worker name  ARGV[6] stream MAXLEN  ARGV[7] stream TTL ms
-- ARGV[8] pub/sub channel  ARGV[9] status message. Questions an earlier run left pending
-- died with it: they are withdrawn (named in the event, as transition.lua does).
-- KEYS[4] the owner's running tasks (zset: task id -> start ms)  ARGV[10] most tasks the
-- owner may run at once  ARGV[11] TTL ms of that set: taking the lease is refused (no run
-- counted, nothing announced) while the owner already runs that many other tasks, so one
-- owner cannot hold every worker. A member holding no lease any more (ended, or failed by
-- the reaper) is pruned on the way, so a missed removal (transition.lua) cannot block it.
-- Returns {status ("" when the task is gone), runs}, and when it announced the run also the
-- task's tool and Celery id; {status, runs, "", "", "busy"} when the owner is at its cap.
-- Only a task that is not terminal holds a lease; a refused or stale call removes it.
local cur = redis.call('HGET', KEYS[1], 'status')
if (not cur) or cur == 'completed' or cur == 'failed' or cur == 'cancelled' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {cur or '', 0}
end
local runs = tonumber(redis.call('HGET', KEYS[1], 'runs') or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] ~= '' and KEYS[4] then
  local running = 0
  for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    if id ~= ARGV[1] then
      if redis.call('ZSCORE', KEYS[2], id) then
        running = running + 1
      else
        redis.call('ZREM', KEYS[4], id)
      end
    end
  end
  if running >= tonumber(ARGV[10]) then
    return {cur, runs, '', '', 'busy'}
  end
end
if ARGV[3] ~= '' then
  runs = runs + 1
  if runs > tonumber(ARGV[4]) then
    redis.call('ZREM', KEYS[2], ARGV[1])
    return {cur, runs}
  end
  redis.call('HSET', KEYS[1], 'runs', runs, 'holder', ARGV[3])
  if KEYS[4] then
    redis.call('ZADD', KEYS[4], now, ARGV[1])
    redis.call('PEXPIRE', KEYS[4], ARGV[11])
  end
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
if ARGV[3] ~= '' and KEYS[3] then
  -- The same announcement transition.lua makes (kept in step with it).
  redis.call('HSET', KEYS[1], 'status', 'working', 'message', ARGV[9], 'worker', ARGV[5],
    'updated', now)
  local r = redis.call('HMGET', KEYS[1], 'id', 'owner', 'message', 'created', 'ttl', 'poll',
    'listed', 'tool', 'celery_id')
  local task = {id = r[1], status = 'working', message = r[3], created = tonumber(r[4]),
    updated = now, ttl = tonumber(r[5]), poll = tonumber(r[6])}
  local stale = redis.call('HKEYS', KEYS[1] .. ':inputs')
  if #stale > 0 then
    redis.call('DEL', KEYS[1] .. ':inputs')
    task.withdrawn = stale
  end
  local event_id = ''
  if r[7] == '1' then
    event_id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'task', cjson.encode(task))
    redis.call('PEXPIRE', KEYS[3], ARGV[7])
  end
  redis.call('PUBLISH', ARGV[8], cjson.encode({owner = r[2], id = event_id, task = task}))
  return {'working', runs, r[8] or '', r[9] or ''}
end
return {cur, runs}
