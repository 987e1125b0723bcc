-- Claim a deferred question's continuation for one replica, for a lease: the
-- replica then announces it, sends it and records it sent. A replica that dies
-- holding a claim leaves it to run out; another one claims it again and sends
-- (the worker skips a second run of the same continuation id).
-- KEYS: 1 deferred questions zset, 2 confirmation hash, 3 the continuation's task
--       hash (the placeholder when the question names none)
-- ARGV: 1 the home's prefix, 2 callback id, 3 now (Unix seconds), 4 lease (s), 5 replica id
-- A question whose deadline passed unanswered is closed as expired here (an answer
-- and the deadline race atomically: answer.lua refuses answers past the deadline).
-- Returns {} when there is nothing to send (not due, claimed by another replica,
-- sent, closed, cancelled or unknown), else {state ('answered' or 'expired'),
-- answer, then, continuation_id, workflow_id, task_id, owner, assignees, default,
-- answer_model, timeout, parent_task_id, announced}, '' for each missing field.
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not score then return {} end
local c = redis.call('HMGET', KEYS[2], 'state', 'deadline', 'claimed_by', 'sent', 'owner', 'task_id',
                     'workflow_id')
local state, now = c[1], tonumber(ARGV[3])
if not state or c[4] or (state ~= 'pending' and state ~= 'answered' and state ~= 'expired') then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return {}
end
if tonumber(score) > now and c[3] ~= ARGV[5] then return {} end
if state == 'pending' then
  if tonumber(c[2]) > now then
    redis.call('ZADD', KEYS[1], c[2], ARGV[2]) -- still open: due at its deadline
    return {}
  end
  state = 'expired'
  redis.call('HSET', KEYS[2], 'state', state)
  unindex_confirmation(ARGV[1], ARGV[2], c[5], c[6], c[7])
end
if present(KEYS[3]) and redis.call('HEXISTS', KEYS[3], 'cancel') == 1 then
  redis.call('HSET', KEYS[2], 'state', 'cancelled')
  redis.call('ZREM', KEYS[1], ARGV[2])
  return {}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
if c[3] ~= ARGV[5] then
  redis.call('HSET', KEYS[2], 'claimed_by', ARGV[5])
  redis.call('HINCRBY', KEYS[2], 'claims', 1)
end
local fields = {'answer', 'then', 'continuation_id', 'workflow_id', 'task_id', 'owner', 'assignees', 'default',
                'answer_model', 'timeout', 'parent_task_id', 'announced'}
local r = redis.call('HMGET', KEYS[2], unpack(fields))
local reply = {state}
for i = 1, #fields do reply[i + 1] = r[i] or '' end
return reply
