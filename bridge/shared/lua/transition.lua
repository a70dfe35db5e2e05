-- Move a task to a new status in one step, and announce it.
-- A terminal status (TERMINAL, from the prelude) is final: later calls change nothing.
-- KEYS[1] task hash   KEYS[2] the owner's event stream   KEYS[3] the task's pending inputs
-- KEYS[4] the owner's usage  KEYS[5] its expiry set  KEYS[6] the lease set
-- KEYS[7] the owner's running tasks  KEYS[8] the owner's asking set (all in bridge.shared.keys)
-- ARGV[1] new status  ARGV[2] status message ("" keeps the current one)
-- ARGV[3] result JSON ("" for none)  ARGV[4] error JSON ("" for none)
-- ARGV[5] worker name ("" for none)  ARGV[6] stream MAXLEN  ARGV[7] stream TTL ms
-- ARGV[8] the owner's pub/sub channel (ARGV[18] the command publishing on it)  ARGV[9] "1" to apply only when the message (or progress) changes
-- ARGV[10] progress done ("" for none)  ARGV[11] progress total ("" for none): kept only
--   when it increases, and then announced with the event (so notifications/progress only
--   ever increase, and stop with the terminal status, which no later call can leave)
-- ARGV[13] input key and ARGV[14] input request JSON ("" for none): a question the tool
--   asks; it joins the task's pending inputs (KEYS[3]) and is announced with the event, so
--   a legacy session's stream carries it to the client; a legacy task's owner also lists
--   the task as asking (KEYS[8]), so a GET stream opened later finds the question
-- ARGV[15] input key to withdraw ("" for none): the asking worker gives up on a question;
--   applies only while that question is pending (an answer that came first wins)
-- While any question is pending, the task waits for input: ``working`` becomes
-- ``input_required`` (a progress report keeps its text; other messages name the question).
-- Questions withdrawn by the call (ARGV[15], or all pending ones at a terminal status) are
-- named in the event (``withdrawn``), so the streams that carried them can take them back.
-- ARGV[16] most bytes the task's owner may hold: what the call stores (result, error,
--   question, and the event, or the message of an unlisted task) is charged to the owner's
--   usage (KEYS[4], see create.lua); a result that would exceed it is replaced by a short
--   error, and the task fails
-- ARGV[12] the task id, to apply only when its lease (in KEYS[6]) has expired by the server
--   clock, dropping that lease ("" for any other call). The reaper fails lost tasks this way,
--   so several bridges reaping at once, or a renewal racing the reaper, change a task at
--   most once.
-- ARGV[17] the owner the caller names (KEYS[2], [4], [5], [7] and [8] are its keys): a call
--   naming another owner than the task's changes nothing, so no caller can charge or notify
--   the wrong owner.
-- Returns {applied (0/1), status after the call ("" when the task does not exist), event id},
-- and when applied also the task's tool, Celery id and owner (for the caller's log line).
local now = now_ms()
if ARGV[12] ~= '' then
  local deadline = redis.call('ZSCORE', KEYS[6], ARGV[12])
  if (not deadline) or tonumber(deadline) > now then
    return {0, redis.call('HGET', KEYS[1], 'status') or '', ''}
  end
  redis.call('ZREM', KEYS[6], ARGV[12])
end
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then
  return {0, '', ''}
end
if is_terminal(cur) then
  return {0, cur, ''}
end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[17] then
  return {0, cur, ''}
end
local inputs = KEYS[3]
local withdrawn = {}
if ARGV[15] ~= '' then
  if redis.call('HDEL', inputs, ARGV[15]) == 0 then
    return {0, cur, ''}
  end
  withdrawn[1] = ARGV[15]
end
local status = ARGV[1]
local message, result, err = ARGV[2], ARGV[3], ARGV[4]
if status == STATUS.WORKING and redis.call('EXISTS', inputs) == 1 then
  status = STATUS.INPUT_REQUIRED
  if ARGV[10] == '' then
    local left = redis.call('HVALS', inputs)
    message = 'waiting for input: ' .. #left .. ' questions'
    local ok, request = pcall(cjson.decode, left[1])
    if #left == 1 and ok and type(request) == 'table' and type(request.params) == 'table'
        and type(request.params.message) == 'string' then
      message = 'waiting for input: ' .. request.params.message
    end
  end
end
local usage = KEYS[4]
local task_id = redis.call('HGET', KEYS[1], 'id')
local charged = redis.call('HEXISTS', usage, task_id) == 1
local terminal = is_terminal(status)
if charged and terminal and result ~= '' then
  local used = tonumber(redis.call('HGET', usage, 'total') or '0')
  if used + #result + #err > tonumber(ARGV[16]) then
    message = 'the result (' .. #result .. ' bytes) exceeds the storage budget of its owner ('
      .. ARGV[16] .. ' bytes); free some by letting finished tasks expire'
    result = cjson.encode({content = {{type = 'text', text = message}}, isError = true})
    status = STATUS.FAILED
  end
end
local progressed = false
if ARGV[10] ~= '' then
  progressed = tonumber(ARGV[10]) > tonumber(redis.call('HGET', KEYS[1], 'progress') or '-1')
end
if ARGV[9] == '1' and cur == status and not progressed
    and redis.call('HGET', KEYS[1], 'message') == message then
  return {0, cur, ''}
end
if progressed then redis.call('HSET', KEYS[1], 'progress', ARGV[10], 'total', ARGV[11]) end
redis.call('HSET', KEYS[1], 'status', status, 'updated', now)
if message ~= '' then redis.call('HSET', KEYS[1], 'message', message) end
if result ~= '' then redis.call('HSET', KEYS[1], 'result', result) end
if err ~= '' then redis.call('HSET', KEYS[1], 'error', err) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'worker', ARGV[5]) end
if ARGV[13] ~= '' then
  redis.call('HSET', inputs, ARGV[13], ARGV[14])
  redis.call('PEXPIRE', inputs, ARGV[7])
end
if terminal then
  redis.call('PEXPIRE', KEYS[1], redis.call('HGET', KEYS[1], 'ttl'))
  for _, key in ipairs(redis.call('HKEYS', inputs)) do withdrawn[#withdrawn + 1] = key end
  redis.call('DEL', inputs)
  -- A finished task holds no lease: dropping it here saves the worker a round trip.
  redis.call('ZREM', KEYS[6], task_id)
  -- Nor a place among its owner's running tasks (lease.lua); that script also prunes ended
  -- tasks, should this step be missed.
  redis.call('ZREM', KEYS[7], task_id)
end
local r = redis.call('HMGET', KEYS[1], 'owner', 'listed', 'tool', 'celery_id', 'ttl')
local owner, listed = r[1], r[2] == '1'
local task = task_view(KEYS[1])
if ARGV[13] ~= '' then
  task.input = {key = ARGV[13], request = cjson.decode(ARGV[14])}
  if listed then
    redis.call('SADD', KEYS[8], task_id)
    redis.call('PEXPIRE', KEYS[8], ARGV[7])
  end
end
if #withdrawn > 0 then task.withdrawn = withdrawn end
if progressed then
  task.progress = tonumber(ARGV[10])
  task.total = tonumber(ARGV[11])
  task.ptoken = redis.call('HGET', KEYS[1], 'ptoken')
end
local event_id, body = announce(task, owner, listed, KEYS[2], ARGV[6], ARGV[7], ARGV[8], ARGV[18])
if charged then
  -- Charged until the record expires (an event may leave the stream earlier: the
  -- accounting errs on the side of the other owners).
  local charge = #result + #err + #ARGV[14]
  if cur ~= status or ARGV[13] ~= '' then
    -- Progress reports and message updates are not charged: a long task sends them by
    -- the thousand, and the stream's length bound (MAXLEN) keeps them in check.
    charge = charge + (listed and #body or #message)
  end
  redis.call('HINCRBY', usage, task_id, charge)
  redis.call('HINCRBY', usage, 'total', charge)
  if terminal then
    redis.call('ZADD', KEYS[5], now + tonumber(r[5]), task_id)
  end
end
return {1, status, event_id, r[3] or '', r[4] or '', owner or ''}
