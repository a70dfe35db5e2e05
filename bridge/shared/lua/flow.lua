-- The parts of a workflow (a canvas a bridged task started) and how far they got: one MCP
-- task, many Celery tasks, each change atomic.
-- KEYS[1] the workflow hash (``Keys.flow``)  KEYS[2] the MCP task's hash
-- ARGV[1] operation  ARGV[2] TTL ms of the workflow hash (renewed by every change)
-- Fields: ``p:<celery id>`` a part's state: "q" known (published or embedded in a published
-- message), "s <holder>" started, "d" done; ``total`` counted parts, ``done`` finished
-- ones; ``final`` JSON list of the parts whose results are the workflow's (once the root's
-- run ended and said which); ``r:<celery id>`` a finished part's JSON result, kept for a
-- final part, or for any part while ``final`` is not known yet (a part may finish before
-- the root's run ends); ``handed`` set once the completion was handed out.
-- Operations:
--   add      ARGV[3..] pairs (celery id, "1" to count it): parts met; returns {done, total}
--   start    ARGV[3] celery id  ARGV[4] holder: returns the MCP task's status ("" gone)
--   finish   ARGV[3] celery id  ARGV[4] its JSON result
--   shape    ARGV[3] JSON list of the final parts' ids
-- finish and shape return {done, total} and, the one time every final part is done, the
-- final parts' results after them; finish of a part already done returns {}.
local op = ARGV[1]
local ttl = tonumber(ARGV[2])

local function tally()
  return {tonumber(redis.call('HGET', KEYS[1], 'done') or '0'),
          tonumber(redis.call('HGET', KEYS[1], 'total') or '0')}
end

-- The tally, with the final results appended the first time they are all there.
local function outcome()
  local reply = tally()
  local final = redis.call('HGET', KEYS[1], 'final')
  if not final or redis.call('HEXISTS', KEYS[1], 'handed') == 1 then return reply end
  local results = {}
  for _, id in ipairs(cjson.decode(final)) do
    local r = redis.call('HGET', KEYS[1], 'r:' .. id)
    if not r then return reply end
    table.insert(results, r)
  end
  redis.call('HSET', KEYS[1], 'handed', '1')
  for _, r in ipairs(results) do table.insert(reply, r) end
  return reply
end

local function is_final(id)
  local final = redis.call('HGET', KEYS[1], 'final')
  if not final then return true end -- not known yet: keep every result until it is
  for _, f in ipairs(cjson.decode(final)) do
    if f == id then return true end
  end
  return false
end

local reply
if op == 'add' then
  for i = 3, #ARGV, 2 do
    if redis.call('HSETNX', KEYS[1], 'p:' .. ARGV[i], 'q') == 1 and ARGV[i + 1] == '1' then
      redis.call('HINCRBY', KEYS[1], 'total', 1)
    end
  end
  reply = tally()
elseif op == 'start' then
  local cur = redis.call('HGET', KEYS[1], 'p:' .. ARGV[3])
  if not cur then redis.call('HINCRBY', KEYS[1], 'total', 1) end
  if cur ~= 'd' then redis.call('HSET', KEYS[1], 'p:' .. ARGV[3], 's ' .. ARGV[4]) end
  reply = redis.call('HGET', KEYS[2], 'status') or ''
elseif op == 'finish' then
  local cur = redis.call('HGET', KEYS[1], 'p:' .. ARGV[3])
  if cur == 'd' then return {} end -- a redelivered part counts once
  if not cur then redis.call('HINCRBY', KEYS[1], 'total', 1) end
  redis.call('HSET', KEYS[1], 'p:' .. ARGV[3], 'd')
  redis.call('HINCRBY', KEYS[1], 'done', 1)
  if is_final(ARGV[3]) then redis.call('HSET', KEYS[1], 'r:' .. ARGV[3], ARGV[4]) end
  reply = outcome()
elseif op == 'shape' then
  redis.call('HSET', KEYS[1], 'final', ARGV[3])
  local keep = {}
  for _, id in ipairs(cjson.decode(ARGV[3])) do keep['r:' .. id] = true end
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, 2) == 'r:' and not keep[field] then
      redis.call('HDEL', KEYS[1], field)
    end
  end
  reply = outcome()
else
  return redis.error_reply('unknown operation ' .. tostring(op))
end
redis.call('PEXPIRE', KEYS[1], ttl)
return reply
