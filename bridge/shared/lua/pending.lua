-- The questions pending on an owner's legacy tasks, and where the owner's event stream
-- stands, in one step: every question is then either here or announced after that point.
-- KEYS[1] the owner's asking set  KEYS[2] the owner's event stream
-- ARGV[1] the task key prefix (``<prefix>:task:``)
-- Returns {last event id ("0-0" when none), then task id, input key, request JSON, ...};
-- tasks with nothing pending leave the set.
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local out = {newest[1] and newest[1][1] or '0-0'}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local pending = redis.call('HGETALL', ARGV[1] .. id .. ':inputs')
  if #pending == 0 then
    redis.call('SREM', KEYS[1], id)
  end
  for i = 1, #pending, 2 do
    out[#out + 1] = id
    out[#out + 1] = pending[i]
    out[#out + 1] = pending[i + 1]
  end
end
return out
