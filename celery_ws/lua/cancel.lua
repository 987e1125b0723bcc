-- Mark a task cancelled and wake every confirmation it is waiting on. In a workflow
-- (deferred questions) the cancel reaches the whole workflow: its first task, the
-- task named, and its next continuation are marked cancelled, and the questions
-- asked anywhere in it are closed, so no continuation is sent (and one already
-- sent stops before it runs).
-- KEYS: 1 task hash, 2 the workflow's first task's hash (KEYS[1] outside a workflow),
--       3 the workflow's next continuation's task hash (the placeholder when it has none)
-- ARGV: 1 the home's prefix, 2 task id, 3 requesting user ('' = no ownership check:
--       open mode, the server itself, a Publisher), 4 reply JSON pushed to waiting
--       confirmations, 5 ttl, 6 workflow id (ARGV[2] outside a workflow), 7 the next
--       continuation's id the caller read ('' = none), 8 who is recorded as cancelling
-- Returns {'ok', owner} or {error}: forbidden, not_found, finished, or {'moved', owner}
-- when the workflow's next continuation is no longer ARGV[7] (read it again, retry).
local owner = redis.call('HGET', KEYS[1], 'owner')
-- who may cancel comes first: a named user learns nothing of a task that is not
-- theirs, not even that it exists or has finished
if ARGV[3] ~= '' and ARGV[3] ~= owner then return {'forbidden'} end
if not owner then return {'not_found'} end
if redis.call('HEXISTS', KEYS[1], 'final') == 1 or redis.call('HEXISTS', KEYS[2], 'final') == 1 then
  return {'finished', owner}
end
if (redis.call('HGET', KEYS[2], 'next') or '') ~= ARGV[7] then return {'moved', owner} end
local ttl = tonumber(ARGV[5])
for i = 1, 3 do
  if present(KEYS[i]) then
    redis.call('HSET', KEYS[i], 'cancel', '1', 'cancelled_by', ARGV[8])
    if redis.call('TTL', KEYS[i]) < ttl then redis.call('EXPIRE', KEYS[i], ttl) end
  end
end
close_task_confirmations(ARGV[1], ARGV[2], 'cancelled', ARGV[4], ttl)
if ARGV[6] ~= ARGV[2] then close_task_confirmations(ARGV[1], ARGV[6], 'cancelled', ARGV[4], ttl) end
return {'ok', owner}
