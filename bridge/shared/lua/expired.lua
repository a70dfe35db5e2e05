-- The task ids whose lease expired, by the Redis server's clock, oldest first.
-- KEYS[1] lease set (zset: task id -> deadline ms)   ARGV[1] most ids to return
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
