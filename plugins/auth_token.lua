-- auth_token: static tokens from the route's config.
--
-- config = {
--   tokens = { [token] = { user = "alice", device = "phone", kind = "mobile",
--                          channels = { "news", "orders:*" } } },   -- devices
--   publishers = { [token] = { name = "backend", channels = { "*" } } }, -- /publish
-- }
-- The token comes from `Authorization: Bearer <token>` or `?token=`.
-- On a websocket or sse route only `tokens` are accepted; on the backend routes
-- (publish, history, presence, metrics) only `publishers`, whose `channels`
-- say what they may publish to and read. Identities carry their role
-- ("device" from tokens, "publisher" from publishers), so the core refuses a
-- token of one book on a route of the other kind even in a custom chain.

local type, pairs, setmetatable = type, pairs, setmetatable

local _M = { name = "auth_token" }

-- A book: token = identity. Tokens are secrets: messages never show them.
local CHANNELS = { type = "list", of = "string", hint = "a list of channel patterns" }
local function book(identity)
  return { type = "table", keys = { type = "string", min_len = 1 }, secret_keys = true,
           values = { type = "table", fields = identity } }
end

_M.schema = {
  tokens = book({ user = { type = "string", required = true, min_len = 1 }, device = "string", kind = "string",
                  channels = CHANNELS }),
  publishers = book({ name = { type = "string", required = true, min_len = 1 }, channels = CHANNELS }),
}

function _M.validate(conf)
  if conf.tokens == nil and conf.publishers == nil then
    return nil, "set tokens (devices) or publishers"
  end
  return true
end

-- The identity with its role, made once per config entry (weak keys: a
-- reload's new config makes new ones).
local device_roles = setmetatable({}, { __mode = "k" })
local publisher_roles = setmetatable({}, { __mode = "k" })

function _M.auth(req, conf)
  if not req.token then
    return nil, { status = 401, code = "unauthorized", message = "missing token: send Authorization: Bearer <token> or ?token=" }
  end
  -- Never fall back from one book to the other: a device token is no
  -- publisher credential, and the reverse.
  local device = req.route_type == "websocket" or req.route_type == "sse"
  local book = device and conf.tokens or (not device and conf.publishers)
  local id = book and book[req.token]
  if not id then
    return nil, { status = 401, code = "unauthorized", message = "unknown token" }
  end
  local roles = device and device_roles or publisher_roles
  local out = roles[id]
  if not out then
    out = { role = device and "device" or "publisher" }
    for k, v in pairs(id) do out[k] = v end
    roles[id] = out
  end
  return out
end

return _M
