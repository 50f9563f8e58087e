-- auth_token: static tokens from the route's config.
--
-- config = {
--   tokens = { [token] = { user = "alice", device = "phone", kind = "mobile",
--                          channels = { "news", "orders:*" } } },   -- devices
--   publishers = { [token] = { name = "backend", channels = { "*" } } }, -- /publish
-- }
-- The token comes from `Authorization: Bearer <token>` or `?token=`.
-- On a websocket route only `tokens` are accepted; on the backend routes
-- (publish, history, presence, metrics) only `publishers`, whose `channels`
-- say what they may publish to and read. Identities carry their role
-- ("device" from tokens, "publisher" from publishers), so the core refuses a
-- token of one book on a route of the other kind even in a custom chain.

local type, pairs, tostring, setmetatable = type, pairs, tostring, setmetatable

local _M = { name = "auth_token" }

local KEYS = {
  tokens = { user = true, device = true, kind = true, channels = true },
  publishers = { name = true, channels = true },
}

local function check_table(conf, key, required)
  local t = conf[key]
  if t == nil then return true end
  if type(t) ~= "table" then return nil, key .. " must be a table of token = identity" end
  for token, id in pairs(t) do
    if type(token) ~= "string" or token == "" then return nil, key .. ": tokens must be non-empty strings" end
    if type(id) ~= "table" then return nil, key .. "[" .. token .. "] must be a table" end
    for k in pairs(id) do
      if not KEYS[key][k] then
        return nil, key .. "[...]: unknown key " .. tostring(k) .. " (" .. (key == "tokens" and "user, device, kind, channels" or "name, channels") .. ")"
      end
    end
    if required and type(id[required]) ~= "string" then
      return nil, key .. "[...]." .. required .. " must be a string"
    end
    if id.channels ~= nil and type(id.channels) ~= "table" then
      return nil, key .. "[...].channels must be a list of channel patterns"
    end
  end
  return true
end

function _M.validate(conf)
  local ok, err = check_table(conf, "tokens", "user")
  if not ok then return nil, err end
  ok, err = check_table(conf, "publishers", "name")
  if not ok then return nil, err end
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
  local device = req.route_type == "websocket"
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
