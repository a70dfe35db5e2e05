-- Read a session and renew its idle timer, and that of its principal's session set (which
-- must live as long as any of the sessions it counts), when the caller is its principal:
-- a request the session would answer 404 (another principal's) renews nothing.
-- KEYS[1] session hash   KEYS[2] the caller's principal's sessions (zset)
-- ARGV[1] session TTL ms   ARGV[2] the caller's principal ("" when unauthenticated)
-- Returns the session hash as a flat field, value list (empty when the session is gone or
-- is another principal's).
local principal = redis.call('HGET', KEYS[1], 'principal')
if principal ~= ARGV[2] then
  return {}
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return redis.call('HGETALL', KEYS[1])
