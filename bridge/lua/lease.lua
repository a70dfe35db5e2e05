-- Take or renew the lease of a running tool body, by the Redis server's clock (so workers
-- and bridges never compare their own clocks).
-- KEYS[1] task hash   KEYS[2] lease set (zset: task id -> deadline ms)
-- ARGV[1] task id  ARGV[2] lease length ms
-- ARGV[3] holder ("" to renew; otherwise take the lease: count a run, record the holder)
-- ARGV[4] most runs allowed (taking the lease for one more run is refused)
-- Returns {status ("" when the task is gone), runs}. Only a task that is not terminal
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
return {cur, runs}
