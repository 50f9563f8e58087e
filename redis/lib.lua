-- lib.lua: the part every channel script shares. Redis scripts cannot
-- require one another, so store_redis.c sends this text in front of each
-- channel script (publish, read, position, flush): it is one script each.
--
-- Keys of channel C (all with the hash tag {C}, see store_redis.c):
--   KEYS[1] mp:{C}:m  meta hash
--       e  epoch            s  last seq handed out
--       g  generation the epoch was made in (the shard's mp:gen)
--       f  floor: last seq lost (trimmed, or aged out by max_age)
--       l  last seq stored with an age limit (lost when the stream expires)
--   KEYS[2] mp:{C}:h  history, a stream; entry id <seq>-0, fields
--       e  the envelope     t  published_ms     i  message id
--       x  expires_ms (0: never)                k  kinds ("" all)
--       a  "1" when x comes from max_age: its passing is a loss, unlike a
--          message's own shorter ttl (store.h, first_seq)
-- Arguments every channel script starts with:
--   ARGV[1] the shard's generation, ARGV[2] an epoch to use if a new one
--   is needed (made by the node: no randomness in scripts), ARGV[3] now
--   (ms), ARGV[4] max_messages, ARGV[5] max_age_ms, ARGV[6] idle_ms.
local META, HIST = KEYS[1], KEYS[2]
local GEN, CANDIDATE, NOW = ARGV[1], ARGV[2], tonumber(ARGV[3])
local MAX, AGE, IDLE = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

-- Integers as digits: Lua's tostring turns 1e14 and above into "1e+14".
local function int(n) return string.format('%d', n) end

local function seq_of(id) return tonumber(string.match(id, '^(%d+)')) end

local function fields(entry)
  local t, kv = {}, entry[2]
  for i = 1, #kv, 2 do t[kv[i]] = kv[i + 1] end
  return t
end

-- An entry's expiry, and whether it comes from max_age (no table built:
-- this runs on every publish of a full channel).
local function field_x(entry)
  local kv, x, aged = entry[2], 0, false
  for i = 1, #kv, 2 do
    if kv[i] == 'x' then x = tonumber(kv[i + 1]) elseif kv[i] == 'a' then aged = true end
  end
  return x, aged
end

-- The channel's state, or nil if it has none and create is false. A state
-- made in another generation (Redis lost data since) is replaced by a new
-- epoch with seq from 0 and no history, as a missing one is.
local function load(create)
  local v = redis.call('HMGET', META, 'e', 's', 'g', 'f', 'l')
  if v[1] and v[3] == GEN then
    return { e = v[1], s = tonumber(v[2]), f = tonumber(v[4]) or 0, l = tonumber(v[5]) or 0 }
  end
  if not v[1] and not create then return nil end
  redis.call('DEL', HIST)
  redis.call('HSET', META, 'e', CANDIDATE, 's', 0, 'g', GEN, 'f', 0, 'l', 0)
  return { e = CANDIDATE, s = 0, f = 0, l = 0 }
end

-- Drops the expired entries at the head of the history (reads do this);
-- one that aged out by max_age moves the floor. So does a history gone
-- while an age-limited message was stored: it expired as a whole (its key
-- gets PEXPIRE max_age at each append).
local function prune(st)
  while true do
    local head = redis.call('XRANGE', HIST, '-', '+', 'COUNT', 1)[1]
    if not head then break end
    local x, aged = field_x(head)
    if x == 0 or x > NOW then break end
    if aged then st.f = math.max(st.f, seq_of(head[1])) end
    redis.call('XDEL', HIST, head[1])
  end
  if st.l > st.f and redis.call('XLEN', HIST) == 0 then st.f = st.l end
end

-- The meta outlives its history: max(max_age, idle, the history's own
-- remaining life), or no expiry while a history without one exists.
local function touch_meta()
  local h = redis.call('PTTL', HIST)
  if h == -1 then
    redis.call('PERSIST', META)
  else
    redis.call('PEXPIRE', META, int(math.max(AGE, IDLE, h, 1000)))
  end
end

