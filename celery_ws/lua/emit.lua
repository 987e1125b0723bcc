-- Store one event atomically, and publish it to the servers that want it.
-- The event goes to its owner's and its task's history streams (and its workflow's,
-- when its task continues another one) under one id, taken from the first of them;
-- an event for everyone (no user, no task) to the broadcast stream. In open mode every
-- event also goes, first, to the firehose stream (KEYS 10), which then gives the id: one
-- id space for connections that may follow anything. Each stream is also the name of a
-- pub/sub channel (sharded on Redis Cluster; the firehose's is plain), and the event is
-- published on each stream's channel as it is stored there: a replica subscribes to the
-- channels of the users and tasks its connections follow, and reads a stream after the
-- last id it delivered whenever it (re)subscribes, so live delivery and replay can never
-- disagree. Heartbeats are published only (they would crowd real events out of the
-- history) and carry no id; broadcasts go out without their id (they are never
-- replayed to a client, and their stream's ids are not the user's).
--
-- KEYS: 1 broadcast stream, 2 user stream, 3 task stream, 4 task hash,
--       5 confirmation hash, 6 producer sequence key, 7 running-task lease zset,
--       8 workflow stream, 9 workflow hash (the workflow's first task, when that is
--       another task), 10 firehose stream (open mode); the home's placeholder for each
--       that does not apply
-- ARGV: 1 payload (JSON without id), 2 owner, 3 event type, 4 terminal ('1'/'0'),
--       5 producer sequence number (''), 6 (unused), 7 history maxlen, 8 ttl, 9 task id (''),
--       10 lease seconds ('' = no lease change), 11 now (Unix seconds), 12 the home's prefix,
--       13 workflow id (''), 14 'SPUBLISH' (a cluster) or 'PUBLISH'
-- Stream entries hold the payload (d), its routing: owner (u), task (t) and workflow (w),
-- and its type (y). A published message is a JSON array [id, owner, task, workflow, type],
-- a newline, and the event's JSON as clients get it.
-- Returns {id or '', cancelled '1' or ''}; id is '' when the event was dropped, or
-- for a heartbeat.
local payload, owner, etype, terminal, seq = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ttl, task_id, lease, now = tonumber(ARGV[8]), ARGV[9], ARGV[10], tonumber(ARGV[11])
local task, flow = KEYS[4], KEYS[9]

local cancelled = ''
if present(task) then
  local t = redis.call('HMGET', task, 'cancel', 'final')
  if t[1] then cancelled = '1' end
  -- after a task's terminal event it says nothing more (task_failure may fire twice)
  if t[2] then return {'', cancelled} end
end
-- nor does a workflow after its own
if present(flow) and redis.call('HEXISTS', flow, 'final') == 1 then return {'', cancelled} end

-- a batch retried by the same worker process: this event is stored already
if seq ~= '' then
  local last = redis.call('GET', KEYS[6])
  if last and tonumber(last) >= tonumber(seq) then return {'', cancelled} end
  redis.call('SET', KEYS[6], seq, 'EX', ttl)
end

local heartbeat = etype == 'heartbeat'
local streams = {}
for _, i in ipairs({10, 2, 3, 8, 1}) do
  if present(KEYS[i]) then streams[#streams + 1] = KEYS[i] end
end
local id = ''
if not heartbeat then
  for n, stream in ipairs(streams) do
    local add = n == 1 and redis.call or redis.pcall  -- a copy never fails the event
    local given = add('XADD', stream, 'MAXLEN', '~', ARGV[7], n == 1 and '*' or id, 'd', payload,
                      'u', owner, 't', task_id, 'w', ARGV[13], 'y', etype)
    if n == 1 then id = given end
    redis.call('EXPIRE', stream, ttl)
  end
end
local with_id = id == '' and payload or '{"id":"' .. id .. '",' .. string.sub(payload, 2)
local message = cjson.encode({id, owner, task_id, ARGV[13], etype}) .. '\n' ..
                (present(KEYS[1]) and payload or with_id)
for _, stream in ipairs(streams) do
  redis.call(stream == KEYS[10] and 'PUBLISH' or ARGV[14], stream, message)
end

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

if present(task) then
  if owner ~= '' then redis.call('HSETNX', task, 'owner', owner) end
  keep_state(task)
  -- nobody will wait for these answers any more
  if terminal == '1' then close_task_confirmations(ARGV[12], task_id, 'closed', nil, ttl) end
end
if present(flow) and etype ~= 'heartbeat' then keep_state(flow) end

-- a running task holds a lease that its heartbeats renew; servers report it lost
-- when the lease runs out. A task waiting on a deferred question holds none.
if present(KEYS[7]) and task_id ~= '' then
  if terminal == '1' or etype == 'task_waiting' then
    redis.call('ZREM', KEYS[7], task_id)
  elseif lease ~= '' then
    redis.call('ZADD', KEYS[7], now + tonumber(lease), task_id)
  end
end

if present(KEYS[5]) then
  redis.call('HSET', KEYS[5], 'event_id', id, 'event', payload)
end
return {id, cancelled}
