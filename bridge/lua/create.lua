-- Create a task record, and index it under its owner when it is listed.
-- KEYS[1] task hash   KEYS[2] owner index (zset)   KEYS[3] global sequence counter
-- ARGV[1] task id  ARGV[2] owner  ARGV[3] tool  ARGV[4] celery id  ARGV[5] ttl ms
-- ARGV[6] poll interval ms  ARGV[7] hidden ("1" or "0")  ARGV[8] status message
-- ARGV[9] owner index TTL ms  ARGV[10] listed ("1": in the owner's list and event stream,
-- the legacy era's view; modern-era tasks and plain calls are neither)
-- Returns {created_ms, seq}, or an error when the id is taken.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('task id already exists')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1],
  'id', ARGV[1], 'owner', ARGV[2], 'tool', ARGV[3], 'celery_id', ARGV[4],
  'status', 'working', 'message', ARGV[8], 'created', now, 'updated', now,
  'ttl', ARGV[5], 'poll', ARGV[6], 'hidden', ARGV[7], 'listed', ARGV[10], 'seq', seq)
if ARGV[10] == '1' then
  redis.call('ZADD', KEYS[2], seq, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[9])
end
return {now, seq}
