-- purge: delete finished jobs of some states that finished long enough ago,
-- scanning one batch of the finished index (the caller pages with `offset`).
-- KEYS[1]  P.."finished" (routes the call; layout in _lib.lua)
-- ARGV     P, older_than seconds, offset, batch, then the states to purge
-- Keys     finished (expired entries trimmed first), job:<id>, progress:<id>, key:<key>,
--          children:<parent>,
--          counters; publishes "purged".
-- Returns  {deleted, kept, scanned}: the next batch starts at offset + kept.
local P, older, offset, batch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local wanted = {}
for i = 5, #ARGV do
  wanted[ARGV[i]] = true
end
local t = now()
redis.call('ZREMRANGEBYSCORE', P .. 'finished', '-inf', fmt(t))
local ids = redis.call('ZRANGE', P .. 'finished', offset, offset + batch - 1)
local deleted, kept = 0, 0
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', P .. 'job:' .. id, 'state', 'finished_at', 'key', 'parent')
  if not f[1] then
    redis.call('ZREM', P .. 'finished', id)  -- expired already
  elseif wanted[f[1]] and (tonumber(f[2]) or 0) <= t - older then
    redis.call('DEL', P .. 'job:' .. id, P .. 'progress:' .. id)
    if f[3] and f[3] ~= '' and redis.call('GET', P .. 'key:' .. f[3]) == id then
      redis.call('DEL', P .. 'key:' .. f[3])  -- purging the job frees its dedupe key
    end
    if f[4] and f[4] ~= '' then
      redis.call('ZREM', P .. 'children:' .. f[4], id)
    end
    redis.call('ZREM', P .. 'finished', id)
    deleted = deleted + 1
  else
    kept = kept + 1
  end
end
if deleted > 0 then
  count(P, 'purged', deleted)
  emit(P, 'purged', nil, {count = deleted})
end
return {deleted, kept, #ids}
