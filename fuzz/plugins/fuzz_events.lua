-- fuzz_events: connection hooks for the fuzz harnesses, so that every C call
-- into Lua for a WebSocket connection (on_connect, on_close, on_ack,
-- on_message) runs. It keeps no state: a harness runs millions of inputs.
--   on_message  {"type":"echo",...}  -> the frame back, as {"type":"echo","got":...}
--               {"type":"deny"}      -> a denial (error frame)
--               anything else        -> no answer
local moonpush = require "moonpush"

return {
  name = "fuzz_events",
  on_connect = function(conn) moonpush.log("debug", "fuzz on_connect", conn.id, conn.user) end,
  on_close = function(conn, info) moonpush.log("debug", "fuzz on_close", conn.id, info and info.code) end,
  on_ack = function(conn, ack) moonpush.log("debug", "fuzz on_ack", conn.id, ack and ack.channel) end,
  on_message = function(conn, msg)
    if msg.type == "echo" then return { type = "echo", got = msg } end
    if msg.type == "deny" then return nil, { status = 403, code = "denied_by_fuzz", message = "denied" } end
  end,
}
