-- The Redis store's scripts (redis_store.py). Each runs atomically, so a session's seq
-- is allocated, its event appended and its turn taken or given back in one step, whichever
-- server process asks: that is what keeps seqs gapless and each turn's terminal event
-- single across processes. The shared part comes first; each script starts at a line
-- "--- name" and is sent with the shared part in front of it.
--
-- Keys of one session (KEYS[1..3]): its record (a hash), its event log (a stream whose
-- entry ids are the seqs: "<seq>-0", fields e = event name, f = the frame without its
-- seq, t = append time in ms) and its queue of waiting messages (a list).
-- Record fields: agent owner created seen seq logbytes turn pending pending_body mem mem_v
-- closed. A running turn is "turn" = "<node id>|<n>"; a node's running sessions are the set
-- <prefix>node:<id>:turns.

local record, log, queue = KEYS[1], KEYS[2], KEYS[3]

local function node_of(token)
  return string.match(token, '^(.*)|')
end

-- The set of turns a node runs (its token names it).
local function turns_key(prefix, token)
  return prefix .. 'node:' .. node_of(token) .. ':turns'
end

-- Keep the log within `max_events` entries and `max_bytes` of frames (it holds `bytes`):
-- oldest first.
local function trim(max_events, max_bytes, bytes)
  local size = redis.call('XLEN', log)
  local before = bytes
  while size > 1 and (size > max_events or bytes > max_bytes) do
    local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
    redis.call('XDEL', log, oldest[1])
    local fields = oldest[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'f' then bytes = bytes - #fields[i + 1] end
    end
    size = size - 1
  end
  if bytes ~= before then redis.call('HSET', record, 'logbytes', bytes) end
end

-- Append (name, body) pairs from ARGV[first] on, their seqs allocated in one step;
-- returns the seq of the first (nil for none).
local function append(first, count, max_events, max_bytes)
  if count == 0 then return nil end
  local now = redis.call('TIME')
  local ms = now[1] * 1000 + math.floor(now[2] / 1000)
  local start = redis.call('HINCRBY', record, 'seq', count) - count + 1
  local added = 0
  for k = 0, count - 1 do
    local i = first + 2 * k
    redis.call('XADD', log, (start + k) .. '-0', 'e', ARGV[i], 'f', ARGV[i + 1], 't', ms)
    added = added + #ARGV[i + 1]
  end
  trim(max_events, max_bytes, redis.call('HINCRBY', record, 'logbytes', added))
  return start
end

local function touch(ttl_ms)
  redis.call('PEXPIRE', record, ttl_ms)
  redis.call('PEXPIRE', log, ttl_ms)
  redis.call('PEXPIRE', queue, ttl_ms)
end

local function live()
  return redis.call('EXISTS', record) == 1 and redis.call('HGET', record, 'closed') ~= '1'
end

-- The turn ends: forget it (and its question), or hand the session to `next_token` for
-- the first queued message. Returns that message or false.

local function release(prefix, sid, next_token)
  local token = redis.call('HGET', record, 'turn')
  redis.call('HDEL', record, 'pending', 'pending_body')
  if token then redis.call('SREM', turns_key(prefix, token), sid) end
  if next_token ~= '' and redis.call('LLEN', queue) > 0 then
    local text = redis.call('LPOP', queue)
    redis.call('HSET', record, 'turn', next_token)
    redis.call('SADD', turns_key(prefix, next_token), sid)
    return text
  end
  redis.call('HDEL', record, 'turn')
  return false
end

--- create
-- ARGV: ttl_ms max_events max_bytes agent owner created name body
if redis.call('EXISTS', record) == 1 then return -1 end
redis.call('HSET', record, 'agent', ARGV[4], 'owner', ARGV[5], 'created', ARGV[6],
  'seen', ARGV[6], 'seq', 0, 'logbytes', 0, 'mem_v', 0)
local seq = append(7, 1, tonumber(ARGV[2]), tonumber(ARGV[3]))
touch(tonumber(ARGV[1]))
return seq

--- append
-- ARGV: ttl_ms max_events max_bytes fence_field fence_value close batch count name body ...
-- Appends only while the record lives and, with a fence, while record[fence_field] is
-- fence_value (a turn appends only while it holds the session). close=1 marks the
-- session ended: its keys then live ttl_ms more, for readers to see the end. `batch`
-- names the call: one retried after its reply was lost appends nothing twice.
-- Returns the first seq, -1 when fenced off, -2 when the session is gone.
if redis.call('HGET', record, 'batch') == ARGV[7] then
  return tonumber(redis.call('HGET', record, 'batch_first'))
end
if not live() then return -2 end
if ARGV[4] ~= '' and redis.call('HGET', record, ARGV[4]) ~= ARGV[5] then return -1 end
local seq = append(9, tonumber(ARGV[8]), tonumber(ARGV[2]), tonumber(ARGV[3]))
redis.call('HSET', record, 'batch', ARGV[7], 'batch_first', seq)
if ARGV[6] == '1' then redis.call('HSET', record, 'closed', '1') end
touch(tonumber(ARGV[1]))
return seq

--- finish
-- ARGV: ttl_ms max_events max_bytes prefix sid token memory next_token count name body ...
-- The turn `token` appends its last events (its terminal last), saves the conversation
-- memory (if given) and gives the session back, or runs the next queued message as
-- next_token. Returns {first seq, next message or false}, or {-1} when fenced off.
if not live() then return {-2} end
if redis.call('HGET', record, 'turn') ~= ARGV[6] then return {-1} end
local seq = append(10, tonumber(ARGV[9]), tonumber(ARGV[2]), tonumber(ARGV[3]))
if ARGV[7] ~= '' then
  redis.call('HSET', record, 'mem', ARGV[7])
  redis.call('HINCRBY', record, 'mem_v', 1)
end
local text = release(ARGV[4], ARGV[5], ARGV[8])
touch(tonumber(ARGV[1]))
return {seq, text}

--- stop
-- ARGV: ttl_ms max_events max_bytes prefix sid expect_node next_token terminal_name
--       terminal_body queued_name queued_body
-- Ends the running turn from any process (cancel, interrupt, session end, a lost node):
-- appends its terminal event and takes the session from it; with queued_name, also
-- ends each queued message with its own event; with next_token, runs the first queued
-- message as that turn instead. With expect_node, only a turn of that node is ended.
-- Returns {first seq or 0 when no turn ran, holder token, events appended, next message}.
if not live() then return {-2} end
local token = redis.call('HGET', record, 'turn')
if not token or (ARGV[6] ~= '' and node_of(token) ~= ARGV[6]) then
  return {0, false, 0, false}
end
local seq = append(8, 1, tonumber(ARGV[2]), tonumber(ARGV[3]))
local appended = 1
if ARGV[10] ~= '' then
  local waiting = redis.call('LLEN', queue)
  for _ = 1, waiting do append(10, 1, tonumber(ARGV[2]), tonumber(ARGV[3])) end
  appended = appended + waiting
  redis.call('DEL', queue)
end
local text = release(ARGV[4], ARGV[5], ARGV[7])
touch(tonumber(ARGV[1]))
return {seq, token, appended, text}

--- begin
-- ARGV: ttl_ms prefix sid token text policy max_queued known_mem_v now
-- A user.message: the session is taken for turn `token`, or (policy queue) the message
-- waits in the queue. Returns {'run', mem_v, memory ('' for none yet), or false when
-- the caller's known_mem_v is current}, {'queued', position},
-- {'busy', holder} or {'gone'}.
if not live() then return {'gone'} end
redis.call('HSET', record, 'seen', ARGV[9])
local token = redis.call('HGET', record, 'turn')
if token then
  if ARGV[6] ~= 'queue' then return {'busy', token} end
  if redis.call('LLEN', queue) >= tonumber(ARGV[7]) then return {'busy', token} end
  local position = redis.call('RPUSH', queue, ARGV[5])
  touch(tonumber(ARGV[1]))
  return {'queued', position}
end
redis.call('HSET', record, 'turn', ARGV[4])
redis.call('SADD', turns_key(ARGV[2], ARGV[4]), ARGV[3])
local mem_v = redis.call('HGET', record, 'mem_v') or '0'
touch(tonumber(ARGV[1]))
if mem_v == ARGV[8] then return {'run', mem_v, false} end
return {'run', mem_v, redis.call('HGET', record, 'mem') or ''}

--- ask
-- ARGV: token step_id body. The turn `token` waits for approval of step_id.
if redis.call('HGET', record, 'turn') ~= ARGV[1] then return 0 end
redis.call('HSET', record, 'pending', ARGV[2], 'pending_body', ARGV[3])
return 1

--- claim
-- ARGV: step_id. The first answer for a waiting step takes it away; returns the token
-- of the turn to tell, or false when nothing waits as step_id.
if redis.call('HGET', record, 'pending') ~= ARGV[1] then return false end
redis.call('HDEL', record, 'pending', 'pending_body')
return redis.call('HGET', record, 'turn')
