-- bench/configs/bench.lua: the config every bench/ scenario runs the server with.
--
-- Environment (read when the server loads this file):
--   MOONPUSH_BENCH_LISTEN  host:port to listen on (default 127.0.0.1:18080);
--                          bench/run.sh and bench/quick pick a free port
--   MOONPUSH_BENCH_TLS_LISTEN, MOONPUSH_BENCH_TLS_CERT, MOONPUSH_BENCH_TLS_KEY
--                          a TLS listener beside the plain one (loadgen --tls-port)
--   MOONPUSH_BENCH_USERS   how many unicast users to define (default 10000)
--   MOONPUSH_BENCH_MAX_OUTBOUND, MOONPUSH_BENCH_PING_MS, MOONPUSH_BENCH_IDLE_MS
--                          override limits.max_outbound_bytes (1048576),
--                          timeouts.ping_ms (25000) and idle_ms (120000)
--
-- Devices:
--   token "bench"        -> user "bench", may subscribe to any channel
--                           (broadcast/idle: many connections, device=d<i>)
--   token "bench-u<k>"   -> user "u<k>", k = 0 .. USERS-1 (unicast: one token
--                           per user, generated below rather than listed)
-- Publisher: "Authorization: Bearer publisher-secret".
--
-- Routes (loadgen --path / --pub-path pick them):
--   /ws           auth_token; no per-message Lua (the "bare" route)
--   /ws/ack       the same tokens, with acks (timeout 5 s, x2, 5 tries): devices
--                 ack, unacked messages are resent (scenario 4)
--   /ws/lua       bench_auth (bench/plugins: the token worked out in Lua) +
--                 format_json (a format hook: one call per message per route)
--   /ws/deflate   /ws with permessage_deflate = true (threshold 256 B, level 6):
--                 loadgen --deflate against /ws is the compression pair
--   /publish      auth_token; no per-message Lua
--   /publish/lua  auth_token + route_default (a route hook: one call per
--                 message; checks required fields and the data size)
--   /ws/lua + /publish/lua are scenario 6 (plugin cost) against /ws + /publish.
--
-- Limits are the defaults except max_connections (room for 19k+ devices on one
-- worker: the fd hard limit is 20,000 per process on these machines).
local getenv = os and os.getenv or function() return nil end

local function num(name, default) return tonumber(getenv(name) or "") or default end
local users = num("MOONPUSH_BENCH_USERS", 10000)

local publishers = { ["publisher-secret"] = { name = "bench", channels = { "*" } } }

-- One channel list shared by every identity (auth_token only reads it): the
-- token book is most of the Lua heap, and every GC cycle walks all of it, so
-- 10k copies of { "*" } would be paid again on every cycle.
local ANY = { "*" }
local tokens = {
  ["bench"] = { user = "bench", kind = "bench", channels = ANY },
}
for k = 0, users - 1 do
  tokens["bench-u" .. k] = { user = "u" .. k, kind = "bench", channels = ANY }
end

return {
  listen = getenv("MOONPUSH_BENCH_TLS_LISTEN") and {
    getenv("MOONPUSH_BENCH_LISTEN") or "127.0.0.1:18080",
    { addr = getenv("MOONPUSH_BENCH_TLS_LISTEN"),
      tls = { cert = getenv("MOONPUSH_BENCH_TLS_CERT"), key = getenv("MOONPUSH_BENCH_TLS_KEY") } },
  } or getenv("MOONPUSH_BENCH_LISTEN") or "127.0.0.1:18080",
  max_connections = 100000,

  limits = {
    -- 1 MiB, as the numbers in bench/README.md were measured with (the
    -- default is now 4 MiB); it must hold the largest body, hence 512 KiB
    max_outbound_bytes = num("MOONPUSH_BENCH_MAX_OUTBOUND", 1048576),
    max_body_bytes = 524288,
  },

  timeouts = {
    request_ms = 10000,
    idle_ms = num("MOONPUSH_BENCH_IDLE_MS", 120000),  -- longer than any scenario: idle runs measure holding
    ping_ms = num("MOONPUSH_BENCH_PING_MS", 25000),
  },

  -- relative to this file: bench/plugins (bench-only plugins), then the bundled ones
  plugin_path = { "../plugins", "../../plugins" },
  admin = { socket = false },       -- several bench servers may run side by side
  log = { access = false },         -- measure the server, not its access log

  routes = {
    {
      path = "/ws",
      type = "websocket",
      plugins = { { name = "auth_token", config = { tokens = tokens } } },
    },
    {
      path = "/ws/deflate",
      type = "websocket",
      permessage_deflate = true,
      plugins = { { name = "auth_token", config = { tokens = tokens } } },
    },
    {
      path = "/ws/ack",
      type = "websocket",
      acks = { timeout_ms = 5000, factor = 2, max_tries = 5, jitter = 0.2 },
      plugins = { { name = "auth_token", config = { tokens = tokens } } },
    },
    {
      path = "/ws/lua",
      type = "websocket",
      plugins = {
        { name = "bench_auth", config = { users = users } },
        { name = "format_json" },
      },
    },
    {
      path = "/publish",
      type = "publish",
      plugins = { { name = "auth_token", config = { publishers = publishers } } },
    },
    {
      path = "/publish/lua",
      type = "publish",
      plugins = {
        { name = "auth_token", config = { publishers = publishers } },
        { name = "route_default", config = { require_fields = { "t", "n" }, max_data_bytes = 65536 } },
      },
    },
    { path = "/health", type = "health" },
  },
}
