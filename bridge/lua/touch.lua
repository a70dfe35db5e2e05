-- Read a session and renew its idle timer, and that of its principal's session set (which
-- must live as long as any of the sessions it counts).
-- KEYS[1] session hash   ARGV[1] session TTL ms   ARGV[2] key prefix
-- Returns the session hash as a flat field, value list (empty when the session is gone).
local h = redis.call('HGETALL', KEYS[1])
if #h > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  local principal = redis.call('HGET', KEYS[1], 'principal') or ''
  redis.call('PEXPIRE', ARGV[2] .. ':principal:' .. principal .. ':sessions', ARGV[1])
end
return h
