-- Drop the lease of a run that ended without ending its task (a Celery retry), only while
-- that run is still the task's latest: a next run that took the lease first keeps it.
-- KEYS[1] task hash   KEYS[2] lease set   KEYS[3] the owner's running tasks
-- ARGV[1] task id   ARGV[2] the number of the run that ended (``runs`` when it started)
-- Returns 1 when the lease was dropped, 0 when a later run holds the task now.
if redis.call('HGET', KEYS[1], 'runs') ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
