-- Take or renew the lease of a running tool body, by the Redis server's clock (so workers
-- and bridges never compare their own clocks).
-- KEYS[1] task hash   KEYS[2] lease set (zset: task id -> deadline ms)
-- ARGV[1] task id  ARGV[2] lease length ms
-- ARGV[3] holder ("" to renew; otherwise take the lease: count a run, record the holder)
-- ARGV[4] most runs allowed (taking the lease for one more run is refused)
-- Taking the lease also starts the run in the record, announced like a transition (the
-- worker's first registry call does both, one round trip): KEYS[3] the owner's event
-- stream; ARGV[5] worker name  ARGV[6] stream MAXLEN  ARGV[7] stream TTL ms
-- ARGV[8] the owner's pub/sub channel (ARGV[13] the command publishing on it)
-- ARGV[9] status message. Questions an earlier run left pending
-- (KEYS[5], the task's pending inputs) died with it: they are withdrawn (named in the
-- event, as transition.lua does).
-- KEYS[4] the owner's running tasks (zset: task id -> start ms)  ARGV[10] most tasks the
-- owner may run at once  ARGV[11] TTL ms of that set: taking the lease is refused (no run
-- counted, nothing announced) while the owner already runs that many other tasks, so one
-- owner cannot hold every worker. A member holding no lease any more (ended, or failed by
-- the reaper) is pruned on the way, so a missed removal (transition.lua) cannot block it.
-- ARGV[12] the owner the caller names, whose keys KEYS[3] and KEYS[4] are: taking the
-- lease for another owner than the task's is refused as if the task were gone.
-- Returns {status ("" when the task is gone), runs}, and when it announced the run also the
-- task's tool and Celery id; {status, runs, "", "", "busy"} when the owner is at its cap.
-- The event of a run names its holder (``holder``), so nothing has to parse the message.
-- Only a task that is not terminal holds a lease; a refused or stale call removes it.
local cur = redis.call('HGET', KEYS[1], 'status')
if (not cur) or is_terminal(cur) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {cur or '', 0}
end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[12] then
  return {'', 0}
end
local runs = tonumber(redis.call('HGET', KEYS[1], 'runs') or '0')
local now = now_ms()
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
  -- Announced as transition.lua announces a change.
  redis.call('HSET', KEYS[1], 'status', STATUS.WORKING, 'message', ARGV[9], 'worker', ARGV[5],
    'updated', now)
  local r = redis.call('HMGET', KEYS[1], 'owner', 'listed', 'tool', 'celery_id')
  local task = task_view(KEYS[1])
  task.holder = ARGV[3]
  local stale = redis.call('HKEYS', KEYS[5])
  if #stale > 0 then
    redis.call('DEL', KEYS[5])
    task.withdrawn = stale
  end
  announce(task, r[1], r[2] == '1', KEYS[3], ARGV[6], ARGV[7], ARGV[8], ARGV[13])
  return {STATUS.WORKING, runs, r[3] or '', r[4] or ''}
end
return {cur, runs}
