-- One page of an owner's tasks in creation order; index entries whose task hash has
-- expired are removed on the way.
-- KEYS[1] owner index (zset, score = sequence number)
-- ARGV[1] exclusive lower bound of the sequence ("0" for the first page)
-- ARGV[2] page size  ARGV[3] task hash key prefix (the task id is appended)
-- Returns {last sequence seen, more (0/1), task JSON...}.
-- At most 20 x size entries are looked at per call, so a page stays cheap (Redis runs one
-- script at a time) even after many of an owner's tasks expired: the page is then short,
-- and its cursor goes on from where the look stopped.
local after = ARGV[1]
local size = tonumber(ARGV[2])
local budget = size * 20
local out = {}
while #out < size and budget > 0 do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. after, '+inf', 'WITHSCORES', 'LIMIT', 0, size)
  if #ids == 0 then break end
  for i = 1, #ids, 2 do
    local tid = ids[i]
    after = ids[i + 1]
    budget = budget - 1
    local task = task_view(ARGV[3] .. tid)
    if task then
      out[#out + 1] = cjson.encode(task)
      if #out == size then break end
    else
      redis.call('ZREM', KEYS[1], tid)
    end
    if budget == 0 then break end
  end
end
local more = 0
if (#out == size or budget == 0) and redis.call('ZCOUNT', KEYS[1], '(' .. after, '+inf') > 0 then
  more = 1
end
return {after, more, unpack(out)}
