-- A task record as one caller may see it, the owner checked before anything else is read:
-- another owner's task costs what an unknown one costs, and answers the same.
-- KEYS[1] task hash   KEYS[2] its pending questions (hash)
-- ARGV    the owners whose tasks the caller sees ("" among them: ownerless tasks)
-- Returns {} when the task is unknown, another owner's, or hidden (a plain call's record);
-- else {task hash, questions hash}, each as a flat field, value list.
local found = redis.call('HMGET', KEYS[1], 'owner', 'hidden')
local owner = found[1]
if not owner or found[2] == '1' then
  return {}
end
for i = 1, #ARGV do
  if ARGV[i] == owner then
    return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
  end
end
return {}
