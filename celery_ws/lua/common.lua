-- Helpers prepended to every script (scripts cannot call each other).
-- Every script works in one home (keys.py): its KEYS and the keys it derives from
-- the home's prefix (ARGV, 'cws:{<h>}') share one hash slot on a Redis Cluster.

-- Whether a key of KEYS applies: one that does not is the home's placeholder,
-- '<prefix>:none' (every declared key must be in the script's slot, so never '').
local function present(key)
  return string.sub(key, -5) ~= ':none'
end

-- The key of one id, as keys.py builds it (keep both in step): prefix:kind:{id}suffix.
-- The braces keep an id from naming any other key, whatever characters it holds.
local function id_key(prefix, kind, id, suffix)
  return prefix .. ':' .. kind .. ':{' .. id .. '}' .. (suffix or '')
end

-- Forget a confirmation in the pending indexes of its home: the home's, its task's, its
-- workflow's (a question asked in a continuation) and its owner's. Other assignees'
-- indexes may be in other homes: their readers skip questions no longer pending.
local function unindex_confirmation(prefix, cid, owner, task_id, workflow_id)
  redis.call('ZREM', prefix .. ':pending', cid)
  if owner and owner ~= '' then redis.call('ZREM', id_key(prefix, 'user', owner, ':pending'), cid) end
  if task_id and task_id ~= '' then redis.call('ZREM', id_key(prefix, 'task', task_id, ':pending'), cid) end
  if workflow_id and workflow_id ~= '' and workflow_id ~= task_id then
    redis.call('ZREM', id_key(prefix, 'task', workflow_id, ':pending'), cid)
  end
end

-- Close every open confirmation of a task (or of a workflow: its questions are indexed
-- under its first task too) with new_state; when reply is given, push it so a worker
-- blocked on the answer wakes up. A closed deferred question sends no continuation.
local function close_task_confirmations(prefix, task_id, new_state, reply, ttl)
  local pending_key = id_key(prefix, 'task', task_id, ':pending')
  for _, cid in ipairs(redis.call('ZRANGE', pending_key, 0, -1)) do
    local ck = id_key(prefix, 'confirm', cid)
    local c = redis.call('HMGET', ck, 'state', 'owner', 'task_id', 'workflow_id', 'mode')
    if c[1] == 'pending' then
      redis.call('HSET', ck, 'state', new_state)
      if c[5] == 'deferred' then
        redis.call('ZREM', prefix .. ':deferred', cid)
      elseif reply then
        local reply_key = id_key(prefix, 'confirm', cid, ':reply')
        redis.call('RPUSH', reply_key, reply)
        redis.call('EXPIRE', reply_key, ttl)
      end
    end
    unindex_confirmation(prefix, cid, c[2], c[3] or task_id, c[4])
  end
  redis.call('DEL', pending_key)
end
