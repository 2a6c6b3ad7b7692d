-- claim_next: reap expired leases, promote due scheduled jobs, then claim the best waiting job of the
-- requested flows (priority, then post order), trashing poison jobs met on the way.
-- KEYS[1]  P.."leases" (routes the call; layout in _lib.lua)
-- ARGV     P, who, lease seconds, retention seconds, reap batch, skip limit,
--          "*" (every flow with waiting jobs) or "=" / "=+" (pass a wake-up on: see
--          below), then the flow names
-- Keys     leases, scheduled, flows, waiting:<flow>, wake:<flow>, job:<id>, finished,
--          counters;
--          publishes "expired", "trashed", "claimed".
-- Cost     O(batch log n) reaping and promoting + O(F log n) for F flows.
-- Returns  the claimed job's id then its hash as a flat list; "idle <now> [<first
--          lease end or due time of a scheduled job, or the end of a restart's
--          settling>]" when no job can be claimed;
--          "again" when `skip limit` poison jobs were trashed (call again).
local P, who = ARGV[1], ARGV[2]
local lease, retention = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = now()
if SETTLING then
  return 'idle ' .. fmt(t) .. ' ' .. fmt(SETTLING)  -- a restart settles: look again then
end
due_steps(P, t, tonumber(ARGV[5]))
-- "=+": this client was woken by a token; when more jobs of the flow wait, hand
-- a wake-up on to the next idle client (unless one is pending already).
local pass = string.sub(ARGV[7], 2, 2) == '+'
local flows
if ARGV[7] == '*' then
  flows = redis.call('SMEMBERS', P .. 'flows')
else
  flows = {unpack(ARGV, 8)}
end
for _ = 1, tonumber(ARGV[6]) do
  local best, best_score, best_flow, last
  for _, flow in ipairs(flows) do
    local head = redis.call('ZRANGE', P .. 'waiting:' .. flow, 0, 1, 'WITHSCORES')
    if head[1] and (not best or tonumber(head[2]) < best_score) then
      best, best_score, best_flow, last = head[1], tonumber(head[2]), flow, head[3] == nil
    end
  end
  if not best then
    -- Nothing waits: say when the first lease ends or the first scheduled job falls due,
    -- so an idle client sleeps until then.
    local head = redis.call('ZRANGE', P .. 'leases', 0, 0, 'WITHSCORES')
    local due = redis.call('ZRANGE', P .. 'scheduled', 0, 0, 'WITHSCORES')
    local wake = tonumber(head[2])
    if due[2] and (not wake or tonumber(due[2]) < wake) then
      wake = tonumber(due[2])
    end
    return 'idle ' .. fmt(t) .. (wake and (' ' .. fmt(wake)) or '')
  end
  dequeue(P, best, best_flow, last)
  local job = take(P, best, who, lease, retention, t)
  if job then
    if pass and not last and redis.call('LLEN', P .. 'wake:' .. best_flow) == 0 then
      wake(P, best_flow)
    end
    return job
  end
end
return 'again'
