-- moonpush example: a shop chain. Old POS tills get plain text lines, the
-- web back office gets JSON over a JWT-authenticated socket, the ERP and the
-- web shop publish through a rate-limited /publish.
--
--   ./moonpush -c examples/pos.lua
--
--   /ws/pos   tills: tokens from examples/pos_tokens.lua (auth_table, re-read
--             when the file changes), frames like MSG|store:12|7|<id>|Order 17 paid
--   /ws       browsers: HS256 JWTs (sub = user, channels = [...]), JSON frames
--   /publish  publishers by static token; per-IP and per-publisher limits;
--             data must be an object with a "text" field
--   /health   liveness
--
-- A till token:   ?token=till-12-1-secret
-- A browser JWT:  header {"alg":"HS256","typ":"JWT"}, payload
--                 {"sub":"alice","aud":"backoffice","channels":["store:*","prices"],
--                  "exp":<unix time>}
--                 signed with the secret below (see spec/10_auth_jwt_spec.lua).
-- Publish:        curl -H 'Authorization: Bearer erp-secret' \
--                   -d '{"channel":"store:12","data":{"text":"Order 17 paid"}}' \
--                   localhost:8080/publish

-- Files next to this config are found wherever the server is started from.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

return {
  listen = "0.0.0.0:8080",

  -- Plugins are looked up in each directory in turn (relative to this file):
  -- the bundled ones, then this example's own (auth_table).
  plugin_path = { "../plugins", "plugins" },

  routes = {
    {
      path = "/ws/pos",
      type = "websocket",
      plugins = {
        { name = "ratelimit", config = { per_ip = { rate = 1, burst = 20 }, phases = { "connect" } } },
        { name = "auth_table", config = { file = here .. "/pos_tokens.lua", reload_interval = 5 } },
        { name = "format_pos_legacy", config = { field = "text", missing = "-", ascii = true, line_end = "\r\n" } },
      },
    },
    {
      path = "/ws",
      type = "websocket",
      plugins = {
        { name = "ratelimit", config = {
            per_ip = { rate = 2, burst = 20 },     -- handshakes and client frames
            per_user = { rate = 10, burst = 50 },  -- client frames of one user
        } },
        { name = "auth_jwt", config = {
            secret = "change-me-to-32-or-more-random-bytes!!",
            leeway = 30,
            audience = "backoffice",
            require_exp = true,
        } },
        { name = "format_json" },
      },
    },
    {
      path = "/publish",
      type = "publish",
      plugins = {
        { name = "ratelimit", config = {
            per_ip = { rate = 50, burst = 100 },
            per_publisher = { rate = 200, burst = 400 },
        } },
        { name = "auth_token", config = {
            publishers = {
              ["erp-secret"] = { name = "erp", channels = { "store:*", "prices" } },
              ["webshop-secret"] = { name = "webshop", channels = { "store:*" } },
            },
        } },
        { name = "route_default", config = {
            require_fields = { "text" },
            max_data_bytes = 2048,
        } },
      },
    },
    { path = "/health", type = "health" },
  },
}
