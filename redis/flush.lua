-- flush.lua (after lib.lua): drops the channel's history and gives it a
-- new epoch; its seq goes on. Tells watchers on the bus:
-- "r <last_seq> <epoch>". Returns 1, or 0 for an unknown channel.
--   ARGV[7] bus channel
local v = redis.call('HMGET', META, 'e', 's')
if not v[1] then return 0 end
local s = v[2]
redis.call('DEL', HIST)
redis.call('HSET', META, 'e', CANDIDATE, 'g', GEN, 'f', s, 'l', s)
touch_meta()
redis.call('PUBLISH', ARGV[7], 'r ' .. s .. ' ' .. CANDIDATE)
return 1
