-- Accept the first valid answer to a confirmation, atomically across replicas.
-- KEYS: 1 confirmation hash, 2 reply list
-- ARGV: 1 key prefix, 2 callback id, 3 answering user ('' = anonymous, open mode
--       only), 4 answer JSON, 5 now (Unix seconds), 6 ttl, 7 '1' when the answer
--       needs no check against the question's form (checked already, or a refusal)
-- Returns {'ok', task_id, owner, asked_at}, {'check', JSON Schema} for a typed
-- question whose answer the caller has yet to check, or {error state}:
-- forbidden, unknown_callback, answered, expired, cancelled, closed.
local c = redis.call('HMGET', KEYS[1], 'state', 'deadline', 'assignees', 'task_id', 'owner', 'asked_at',
                     'schema')
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
if tonumber(c[2]) <= tonumber(ARGV[5]) then return {'expired'} end
if c[7] and ARGV[7] ~= '1' then return {'check', c[7]} end
redis.call('HSET', KEYS[1], 'state', 'answered', 'answer', ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[6])
unindex_confirmation(ARGV[1], ARGV[2], c[5], c[4], c[3])
return {'ok', c[4], c[5], c[6]}
