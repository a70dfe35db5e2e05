-- Deliver the answer to a pending input of a task, exactly once.
-- KEYS[1] the task's pending inputs (hash)  KEYS[2] the list the asking worker waits on
-- KEYS[3] the task hash
-- ARGV[1] input key  ARGV[2] answer JSON  ARGV[3] answer list TTL ms
-- ARGV[4..] the owners who may answer ("" among them: ownerless tasks); none: anyone (the
--           caller was allowed already, by a sealed request state)
-- Returns 1 when delivered, 0 when the key is not pending (never asked, already answered,
-- withdrawn after a timeout, or the task ended) or the task is another owner's: the owner is
-- read before anything else, so another owner's task answers like an unknown one.
if #ARGV > 3 then
  local owner = redis.call('HGET', KEYS[3], 'owner')
  local allowed = false
  for i = 4, #ARGV do
    if owner and ARGV[i] == owner then
      allowed = true
    end
  end
  if not allowed then
    return 0
  end
end
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
