-- Mark a task cancelled and wake every confirmation it is waiting on.
-- KEYS: 1 task hash, 2 task pending zset
-- ARGV: 1 key prefix, 2 requesting user ('' = anonymous, open mode only),
--       3 reply JSON pushed to waiting confirmations, 4 ttl
-- Returns {'ok', owner} or {error}: not_found, forbidden, finished.
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return {'not_found'} end
if ARGV[2] ~= '' and ARGV[2] ~= owner then return {'forbidden'} end
if redis.call('HEXISTS', KEYS[1], 'final') == 1 then return {'finished', owner} end
redis.call('HSET', KEYS[1], 'cancel', '1')
for _, cid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local ck = ARGV[1] .. ':confirm:' .. cid
  local c = redis.call('HMGET', ck, 'state', 'assignees')
  if c[1] == 'pending' then
    redis.call('HSET', ck, 'state', 'cancelled')
    redis.call('RPUSH', ck .. ':reply', ARGV[3])
    redis.call('EXPIRE', ck .. ':reply', ARGV[4])
  end
  if c[2] then
    for _, who in ipairs(cjson.decode(c[2])) do redis.call('ZREM', ARGV[1] .. ':user:' .. who .. ':pending', cid) end
  end
  redis.call('ZREM', ARGV[1] .. ':user:' .. owner .. ':pending', cid)
  redis.call('ZREM', ARGV[1] .. ':pending', cid)
end
redis.call('DEL', KEYS[2])
return {'ok', owner}
