-- post: add a waiting job (idempotent: posting an id that exists changes nothing,
-- so a post whose reply was lost may be sent again).
-- KEYS[1]  P.."job:"..id (routes the call; layout in _lib.lua)
-- ARGV     P, id, name, flow, store JSON, details JSON, priority, rank (0-4), max_attempts
-- Keys     job:<id> (hash), waiting:<flow>, flows, seq, counters; publishes "posted".
-- Returns  {seq, created_at}
local P, id, name, flow = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = KEYS[1]
local existing = redis.call('HMGET', key, 'seq', 'created_at')
if existing[1] then
  return existing
end
local t = fmt(now())
local seq = redis.call('INCR', P .. 'seq')
-- rank * 2^44 + seq is exact in a double (seq < 2^44, rank <= 4).
local score = string.format('%.0f', tonumber(ARGV[8]) * 17592186044416 + seq)
redis.call('HSET', key, 'id', id, 'name', name, 'flow', flow, 'store', ARGV[5],
  'details', ARGV[6], 'priority', ARGV[7], 'score', score, 'seq', seq, 'state', 'waiting',
  'created_at', t, 'updated_at', t, 'attempts', 0, 'max_attempts', ARGV[9], 'owner', '',
  'token', 0, 'cancel_requested', 0)
enqueue(P, id, flow, score)
count(P, 'posted')
emit(P, 'posted', id, {flow = flow, name = name})
return {seq, t}
