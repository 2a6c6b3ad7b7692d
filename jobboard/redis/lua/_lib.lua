-- Helpers shared by every script of this folder: jobboard/redis/session.py puts this
-- file in front of each script's text when it registers the scripts.
--
-- Key layout of one board (P = "jb:{<namespace>}:"; the braces are a hash tag,
-- so every key of a board lives in one cluster slot):
--   P.."job:"..id        hash    one job, fields listed below
--   P.."progress:"..id   hash    atom name -> JSON progress record, of a job posted before
--                                the records moved into the job's hash (read, expired with
--                                its job and purged with it, never written)
--   P.."waiting:"..flow  zset    waiting jobs of a flow, score rank * 2^44 + seq
--   P.."flows"           set     flows that have waiting jobs
--   P.."leases"          zset    claimed jobs, score = lease end (board seconds)
--   P.."finished"        zset    finished jobs, score = end of their retention
--   P.."seq"             string  post sequence (FIFO order within a priority)
--   P.."counters"        hash    event name -> count (boards from before the counts
--                                moved into the marker; read, never written)
--   P.."scheduled"       zset    jobs posted for later (state scheduled), score = due time
--   P.."key:"..key       string  dedupe key -> job id (expires with its finished job)
--   P.."children:"..id   zset    child ids of a job, score = +inf while unfinished, then
--                                the end of the child's retention (the set expires with them)
--   P.."schedules"       hash    record name -> JSON record (the schedules' store)
--   P.."schedule_versions" hash  record name -> version (compare-and-set)
--   P.."board"           hash    the board's marker: run_id (the server run its data
--                                set was last checked on), epoch, gen (one more per
--                                change), halted (why it refuses to work, or absent),
--                                settle_until (no claims before: a restart), epoch_floor,
--                                created_at, reap_at and due_at (see BOUNDS),
--                                "count:"..event, the event counters, and observed_until
--                                (see the channels below)
--   P.."runs"            list    "<run_id> <gen>": each server run the board met, and
--                                the gen its data set held when first seen
--   P.."wake:"..flow     list    wake-up tokens: one per job made waiting (at most
--                                WAKE_CAP); an idle client blocks on it (BLPOP)
--   P.."entities:"..kind hash    entity name -> JSON metadata
--   P.."seen:"..kind     zset    entity name -> last refresh (board seconds)
--   P.."settings"        string  one more at every change of the pauses or schedules: the
--                                heartbeat (register_entity) returns it, so a conductor
--                                re-reads them only when it moved
--   P.."pauses"          hash    flow -> JSON note of a paused flow
--   channel P.."events"          one JSON message {"kind", "job", "data"} per change of a
--                                job nobody holds (posted, cancelled while waiting, purged...),
--                                and of every job while an observer follows them all
--   channel P.."events:o:"..owner  the same for a job `owner` holds (or held: claimed, expired,
--                                cancel_requested, finished, abandoned): its conductor
--                                subscribes to this one only, so an idle conductor hears
--                                nothing of other conductors' jobs; the changes the owner
--                                makes itself (its claims, its own finishes) are not sent
--                                here: it learns of them from the scripts' replies
--   channel P.."events:board"    the board's own notices (halted, reset): every client
--   Observers (watch, wait_for) subscribe to P.."events" and keep the board's field
--   observed_until ahead of the board time (observe.lua), so that owners' events reach it
--   too; without observers, an owner's event is published once.
--
-- Job hash fields: id name flow store details priority score seq state
--   created_at updated_at attempts max_attempts owner token claimed_at
--   lease_expires_at cancel_requested finished_at result last_error
--   key not_before parent (producers' fields; empty or absent when unused)
--   progress_in_job ("1": the job keeps its progress records itself; absent on jobs
--   posted before, whose records may be in P.."progress:"..id)
--   "progress:"..atom    one atom's JSON progress record (PROGRESS below)
-- Empty strings stand for "none". Board time is the server's TIME in seconds.
--
-- Every script but hello and reset is wrapped by jobboard/redis/session.py: the
-- client's known run id and epoch are appended to ARGV (and taken off again
-- here), guard() runs first, and the reply becomes {gen, reply}.
--
-- Tokens are epoch * 2^32 + a per-job count: when an operator resets a board
-- that lost data, the epoch grows and every later token beats every earlier one.
--
-- Errors are replies "JB <CODE> <details>" that jobboard/redis/session.py translates:
--   NOTFOUND | FINISHED <state> | NOTCLAIMED <token> | STALE <token> |
--   MISMATCH <token> | NOTOWNER <owner> | UNCLAIMABLE <state> [by <owner>] |
--   POISON <reason> | CORRUPT <field> | IDLE (nothing to abandon) |
--   RECHECK (check the board first: hello) | HALTED <reason> |
--   SETTLING <seconds> (no claims yet: the server restarted just now)

-- The prefix of the job hash fields holding progress records: one key per job, so that
-- a save writes one hash and a finish expires one key.
local PROGRESS = 'progress:'

-- The states a job hash may hold.
local KNOWN_STATES = {waiting = true, scheduled = true, claimed = true, complete = true,
  failed = true, trashed = true, cancelled = true}

-- 2^32: tokens are EPOCH * EPOCH_UNIT + a per-job count.
local EPOCH_UNIT = 4294967296
-- Set by guard(): the board's epoch and its change count (gen).
local EPOCH, GEN = 0, 0
-- Set by guard() while the board settles after a server restart (board time):
-- no claims until then, so that every client that saw the lost data can check in.
local SETTLING = nil
-- Set by guard() from the board's marker: no claim's lease ends before BOUNDS.reap_at
-- and no job posted for later is due before BOUNDS.due_at (board time; nil: unknown),
-- so that a claim skips the reaper and promotion steps while nothing can be due.
local BOUNDS = {}
-- The bound of an empty index: later than any board time.
local NEVER = 1e15
-- Set by guard(): until when (board time) an observer follows every event (0: none;
-- nil: the marker was not read); and by now(): the board time this script read.
local OBSERVED, NOW = nil, nil

-- The board time of this script, read once: one TIME per call, however many steps need it.
local function now()
  if not NOW then
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return NOW
end

local function fmt(x)
  return string.format('%.6f', x)
end

-- Publish one change of job `id` (see the channels above): on the channel of `holder`,
-- the owner whose claim it concerns, when there is one, and on P.."events" too while an
-- observer follows every event (the board's observed_until, read by guard(), is ahead).
-- `told`: the holder made this change itself and learns of it from the reply (its own
-- claim, its own fenced finish), so its channel is skipped: only observers hear of it.
local function emit(P, kind, id, data, holder, told)
  local unobserved = NOW and OBSERVED and OBSERVED <= NOW
  if told and unobserved then
    return
  end
  local message = cjson.encode({kind = kind, job = id, data = data})
  if holder and holder ~= '' then
    if not told then
      redis.call('PUBLISH', P .. 'events:o:' .. holder, message)
    end
    if unobserved then
      return  -- nobody observes (a script that did not read the marker publishes both)
    end
  end
  redis.call('PUBLISH', P .. 'events', message)
end

-- Publish a notice about the board itself (halted, reset) to every client.
local function notice(P, kind, data)
  redis.call('PUBLISH', P .. 'events:board', cjson.encode({kind = kind, data = data}))
end

local function fail(code)
  return redis.error_reply('JB ' .. code)
end

-- The id of the server process running this script (it changes at every restart).
local function server_run()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
end

-- Writes to the board's marker made by a wrapped script, sent as one HSET when
-- it ends (flush_marker): its gen, counters and bounds.
local MARKER = {}
-- The event counters a wrapped script may move, read with the marker by guard().
local COUNTED = {'posted', 'claimed', 'consumed', 'failed', 'cancelled', 'trashed', 'expired',
  'abandoned', 'poison', 'purged'}
-- Their values (nil when not read: count() reads it first).
local COUNTS = {}

-- Set by guard() once it read the marker: the script's marker writes wait in MARKER
-- until it ends. A script that did not read it (hello, reset, and save_progress of a
-- client that checks every connection it opens: see session.py) writes them at once.
local MARKED = false

-- One more change on the board: clients remember the highest gen they saw, and a
-- data set that comes back from a restart with a lower one went backwards.
local function bump(P)
  if not MARKED then
    GEN = redis.call('HINCRBY', P .. 'board', 'gen', 1)
    return
  end
  GEN = GEN + 1
  MARKER.gen = GEN
end

-- Count `n` (1) more of an event: a change like any other.
local function count(P, name, n)
  if not MARKED then
    redis.call('HINCRBY', P .. 'board', 'count:' .. name, n or 1)
  else
    if not COUNTS[name] then
      COUNTS[name] = tonumber(redis.call('HGET', P .. 'board', 'count:' .. name)) or 0
    end
    COUNTS[name] = COUNTS[name] + (n or 1)
    MARKER['count:' .. name] = COUNTS[name]
  end
  bump(P)
end

-- Send the marker's writes (the tail of every wrapped script, jobboard/redis/session.py).
local function flush_marker(P)
  local changed = {}
  for field, value in pairs(MARKER) do
    changed[#changed + 1] = field
    changed[#changed + 1] = value
  end
  if #changed > 0 then
    redis.call('HSET', P .. 'board', unpack(changed))
    MARKER = {}
  end
end

-- Run before every wrapped script: refuse while the board is halted, and send
-- the client to hello when the server restarted or the epoch moved since it
-- (or anyone) last checked the data set. Returns an error reply or nil.
-- `check_run`: the client cannot vouch for its connection (a client given by the
-- application): ask the server for its run id here. A board that opened its own
-- client checks the run id once per connection instead (jobboard/redis/session.py):
-- a restarted or promoted server is always reached over a new connection.
local function guard(P, known_run, known_epoch, check_run)
  local fields = {'run_id', 'epoch', 'gen', 'halted', 'settle_until', 'reap_at', 'due_at',
    'observed_until'}
  for _, name in ipairs(COUNTED) do
    fields[#fields + 1] = 'count:' .. name
  end
  local b = redis.call('HMGET', P .. 'board', unpack(fields))
  if b[4] then
    return fail('HALTED ' .. b[4])
  end
  if not b[1] or b[1] ~= known_run or tonumber(b[2]) ~= known_epoch
      or (check_run and server_run() ~= known_run) then
    return fail('RECHECK')
  end
  EPOCH, GEN, OBSERVED = known_epoch, tonumber(b[3]) or 0, tonumber(b[8]) or 0
  BOUNDS.reap_at, BOUNDS.due_at = tonumber(b[6]), tonumber(b[7])
  MARKED = true
  for i, name in ipairs(COUNTED) do
    COUNTS[name] = tonumber(b[8 + i]) or 0
  end
  local settle = tonumber(b[5])
  if settle and settle > now() then
    SETTLING = settle
  end
  return nil
end

-- The epoch a token was issued in.
local function epoch_of(token)
  return math.floor(token / EPOCH_UNIT)
end

-- Most wake-up tokens a flow's list keeps: enough for every idle waiter of a
-- burst; the rest are handed on by the claims they lead to (claim_next).
local WAKE_CAP = 16

-- Wake one idle waiter of a flow: push a token into the flow's wake-up list,
-- which idle clients block on (BLPOP), so that a post wakes one of them, not all.
local function wake(P, flow)
  local key = P .. 'wake:' .. flow
  if redis.call('RPUSH', key, '1') > WAKE_CAP then
    redis.call('LTRIM', key, -WAKE_CAP, -1)
  end
end

-- Put a job into its flow's waiting set, and wake one idle waiter of the flow.
local function enqueue(P, id, flow, score)
  redis.call('ZADD', P .. 'waiting:' .. flow, score, id)
  redis.call('SADD', P .. 'flows', flow)
  wake(P, flow)
end

-- Take a job out of its flow's waiting set (forgetting the flow once empty);
-- `emptied` says whether it was the last one, when the caller knows.
local function dequeue(P, id, flow, emptied)
  if not flow then
    return  -- a corrupt record without its flow: a later claim drops the index entry
  end
  local key = P .. 'waiting:' .. flow
  redis.call('ZREM', key, id)
  if emptied == nil then
    emptied = redis.call('EXISTS', key) == 0
  end
  if emptied then
    redis.call('SREM', P .. 'flows', flow)
    redis.call('DEL', P .. 'wake:' .. flow)  -- nothing waits: its wake-ups are void
  end
end

-- An entry scored `at` joins the index whose bound is `name` (reap_at: leases,
-- due_at: scheduled): keep the bound at or below it.
local function lower(P, name, at)
  local bound = BOUNDS[name]
  if bound and at < bound then
    BOUNDS[name] = at
    MARKER[name] = fmt(at)
  end
end

-- Make a scheduled job whose due time came waiting, in its place by (priority, post order).
-- Returns true when the job was made waiting.
local function promote_one(P, id, t)
  local key = P .. 'job:' .. id
  local f = redis.call('HMGET', key, 'state', 'not_before', 'flow', 'score')
  local due = tonumber(f[2])
  if f[1] ~= 'scheduled' or not f[3] or not tonumber(f[4]) or not due then
    redis.call('ZREM', P .. 'scheduled', id)  -- a stale or corrupt index entry
    return false
  end
  if due > t then
    return false
  end
  redis.call('HSET', key, 'state', 'waiting', 'updated_at', fmt(t))
  redis.call('ZREM', P .. 'scheduled', id)
  enqueue(P, id, f[3], f[4])
  return true
end

-- The promotion step: make at most `batch` due scheduled jobs waiting, earliest due first.
local function promote(P, t, batch)
  local due = redis.call('ZRANGEBYSCORE', P .. 'scheduled', '-inf', fmt(t), 'LIMIT', 0, batch)
  for _, id in ipairs(due) do
    promote_one(P, id, t)
  end
end

-- End a claim whose lease ran out (or, `void`, any claim: a halt or a reset makes
-- every claim from before void): the job waits again in its old place.
-- Returns true when the job was made waiting.
local function lapse(P, id, t, void)
  local key = P .. 'job:' .. id
  local f = redis.call('HMGET', key, 'state', 'lease_expires_at', 'owner', 'token', 'flow', 'score')
  local ends = tonumber(f[2])
  if f[1] ~= 'claimed' or not f[5] or not tonumber(f[6]) then
    redis.call('ZREM', P .. 'leases', id)  -- a stale or corrupt index entry
    return false
  end
  if ends and ends > t and not void then
    redis.call('ZADD', P .. 'leases', f[2], id)  -- renewed meanwhile: fix the index
    lower(P, 'reap_at', ends)
    return false
  end
  local why = void and ('claim of ' .. (f[3] or '?') .. ' voided: ' .. void)
    or ('lease of ' .. (f[3] or '?') .. ' expired')
  redis.call('HSET', key, 'state', 'waiting', 'owner', '', 'claimed_at', '',
    'lease_expires_at', '', 'updated_at', fmt(t), 'last_error', why)
  redis.call('ZREM', P .. 'leases', id)
  enqueue(P, id, f[5], f[6])
  if not void then
    count(P, 'expired')
  end
  emit(P, 'expired', id, {token = tonumber(f[4]), owner = f[3], flow = f[5]}, f[3])
  return true
end

-- End every claim at once (hello halting the board, an operator's reset): a write
-- fenced by a claim from before is then refused by the job itself, even by a
-- script that does not read the marker (save_progress, see MARKED).
local function void_claims(P, t, why)
  for _, id in ipairs(redis.call('ZRANGE', P .. 'leases', 0, -1)) do
    lapse(P, id, t, why)
  end
end

-- The reaper step: end at most `batch` expired leases, oldest first.
local function reap(P, t, batch)
  local due = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', fmt(t), 'LIMIT', 0, batch)
  for _, id in ipairs(due) do
    lapse(P, id, t)
  end
end

-- After a step went through an index: its bound is now its first entry.
local function rebound(P, name, index)
  local head = redis.call('ZRANGE', P .. index, 0, 0, 'WITHSCORES')
  BOUNDS[name] = tonumber(head[2]) or NEVER
  MARKER[name] = fmt(BOUNDS[name])
end

-- The reaper and promotion steps of a claim, each only when its bound says an
-- entry may be due.
local function due_steps(P, t, batch)
  if not BOUNDS.reap_at or BOUNDS.reap_at <= t then
    reap(P, t, batch)
    rebound(P, 'reap_at', 'leases')
  end
  if not BOUNDS.due_at or BOUNDS.due_at <= t then
    promote(P, t, batch)
    rebound(P, 'due_at', 'scheduled')
  end
end

-- A job's hash as a table (nil when there is none).
local function load_job(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then
    return nil
  end
  local job = {}
  for i = 1, #flat, 2 do
    job[flat[i]] = flat[i + 1]
  end
  return job
end

-- A job table as a flat list of fields and values (a script's reply), without its
-- progress records (load_progress reads those).
local function flat_job(job)
  local out = {}
  for name, value in pairs(job) do
    if string.sub(name, 1, #PROGRESS) ~= PROGRESS then
      out[#out + 1] = name
      out[#out + 1] = value
    end
  end
  return out
end

-- Read the fields a fenced write checks, ending a due lease first.
-- Returns {state, token, owner, flow, score} or nil and an error code; with
-- `whole`, the job's whole hash as a table too (one read instead of several).
local function current(P, id, t, whole)
  local key = P .. 'job:' .. id
  local f, job
  if whole then
    job = load_job(key)
    f = job and {job.state, job.token, job.owner, job.lease_expires_at, job.flow, job.score} or {}
  else
    f = redis.call('HMGET', key, 'state', 'token', 'owner', 'lease_expires_at', 'flow', 'score')
  end
  if not f[1] then
    return nil, 'NOTFOUND'
  end
  local moved = false
  if f[1] == 'claimed' and (tonumber(f[4]) or 0) <= t and lapse(P, id, t) then
    f[1], f[3], moved = 'waiting', '', true
  end
  if f[1] == 'scheduled' and promote_one(P, id, t) then
    f[1], moved = 'waiting', true
  end
  if moved and job then
    job = load_job(key)
  end
  return {f[1], tonumber(f[2]), f[3], f[5], f[6]}, nil, job
end

-- Check that who/token own the job (skipped when forced); returns the fields
-- of current() (and the job's table, with `whole`) or nil and an error code.
local function fenced(P, id, who, token, force, t, whole)
  local f, err, job = current(P, id, t, whole)
  if not f then
    return nil, err
  end
  if not KNOWN_STATES[f[1]] then
    if not force then
      return nil, 'CORRUPT state'
    end
    f[1] = 'waiting'  -- an operator ends it: taken out of every index it may be in
  end
  if f[1] ~= 'waiting' and f[1] ~= 'claimed' and f[1] ~= 'scheduled' then
    -- A stale owner of a finished job is told its token is stale.
    if not force and f[2] and token < f[2] then
      return nil, 'STALE ' .. f[2]
    end
    return nil, 'FINISHED ' .. f[1]
  end
  if force then
    return f, nil, job
  end
  if not f[2] then
    return nil, 'CORRUPT token'
  end
  if f[1] ~= 'claimed' then
    if token < f[2] then
      return nil, 'STALE ' .. f[2]
    end
    return nil, 'NOTCLAIMED ' .. f[2]
  end
  if token ~= f[2] or epoch_of(token) ~= EPOCH then
    -- A claim from before an operator reset of the board is void.
    return nil, ((token < f[2] or token == f[2]) and 'STALE ' or 'MISMATCH ') .. f[2]
  end
  if f[3] ~= who then
    return nil, 'NOTOWNER ' .. f[3]
  end
  return f, nil, job
end

-- The head of every fenced write, whose ARGV start P, id, who, token, forced:
-- returns the job's fields (or nil), the error code, then P, id, who, forced, now,
-- and with `whole` the job's hash as a table.
local function fenced_head(whole)
  local P, id, who, forced = ARGV[1], ARGV[2], ARGV[3], ARGV[5] == '1'
  local t = now()
  local f, err, job = fenced(P, id, who, tonumber(ARGV[4]), forced, t, whole)
  return f, err, P, id, who, forced, t, job
end

-- Finish a job: state, times, retention (keys expire, finished index updated).
-- `extra` is a flat list of more hash fields to set. `job`, the job's hash as a
-- table when the caller read it, saves a read and is updated to match.
local function finish(P, id, state, t, retention, extra, job)
  local key = P .. 'job:' .. id
  local changed = {'state', state, 'owner', '', 'lease_expires_at', '',
    'updated_at', fmt(t), 'finished_at', fmt(t)}
  for _, v in ipairs(extra) do
    changed[#changed + 1] = v
  end
  redis.call('HSET', key, unpack(changed))
  redis.call('ZREM', P .. 'leases', id)
  if math.floor(t * 1000000) % 64 == 0 then
    -- Lazy trim, about one finish in 64 (each takes every entry due by then): readers
    -- skip entries whose job expired, and purge trims first.
    redis.call('ZREMRANGEBYSCORE', P .. 'finished', '-inf', fmt(t))
  end
  redis.call('ZADD', P .. 'finished', fmt(t + retention), id)
  local ms = string.format('%d', math.max(1, math.ceil(retention * 1000)))
  redis.call('PEXPIRE', key, ms)
  if not (job and job.progress_in_job) then
    redis.call('PEXPIRE', P .. 'progress:' .. id, ms)  -- a job from before: its own key
  end
  -- Producers' links: the dedupe key expires with the job; the parent's index keeps
  -- the child until its retention ends, and expires once no child is unfinished.
  local link
  if job then
    link = {job.key, job.parent}
    for i = 1, #changed, 2 do
      job[changed[i]] = tostring(changed[i + 1])
    end
  else
    link = redis.call('HMGET', key, 'key', 'parent')
  end
  if link[1] and link[1] ~= '' and redis.call('GET', P .. 'key:' .. link[1]) == id then
    redis.call('PEXPIRE', P .. 'key:' .. link[1], ms)
  end
  if link[2] and link[2] ~= '' then
    local kids = P .. 'children:' .. link[2]
    redis.call('ZREMRANGEBYSCORE', kids, '-inf', fmt(t))
    redis.call('ZADD', kids, fmt(t + retention), id)
    if redis.call('ZCOUNT', kids, '+inf', '+inf') == 0 then
      redis.call('PEXPIRE', kids, ms)
    end
  end
end

-- Claim a job just taken out of its waiting set, or trash it when it is
-- poison (attempts used up) or its record is corrupt. Returns the job's id
-- then its hash as a flat list, or nil and the reason it was trashed (nil and nil when the
-- index entry was stale: the job was not waiting).
local function take(P, id, who, lease, retention, t)
  local key = P .. 'job:' .. id
  local job = load_job(key) or {}
  local f = {job.attempts, job.max_attempts, job.token, job.flow, job.state}
  if not f[5] or KNOWN_STATES[f[5]] and f[5] ~= 'waiting' then
    return nil, nil  -- gone, or a stale index entry: the job is not waiting
  end
  local attempts, most, token = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
  local reason
  if f[5] ~= 'waiting' then
    reason = 'corrupt job record: field state is not a known state'
  elseif not (attempts and most and token) then
    local bad = (not attempts and 'attempts') or (not most and 'max_attempts') or 'token'
    reason = 'corrupt job record: field ' .. bad .. ' is not a number'
  elseif attempts >= most then
    reason = 'poison job: claimed ' .. attempts .. ' times without finishing (max_attempts='
      .. most .. ')'
    count(P, 'poison')
  end
  if reason then
    finish(P, id, 'trashed', t, retention, {'last_error', reason}, job)
    count(P, 'trashed')
    emit(P, 'trashed', id, {token = token, reason = reason, forced = true, flow = f[4]})
    return nil, reason
  end
  token = math.max(token, EPOCH * EPOCH_UNIT) + 1
  local ends = fmt(t + lease)
  local changed = {'state', 'claimed', 'owner', who, 'token', string.format('%.0f', token),
    'attempts', tostring(attempts + 1), 'claimed_at', fmt(t), 'lease_expires_at', ends,
    'updated_at', fmt(t)}
  redis.call('HSET', key, unpack(changed))
  redis.call('ZADD', P .. 'leases', ends, id)
  lower(P, 'reap_at', t + lease)
  count(P, 'claimed')
  emit(P, 'claimed', id, {token = token, owner = who, flow = f[4], ends = ends}, who, true)
  for i = 1, #changed, 2 do
    job[changed[i]] = changed[i + 1]
  end
  local out = flat_job(job)
  table.insert(out, 1, id)
  return out
end
