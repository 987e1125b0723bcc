-- Store one event atomically.
-- The event goes to the global stream that every server replica reads and, under
-- the same id, to its owner's and its task's history streams (and its workflow's,
-- when its task continues another one), so live delivery and replay can never disagree.
--
-- KEYS: 1 global stream, 2 user stream, 3 task stream, 4 task hash,
--       5 confirmation hash, 6 producer sequence key, 7 running-task lease zset,
--       8 workflow stream, 9 workflow hash (the workflow's first task, when that is
--       another task) ('' when not applicable)
-- ARGV: 1 payload (JSON without id), 2 owner, 3 event type, 4 terminal ('1'/'0'),
--       5 producer sequence number (''), 6 global maxlen, 7 history maxlen, 8 ttl,
--       9 task id (''), 10 lease seconds ('' = no lease change), 11 now (Unix seconds),
--       12 key prefix, 13 workflow id ('')
-- Stream entries hold the payload (d), its routing: owner (u), task (t) and workflow (w),
-- and its type (y).
-- Returns {id or '', cancelled '1' or ''}; id is '' when the event was dropped.
local payload, owner, etype, terminal, seq = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ttl, task_id, lease, now = tonumber(ARGV[8]), ARGV[9], ARGV[10], tonumber(ARGV[11])
local task, flow = KEYS[4], KEYS[9]

local cancelled = ''
if task ~= '' then
  local t = redis.call('HMGET', task, 'cancel', 'final')
  if t[1] then cancelled = '1' end
  -- after a task's terminal event it says nothing more (task_failure may fire twice)
  if t[2] then return {'', cancelled} end
end
-- nor does a workflow after its own
if flow ~= '' and redis.call('HEXISTS', flow, 'final') == 1 then return {'', cancelled} end

-- a batch retried by the same worker process: this event is stored already
if seq ~= '' then
  local last = redis.call('GET', KEYS[6])
  if last and tonumber(last) >= tonumber(seq) then return {'', cancelled} end
  redis.call('SET', KEYS[6], seq, 'EX', ttl)
end

local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], '*', 'd', payload, 'u', owner, 't', task_id,
                      'w', ARGV[13], 'y', etype)
local with_id = '{"id":"' .. id .. '",' .. string.sub(payload, 2)

-- the latest state, for a page opened late; a hash outlives its longest question
local function keep_state(hash)
  if terminal == '1' then
    redis.call('HSET', hash, 'final', etype, 'state:final', with_id)
  elseif etype == 'task_progress' then
    redis.call('HSET', hash, 'state:progress', with_id)
  elseif etype == 'task_step_result' then
    redis.call('HSET', hash, 'state:step', with_id)
  end
  if redis.call('TTL', hash) < ttl then redis.call('EXPIRE', hash, ttl) end
end

if task ~= '' then
  if owner ~= '' then redis.call('HSETNX', task, 'owner', owner) end
  keep_state(task)
  -- nobody will wait for these answers any more
  if terminal == '1' then close_task_confirmations(ARGV[12], task_id, 'closed', nil, ttl) end
end
if flow ~= '' and etype ~= 'heartbeat' then keep_state(flow) end

-- a running task holds a lease that its heartbeats renew; servers report it lost
-- when the lease runs out. A task waiting on a deferred question holds none.
if KEYS[7] ~= '' and task_id ~= '' then
  if terminal == '1' or etype == 'task_waiting' then
    redis.call('ZREM', KEYS[7], task_id)
  elseif lease ~= '' then
    redis.call('ZADD', KEYS[7], now + tonumber(lease), task_id)
  end
end

-- heartbeats are live-only: they would crowd real events out of the history
if etype ~= 'heartbeat' then
  for _, i in ipairs({2, 3, 8}) do
    if KEYS[i] ~= '' then
      redis.pcall('XADD', KEYS[i], 'MAXLEN', '~', ARGV[7], id, 'd', payload, 'u', owner, 't', task_id,
                  'w', ARGV[13], 'y', etype)
      redis.call('EXPIRE', KEYS[i], ttl)
    end
  end
end
if KEYS[5] ~= '' then
  redis.call('HSET', KEYS[5], 'event_id', id, 'event', payload)
end
return {id, cancelled}
