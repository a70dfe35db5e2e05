-- The task ids whose lease expired, by the Redis server's clock, oldest first.
-- KEYS[1] lease set (zset: task id -> deadline ms)   ARGV[1] most ids to return
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
