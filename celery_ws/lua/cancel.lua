-- Mark a task cancelled and wake every confirmation it is waiting on.
-- KEYS: 1 task hash
-- ARGV: 1 key prefix, 2 task id, 3 requesting user ('' = anonymous: open mode,
--       or the server itself), 4 reply JSON pushed to waiting confirmations, 5 ttl
-- Returns {'ok', owner} or {error}: forbidden, not_found, finished.
local owner = redis.call('HGET', KEYS[1], 'owner')
-- who may cancel comes first: a named user learns nothing of a task that is not
-- theirs, not even that it exists or has finished
if ARGV[3] ~= '' and ARGV[3] ~= owner then return {'forbidden'} end
if not owner then return {'not_found'} end
if redis.call('HEXISTS', KEYS[1], 'final') == 1 then return {'finished', owner} end
redis.call('HSET', KEYS[1], 'cancel', '1', 'cancelled_by', ARGV[3])
close_task_confirmations(ARGV[1], ARGV[2], 'cancelled', ARGV[4], tonumber(ARGV[5]))
return {'ok', owner}
