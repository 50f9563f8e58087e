-- read.lua (after lib.lua): the channel's positions and up to max retained
-- messages after since. Expired entries are skipped (and dropped from the
-- head). An unknown channel is not created.
--   ARGV[7] the reader's epoch ("": none)   ARGV[8] since   ARGV[9] max
-- Returns {epoch, last_seq, floor, more, then per message:
--          seq, published_ms, expires_ms, id, kinds, envelope}
-- (epoch "" for an unknown channel). since counts only in the reader's
-- epoch: from another one the read starts at the beginning.
local st = load(false)
if not st then return { '', 0, 0, 0 } end
local floor = st.f
prune(st)
if st.f ~= floor then redis.call('HSET', META, 'f', int(st.f)) end
touch_meta()

local since, max = tonumber(ARGV[8]), tonumber(ARGV[9])
if ARGV[7] ~= '' and ARGV[7] ~= st.e then since = 0 end
local out = { st.e, st.s, st.f, 0 }
local start, got = '(' .. int(since) .. '-0', 0
while true do
  local batch = redis.call('XRANGE', HIST, start, '+', 'COUNT', math.max(max - got + 1, 16))
  if #batch == 0 then return out end
  for _, entry in ipairs(batch) do
    local fl = fields(entry)
    local x = tonumber(fl.x)
    if x == 0 or x > NOW then
      if got == max then
        out[4] = 1
        return out
      end
      got = got + 1
      local n = #out
      out[n + 1] = seq_of(entry[1])
      out[n + 2] = fl.t
      out[n + 3] = fl.x
      out[n + 4] = fl.i
      out[n + 5] = fl.k
      out[n + 6] = fl.e
    end
    start = '(' .. entry[1]
  end
end
