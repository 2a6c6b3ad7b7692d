-- finish: end a job as complete, failed, cancelled or trashed, fenced by the
-- claim token (unless forced: an operator trashing any unfinished job), storing
-- the last progress records given with it under the same fence.
-- KEYS[1]  P.."job:"..id (routes the call; layout in _lib.lua)
-- ARGV     P, id, who, token ("" when forced), forced "1"/"0", state, event name,
--          retention seconds, has result "1"/"0", result JSON, has error "1"/"0", error,
--          then (atom name, record JSON) for each progress record to store
-- Keys     job:<id> (progress records in its fields; expires after retention, with the
--          progress:<id> of a job posted before that layout), leases,
--          waiting:<flow>, flows, scheduled, finished, counters; publishes <event>.
-- Returns  the finished job's hash as a flat list, or an error as save_progress.
local f, err, P, id, who, forced, t, job = fenced_head(true)
if not f then
  return fail(err)
end
if f[1] == 'waiting' then
  dequeue(P, id, f[4])
elseif f[1] == 'scheduled' then
  redis.call('ZREM', P .. 'scheduled', id)
end
local extra = {}
if ARGV[9] == '1' then
  table.insert(extra, 'result')
  table.insert(extra, ARGV[10])
end
if ARGV[11] == '1' then
  table.insert(extra, 'last_error')
  table.insert(extra, ARGV[12])
end
for i = 13, #ARGV - 1, 2 do
  table.insert(extra, PROGRESS .. ARGV[i])
  table.insert(extra, ARGV[i + 1])
end
finish(P, id, ARGV[6], t, tonumber(ARGV[8]), extra, job)
count(P, ARGV[7])
-- The holder's channel (an operator's forced end reaches the conductor running the job);
-- an owner finishing its own claim learns of it from the reply.
emit(P, ARGV[7], id, {token = f[2], owner = who, forced = forced, flow = f[4]},
  f[1] == 'claimed' and f[3] or nil, f[1] == 'claimed' and not forced)
return flat_job(job)
