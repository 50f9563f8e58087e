-- The config of the fuzz harnesses (fuzz/*.c, docs/fuzzing.md): one route of
-- each kind with the bundled plugins, so an input reaches every C path that
-- calls into Lua. Limits are small so that an input reaches them; timeouts
-- are long so that none fires while an input runs (fuzz/fuzz.h).
return {
  listen = "127.0.0.1:0",   -- the harness picks a free port
  max_connections = 64,
  plugin_budget = 200000,
  plugin_path = { "../plugins", "plugins" },

  limits = {
    max_header_bytes = 2048,
    max_body_bytes = 16384,
    max_batch = 20,
    max_message_bytes = 4096,
    max_outbound_bytes = 65536,
    max_subscriptions = 6,
    max_channels = 32,
  },

  history = {
    max_messages = 8,
    max_channels = 32,
    max_bytes = 262144,
    max_cursors = 64,
    channels = { { pattern = "user:*", max_messages = 4 } },
  },

  timeouts = { request_ms = 600000, idle_ms = 7200000, ping_ms = 3600000 },
  admin = { socket = false },
  log = { level = "debug", file = "/dev/null", access = true },

  routes = {
    { path = "/ws", type = "websocket", plugins = {
        { name = "auth_token", config = { tokens = {
            ["alice-phone"] = { user = "alice", device = "phone", kind = "mobile", channels = { "news", "orders:*" } },
            ["bob"] = { user = "bob", kind = "web", channels = { "*" } },
        } } },
        { name = "fuzz_events" },
    } },
    { path = "/ws/reliable", type = "websocket",
      acks = { timeout_ms = 5000, factor = 2, max_tries = 3, jitter = 0.2 },
      plugins = {
        { name = "ratelimit", config = { per_user = { rate = 1000, burst = 1000 }, phases = { "message" } } },
        { name = "auth_token", config = { tokens = {
            ["till-1"] = { user = "store-12", device = "till-1", kind = "pos", channels = { "store-12:*", "news" } },
        } } },
        { name = "fuzz_events" },
    } },
    { path = "/ws/pos", type = "websocket", duplicate_devices = "allow", plugins = {
        { name = "auth_token", config = { tokens = {
            ["till-2"] = { user = "store-12", device = "till-2", kind = "pos", channels = { "*" } },
        } } },
        { name = "format_pos_legacy", config = { field = "text", ascii = true } },
    } },
    { path = "/publish", type = "publish", plugins = {
        { name = "auth_token", config = { publishers = {
            ["publisher-secret"] = { name = "backend", channels = { "*" } },
            ["news-publisher"] = { name = "newsroom", channels = { "news", "orders:*" } },
        } } },
    } },
    { path = "/publish/routed", type = "publish", plugins = {
        { name = "auth_token", config = { publishers = {
            ["publisher-secret"] = { name = "backend", channels = { "*" } },
        } } },
        { name = "route_default", config = { prefix = "{publisher}:", max_data_bytes = 2048, kinds = { "pos", "web" } } },
    } },
    { path = "/history", type = "history", plugins = {
        { name = "auth_token", config = { publishers = { ["publisher-secret"] = { name = "backend", channels = { "*" } } } } },
    } },
    { path = "/presence", type = "presence", plugins = {
        { name = "auth_token", config = { publishers = { ["publisher-secret"] = { name = "backend", channels = { "*" } } } } },
    } },
    { path = "/health", type = "health" },
    { path = "/metrics", type = "metrics" },
  },
}
