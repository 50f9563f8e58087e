-- cursor_advance.lua: moves a device's cursor forward (store.h,
-- mp_store_cursor_advance). The channel lives on another shard maybe, so
-- its position was read first (position.lua) and comes in ARGV.
--   KEYS[1] the device's cursor hash
--   ARGV[1] channel   ARGV[2] its epoch ("" unknown)   ARGV[3] its last seq
--   ARGV[4] seq   ARGV[5] the caller's epoch ("" don't check)   ARGV[6] ttl_ms
-- Returns {status, epoch, seq}: status "OK", "STALE", "ERANGE" or "EEPOCH".
local channel, epoch, last = ARGV[1], ARGV[2], tonumber(ARGV[3])
local seq, want, ttl = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
if epoch == '' or seq > last then return { 'ERANGE', '', 0 } end
if want ~= '' and want ~= epoch then return { 'EEPOCH', '', 0 } end
local status, out_seq = 'OK', ARGV[4]
local cur = redis.call('HGET', KEYS[1], channel)
if cur then
  local ce, cs = string.match(cur, '^(%S+) (%d+)$')
  if ce == epoch and tonumber(cs) >= seq then status, out_seq = 'STALE', cs end
end
if status == 'OK' then redis.call('HSET', KEYS[1], channel, epoch .. ' ' .. ARGV[4]) end
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
return { status, epoch, out_seq }
