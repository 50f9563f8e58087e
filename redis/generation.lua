-- generation.lua: run by every node on every (re)connect to a shard,
-- before anything else. mp:gen names the shard's current generation; every
-- channel epoch records the generation it was made in, and a channel whose
-- generation is not the current one gets a new epoch (lib.lua, load).
-- The generation changes when the shard may have lost data:
--   - mp:gen is missing (a new or emptied Redis), or
--   - the Redis process is another one (run_id differs from mp:run) and it
--     is not durable (appendonly yes + appendfsync always): a restart from
--     an RDB snapshot or an AOF fsynced every second may have lost writes
--     that were answered.
--   KEYS[1] mp:gen   KEYS[2] mp:run
--   ARGV[1] INFO's run_id   ARGV[2] "1" if durable   ARGV[3] a new generation to use
local gen = redis.call('GET', KEYS[1])
local run = redis.call('GET', KEYS[2])
if not gen or (run ~= ARGV[1] and ARGV[2] ~= '1') then
  gen = ARGV[3]
  redis.call('SET', KEYS[1], gen)
end
redis.call('SET', KEYS[2], ARGV[1])
return gen
