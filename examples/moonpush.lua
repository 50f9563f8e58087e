-- moonpush example config: one node, embedded store, static tokens.
-- `make run` starts the server with this file. Every key is optional except
-- routes; defaults are listed in docs/operations.md.
return {
  listen = "0.0.0.0:8080",
  max_connections = 10000,

  limits = {
    max_header_bytes = 8192,       -- request line + headers
    max_body_bytes = 1048576,      -- publish body
    max_batch = 1000,              -- items in one batch publish
    max_message_bytes = 65536,     -- one client WebSocket message
    max_outbound_bytes = 1048576,  -- queued, unsent bytes per connection
    max_subscriptions = 64,        -- channels per connection (besides user:<id>)
  },

  timeouts = {
    request_ms = 10000,  -- whole HTTP request / handshake must arrive within
    idle_ms = 60000,     -- close a WebSocket silent this long (code 4000)
    ping_ms = 25000,     -- ping a WebSocket silent this long
  },

  -- Where plugin names are looked up (relative to this file).
  plugin_dir = "../plugins",

  routes = {
    {
      path = "/ws",
      type = "websocket",
      plugins = {
        { name = "auth_token", config = {
            tokens = {
              -- token             identity
              ["alice-phone"]  = { user = "alice", device = "phone", kind = "mobile", channels = { "news", "orders:*" } },
              ["alice-laptop"] = { user = "alice", device = "laptop", kind = "web", channels = { "news" } },
              ["bob"]          = { user = "bob", kind = "web", channels = { "*" } },
            },
        } },
      },
    },
    {
      path = "/publish",
      type = "publish",
      plugins = {
        { name = "auth_token", config = {
            publishers = {
              ["publisher-secret"] = { name = "backend", channels = { "*" } },
            },
        } },
      },
    },
    { path = "/health", type = "health" },
  },
}
