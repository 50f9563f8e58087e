-- cursor_get.lua: a device's cursor on a channel, "<epoch> <seq>", or nil.
-- Reading it is use: the device's cursors live cursor_ttl_ms more.
--   KEYS[1] the device's cursor hash   ARGV[1] channel   ARGV[2] ttl_ms (0: none)
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
