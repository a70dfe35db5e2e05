-- Deliver the answer to a pending input of a task, exactly once.
-- KEYS[1] the task's pending inputs (hash)  KEYS[2] the list the asking worker waits on
-- ARGV[1] input key  ARGV[2] answer JSON  ARGV[3] answer list TTL ms
-- Returns 1 when delivered, 0 when the key is not pending (never asked, already answered,
-- withdrawn after a timeout, or the task ended).
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
