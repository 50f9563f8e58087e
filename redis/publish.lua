-- publish.lua (after lib.lua): one message, atomically: take the next seq,
-- build the envelope, retain it (trimmed by count, aged by expiry), publish
-- it on the bus, return {seq, epoch}.
--   ARGV[7] channel   ARGV[8] message id   ARGV[9] data (compact JSON)
--   ARGV[10] ttl_ms (0: max_age)   ARGV[11] "1" store, "0" live only
--   ARGV[12] kinds ("" all)   ARGV[13] published_ms   ARGV[14] bus channel
-- Bus payload: "m <seq> <epoch> <published_ms> <kinds or -> <id> <envelope>"
-- The envelope is byte for byte src/envelope.c's.
local channel, id, data = ARGV[7], ARGV[8], ARGV[9]
local ttl, kinds, published = tonumber(ARGV[10]), ARGV[12], ARGV[13]

local st = load(true)
local seq = st.s + 1
local env = '{"type":"message","channel":"' .. channel .. '","seq":' .. int(seq) ..
            ',"id":"' .. id .. '","data":' .. data .. '}'

-- No pruning here: expired entries go with the count trim below (reads
-- prune and skip them), and the whole history expires max_age after its
-- last append.
local len = redis.call('XLEN', HIST)
if len == 0 and st.l > st.f then st.f = st.l end   -- it expired as a whole
local stored = ARGV[11] == '1'
if stored then
  -- Make room: exactly max_messages stay, so the floor is exact. A trimmed
  -- message past its own ttl was no loss and does not move it.
  local over = len - (MAX > 0 and MAX - 1 or 0)
  if over > 0 then
    for _, entry in ipairs(redis.call('XRANGE', HIST, '-', '+', 'COUNT', over)) do
      local x, aged = field_x(entry)
      if aged or x == 0 or x > NOW then st.f = math.max(st.f, seq_of(entry[1])) end
    end
  end
  if MAX > 0 then
    local life, by_age = AGE, true
    if ttl > 0 and (AGE == 0 or ttl < AGE) then life, by_age = ttl, false end
    local x = life > 0 and NOW + life or 0
    if by_age and life > 0 then
      redis.call('XADD', HIST, 'MAXLEN', MAX, int(seq) .. '-0', 'e', env, 't', published, 'x', int(x),
                 'k', kinds, 'i', id, 'a', '1')
      st.l = seq
    else
      redis.call('XADD', HIST, 'MAXLEN', MAX, int(seq) .. '-0', 'e', env, 't', published, 'x', int(x),
                 'k', kinds, 'i', id)
    end
    if AGE > 0 then redis.call('PEXPIRE', HIST, int(AGE)) else redis.call('PERSIST', HIST) end
  elseif over > 0 then
    redis.call('DEL', HIST)
  end
end

redis.call('HSET', META, 's', int(seq), 'f', int(st.f), 'l', int(st.l))
if stored and MAX > 0 then
  -- the history's life is known: max_age, or none
  if AGE > 0 then redis.call('PEXPIRE', META, int(math.max(AGE, IDLE, 1000))) else redis.call('PERSIST', META) end
else
  touch_meta()
end
if kinds == '' then kinds = '-' end
redis.call('PUBLISH', ARGV[14], 'm ' .. int(seq) .. ' ' .. st.e .. ' ' .. published .. ' ' ..
           kinds .. ' ' .. id .. ' ' .. env)
return { seq, st.e }
