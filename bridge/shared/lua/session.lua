-- Open a session, unless its principal already has the most sessions allowed.
-- KEYS[1] session hash   KEYS[2] the principal's sessions (zset: session id -> created ms)
-- ARGV[1] session id  ARGV[2] most sessions per principal  ARGV[3] session TTL ms
-- ARGV[4] session hash key prefix (to find which sessions have ended)
-- ARGV[5..] the session hash, as field, value pairs
-- Returns the created time (ms), or refused('sessions', limit).
local most = tonumber(ARGV[2])
if redis.call('ZCARD', KEYS[2]) >= most then
  -- Only at the limit is the set pruned of sessions deleted or expired, so an initialize
  -- costs O(1) until then and O(limit) at worst.
  for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if redis.call('EXISTS', ARGV[4] .. sid) == 0 then
      redis.call('ZREM', KEYS[2], sid)
    end
  end
  if redis.call('ZCARD', KEYS[2]) >= most then
    return refused('sessions', ARGV[2])
  end
end
local now = now_ms()
redis.call('HSET', KEYS[1], 'created', now, unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return now
