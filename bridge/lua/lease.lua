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
-- Returns {status ("" when the task is gone), runs}, and when it announced the run also the
-- task's tool and Celery id. Only a task that is not terminal
-- holds a lease; a refused or stale call removes it.
local cur = redis.call('HGET', KEYS[1], 'status')
if (not cur) or cur == 'completed' or cur == 'failed' or cur == 'cancelled' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {cur or '', 0}
end
local runs = tonumber(redis.call('HGET', KEYS[1], 'runs') or '0')
if ARGV[3] ~= '' then
  runs = runs + 1
  if runs > tonumber(ARGV[4]) then
    redis.call('ZREM', KEYS[2], ARGV[1])
    return {cur, runs}
  end
  redis.call('HSET', KEYS[1], 'runs', runs, 'holder', ARGV[3])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
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
