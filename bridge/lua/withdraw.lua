-- A worker gives up waiting for an input (timeout): the question is withdrawn, unless an
-- answer won the race, which is then returned instead.
-- KEYS[1] the task's pending inputs (hash)  KEYS[2] the answer list
-- ARGV[1] input key
-- Returns the answer JSON, or false when the question was withdrawn unanswered.
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  return false
end
return redis.call('RPOP', KEYS[2])
