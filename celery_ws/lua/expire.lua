-- Close a confirmation whose deadline passed, unless an answer won the race.
-- KEYS: 1 confirmation hash
-- ARGV: 1 the home's prefix, 2 callback id
-- Returns {'expired'} when this call closed it, else {state, answer JSON or ''}.
local c = redis.call('HMGET', KEYS[1], 'state', 'answer', 'task_id', 'owner', 'workflow_id')
if c[1] ~= 'pending' then return {c[1] or 'unknown_callback', c[2] or ''} end
redis.call('HSET', KEYS[1], 'state', 'expired')
unindex_confirmation(ARGV[1], ARGV[2], c[4], c[3], c[5])
return {'expired'}
