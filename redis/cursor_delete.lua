-- cursor_delete.lua: every cursor of one device (its hash, KEYS[1]).
-- A script, not a plain DEL, so it keeps its place among the device's
-- other cursor scripts even if a NOSCRIPT makes them go again (redis.c).
return redis.call('DEL', KEYS[1])
