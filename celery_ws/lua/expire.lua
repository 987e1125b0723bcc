-- Close a confirmation whose deadline passed, unless an answer won the race.
-- KEYS: 1 confirmation hash
-- ARGV: 1 key prefix, 2 callback id
-- Returns {'expired'} when this call closed it, else {state, answer JSON or ''}.
local c = redis.call('HMGET', KEYS[1], 'state', 'answer', 'task_id', 'owner', 'assignees')
if c[1] ~= 'pending' then return {c[1] or 'unknown_callback', c[2] or ''} end
redis.call('HSET', KEYS[1], 'state', 'expired')
local cid = ARGV[2]
redis.call('ZREM', ARGV[1] .. ':pending', cid)
redis.call('ZREM', ARGV[1] .. ':user:' .. c[4] .. ':pending', cid)
for _, who in ipairs(cjson.decode(c[5])) do redis.call('ZREM', ARGV[1] .. ':user:' .. who .. ':pending', cid) end
if c[3] ~= '' then redis.call('ZREM', ARGV[1] .. ':task:' .. c[3] .. ':pending', cid) end
return {'expired'}
