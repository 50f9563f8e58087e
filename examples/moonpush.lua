-- moonpush example config: one node, embedded store, static tokens.
-- `make run` starts the server with this file. Every key is optional except
-- routes; defaults are listed in docs/operations.md.
return {
  listen = "0.0.0.0:8080",
  -- Several listeners, some with TLS (https://, wss://; docs/operations.md, TLS):
  -- listen = {
  --   "0.0.0.0:8080",
  --   { addr = "0.0.0.0:8443", tls = { cert = "tls/fullchain.pem", key = "tls/privkey.pem" } },
  -- },
  max_connections = 10000,   -- keep below `ulimit -n` - 100: the server warns at start if not
  -- pid_file = "moonpush.pid",  -- written once listening, removed at exit; a live
                                 -- moonpush named in it makes a second start refuse

  limits = {
    max_header_bytes = 8192,       -- request line + headers
    max_body_bytes = 1048576,      -- publish body
    max_batch = 1000,              -- items in one batch publish
    max_message_bytes = 65536,     -- one client WebSocket message
    max_outbound_bytes = 4194304,  -- queued, unsent bytes per connection; past it close 4001.
                                   -- Must hold the largest message (max_body_bytes + 512) or
                                   -- the config is refused; unset: max(4 MiB, 4 x that)
    max_subscriptions = 64,        -- channels per connection (besides user:<id>)
  },

  -- Channel history (the memory store): resume, offline delivery, resends.
  history = {
    max_messages = 100,        -- per channel, unless a pattern below says otherwise
    max_age_ms = 3600000,
    channels = {
      { pattern = "user:*", max_messages = 500, max_age_ms = 86400000 },  -- offline devices catch up a day
    },
  },

  timeouts = {
    request_ms = 10000,  -- whole HTTP request / handshake must arrive within
    idle_ms = 60000,     -- close a WebSocket silent this long (code 4000)
    ping_ms = 25000,     -- ping a WebSocket silent this long
  },

  -- Plugin names are looked up in plugins/ next to this file (your own),
  -- then among the bundled plugins (the source tree's plugins/, or
  -- PREFIX/share/moonpush/plugins once installed by `make install`).
  plugin_dir = "plugins",

  -- The admin socket: under systemd (RuntimeDirectory=moonpush, see
  -- dist/moonpush.service) in /run/moonpush, else next to this file.
  admin = { socket = os.getenv("RUNTIME_DIRECTORY") and os.getenv("RUNTIME_DIRECTORY") .. "/moonpush-admin.sock" },

  routes = {
    {
      path = "/ws",
      type = "websocket",
      -- Browser pages of these origins may open a WebSocket here (the demo,
      -- examples/web, served by `python3 -m http.server -b 127.0.0.1 8000`).
      -- Default without this list: only a page of the server's own origin
      -- (a handshake whose Origin differs from its Host gets 403
      -- origin_not_allowed); clients that send no Origin (apps, curl, other
      -- servers) are not affected. "*" lets every page in: only for token
      -- auth that a browser never sends on its own (no cookies).
      origins = { "http://127.0.0.1:8000", "http://localhost:8000" },
      -- Compress messages of 256 bytes or more for clients that offer
      -- permessage-deflate (browsers do): once per message, shared by every
      -- such connection (docs/operations.md, Compression). Or
      -- { threshold = BYTES, level = 1..9 }.
      permessage_deflate = true,
      plugins = {
        { name = "auth_token", config = {
            tokens = {
              -- token             identity ("*": every channel except other
              -- users' personal user:<id> channels; "user:*" would name those)
              ["alice-phone"]  = { user = "alice", device = "phone", kind = "mobile", channels = { "news", "orders:*" } },
              ["alice-laptop"] = { user = "alice", device = "laptop", kind = "web", channels = { "news" } },
              ["bob"]          = { user = "bob", kind = "web", channels = { "*" } },
            },
        } },
      },
    },
    {
      -- Publish, history and presence routes need an auth plugin (publisher
      -- tokens; a device token is refused there with 403): without one the
      -- config is refused unless the route says anonymous = true.
      path = "/publish",
      type = "publish",
      -- The demo page (examples/web, served on port 8000 as the README says)
      -- publishes from the browser: let its origins call this route.
      cors = { origins = { "http://127.0.0.1:8000", "http://localhost:8000" }, max_age = 600 },
      plugins = {
        { name = "auth_token", config = {
            publishers = {
              ["publisher-secret"] = { name = "backend", channels = { "*" } },
            },
        } },
      },
    },
    {
      -- Devices that must not miss anything: they ack, unacked messages are
      -- resent, and a reconnecting device gets what it has not acked.
      path = "/ws/reliable",
      type = "websocket",
      acks = { timeout_ms = 5000, factor = 2, max_tries = 5, jitter = 0.2 },
      plugins = {
        { name = "auth_token", config = {
            tokens = {
              ["till-1"] = { user = "store-12", device = "till-1", kind = "pos", channels = { "store-12:*" } },
            },
        } },
      },
    },
    {
      -- Server-Sent Events for clients that cannot use WebSocket:
      --   new EventSource("http://host:8080/sse?token=bob&channels=news")
      -- Same tokens and channel checks as /ws; a reconnect resumes every
      -- channel from the last event id (docs/protocol.md, SSE). cors lets
      -- pages on these origins open it.
      path = "/sse",
      type = "sse",
      cors = { origins = { "http://127.0.0.1:8000", "http://localhost:8000" } },
      plugins = {
        { name = "auth_token", config = {
            tokens = {
              ["alice-laptop"] = { user = "alice", device = "laptop", kind = "web", channels = { "news" } },
              ["bob"]          = { user = "bob", kind = "web", channels = { "*" } },
            },
        } },
      },
    },
    -- Backend reads: a channel's history, a user's connections.
    { path = "/history", type = "history", plugins = {
        { name = "auth_token", config = { publishers = { ["publisher-secret"] = { name = "backend", channels = { "*" } } } } },
    } },
    { path = "/presence", type = "presence", plugins = {
        { name = "auth_token", config = { publishers = { ["publisher-secret"] = { name = "backend", channels = { "*" } } } } },
    } },
    { path = "/health", type = "health" },
    -- Prometheus. Add an auth plugin here to require a token.
    { path = "/metrics", type = "metrics" },
  },
}
