-- post: add a waiting job, or a scheduled one when it is due later (idempotent:
-- posting an id that exists changes nothing, so a post whose reply was lost may be
-- sent again). A dedupe key held by an existing job returns that job instead.
-- KEYS[1]  P.."job:"..id (routes the call; layout in _lib.lua)
-- ARGV     P, id, name, flow, store JSON, details JSON, priority, rank (0-4), max_attempts,
--          dedupe key ("" for none), delay seconds ("" for none),
--          not_before board time ("" for none), parent id ("" for none)
-- Keys     job:<id> (hash), waiting:<flow>, flows, scheduled, key:<key>,
--          children:<parent>, seq, counters; publishes "posted".
-- Returns  the job's hash (the existing one for a held key) as a flat list
local P, id, name, flow = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local dedupe, delay, not_before, parent = ARGV[10], ARGV[11], ARGV[12], ARGV[13]
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then
  return redis.call('HGETALL', key)
end
if dedupe ~= '' then
  local held = redis.call('GET', P .. 'key:' .. dedupe)
  if held and redis.call('EXISTS', P .. 'job:' .. held) == 1 then
    return redis.call('HGETALL', P .. 'job:' .. held)
  end
end
local now_t = now()
local t = fmt(now_t)
local due
if not_before ~= '' then
  due = tonumber(not_before)
elseif delay ~= '' then
  due = now_t + tonumber(delay)
end
local state = (due and due > now_t) and 'scheduled' or 'waiting'
local seq = redis.call('INCR', P .. 'seq')
-- rank * 2^44 + seq is exact in a double (seq < 2^44, rank <= 4).
local score = string.format('%.0f', tonumber(ARGV[8]) * 17592186044416 + seq)
redis.call('HSET', key, 'id', id, 'name', name, 'flow', flow, 'store', ARGV[5],
  'details', ARGV[6], 'priority', ARGV[7], 'score', score, 'seq', seq, 'state', state,
  'created_at', t, 'updated_at', t, 'attempts', 0, 'max_attempts', ARGV[9], 'owner', '',
  'token', 0, 'cancel_requested', 0, 'key', dedupe, 'not_before', due and fmt(due) or '',
  'parent', parent, 'progress_in_job', 1)
if state == 'scheduled' then
  redis.call('ZADD', P .. 'scheduled', fmt(due), id)
  lower(P, 'due_at', due)
  wake(P, flow)  -- an idle waiter learns the due time with its next claim_next
else
  enqueue(P, id, flow, score)
end
if dedupe ~= '' then
  redis.call('SET', P .. 'key:' .. dedupe, id)
end
if parent ~= '' then
  redis.call('ZADD', P .. 'children:' .. parent, '+inf', id)
  redis.call('PERSIST', P .. 'children:' .. parent)
end
count(P, 'posted')
emit(P, 'posted', id, {flow = flow, name = name, not_before = state == 'scheduled' and due or nil})
return redis.call('HGETALL', key)
