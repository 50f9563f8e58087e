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
prune(st)
local seq = redis.call('HINCRBY', META, 's', 1)
local env = '{"type":"message","channel":"' .. channel .. '","seq":' .. int(seq) ..
            ',"id":"' .. id .. '","data":' .. data .. '}'

if ARGV[11] == '1' then
  -- Make room: exactly max_messages stay, so the floor is exact. A trimmed
  -- message past its own ttl was no loss and does not move it.
  local keep = MAX > 0 and MAX - 1 or 0
  local over = redis.call('XLEN', HIST) - keep
  if over > 0 then
    for _, entry in ipairs(redis.call('XRANGE', HIST, '-', '+', 'COUNT', over)) do
      local fl = fields(entry)
      local x = tonumber(fl.x)
      if fl.a == '1' or x == 0 or x > NOW then st.f = math.max(st.f, seq_of(entry[1])) end
    end
    redis.call('XTRIM', HIST, 'MAXLEN', keep)
  end
  if MAX > 0 then
    local life, by_age = AGE, true
    if ttl > 0 and (AGE == 0 or ttl < AGE) then life, by_age = ttl, false end
    local x = life > 0 and NOW + life or 0
    local entry = { 'e', env, 't', published, 'x', int(x), 'k', kinds, 'i', id }
    if by_age and life > 0 then
      entry[#entry + 1] = 'a'
      entry[#entry + 1] = '1'
      st.l = seq
    end
    redis.call('XADD', HIST, int(seq) .. '-0', unpack(entry))
    if AGE > 0 then redis.call('PEXPIRE', HIST, int(AGE)) else redis.call('PERSIST', HIST) end
  end
end

redis.call('HSET', META, 'f', int(st.f), 'l', int(st.l))
touch_meta()
if kinds == '' then kinds = '-' end
redis.call('PUBLISH', ARGV[14], 'm ' .. int(seq) .. ' ' .. st.e .. ' ' .. published .. ' ' ..
           kinds .. ' ' .. id .. ' ' .. env)
return { seq, st.e }
