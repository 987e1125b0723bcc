-- Accept the first valid answer to a confirmation, atomically across replicas.
-- KEYS: 1 confirmation hash, 2 reply list, 3 deferred questions zset
-- ARGV: 1 the home's prefix, 2 callback id, 3 answering user ('' = anonymous, open mode
--       only), 4 answer JSON, 5 now (Unix seconds), 6 ttl, 7 '1' when the answer
--       needs no check against the question's form (checked already, or a refusal),
--       8 replica claiming a deferred question's continuation ('' = none: a replica
--       that knows the Celery app claims it within a second), 9 the claim's lease (s)
-- Returns {'ok', task_id, owner, asked_at, mode}, {'check', JSON Schema} for a typed
-- question whose answer the caller has yet to check, or {error state}:
-- forbidden, unknown_callback, answered, expired, cancelled, closed.
-- A blocking question's answer is pushed to the reply list its task waits on; a
-- deferred one's continuation is due at once (claimed by ARGV[8] when given).
local c = redis.call('HMGET', KEYS[1], 'state', 'deadline', 'assignees', 'task_id', 'owner', 'asked_at',
                     'schema', 'mode', 'workflow_id')
local state = c[1]
-- who may answer comes first: a named user learns nothing of a question that is
-- not theirs, not even that it exists or how it ended
if ARGV[3] ~= '' then
  local allowed = false
  if state then
    for _, who in ipairs(cjson.decode(c[3])) do
      if who == ARGV[3] then allowed = true end
    end
  end
  if not allowed then return {'forbidden'} end
end
if not state then return {'unknown_callback'} end
if state ~= 'pending' then return {state} end
local now = tonumber(ARGV[5])
if tonumber(c[2]) <= now then return {'expired'} end
if c[7] and ARGV[7] ~= '1' then return {'check', c[7]} end
redis.call('HSET', KEYS[1], 'state', 'answered', 'answer', ARGV[4])
if c[8] == 'deferred' then
  if ARGV[8] ~= '' then
    redis.call('HSET', KEYS[1], 'claimed_by', ARGV[8])
    redis.call('HINCRBY', KEYS[1], 'claims', 1)
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[9]), ARGV[2])
  else
    redis.call('ZADD', KEYS[3], now, ARGV[2])
  end
else
  redis.call('RPUSH', KEYS[2], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
end
unindex_confirmation(ARGV[1], ARGV[2], c[5], c[4], c[9])
return {'ok', c[4], c[5], c[6], c[8] or 'blocking'}
