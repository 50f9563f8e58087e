-- moonpush.core: the Lua side of the C<->Lua boundary (src/lua_host.c).
--
-- C calls exactly these functions: load(path) once at start, and
-- auth(route_index, req) per WebSocket handshake or publish request. They
-- run the route's plugin chain and turn what plugins return into the plain
-- shape C reads, so plugins never see C and C never sees plugins.

local config = require "moonpush.config"

local type, ipairs, pairs, tostring, tonumber = type, ipairs, pairs, tostring, tonumber
local char, gsub, gmatch, match = string.char, string.gsub, string.gmatch, string.match

local _M = { config = nil }

local DEFAULT_CODES = { [400] = "bad_request", [401] = "unauthorized", [403] = "forbidden",
                        [429] = "rate_limited", [500] = "plugin_error", [503] = "unavailable" }

local function unescape(s)
  s = gsub(s, "+", " ")
  return (gsub(s, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

local function parse_query(qs)
  local q = {}
  for pair in gmatch(qs, "[^&]+") do
    local k, v = match(pair, "^([^=]*)=?(.*)$")
    k = unescape(k)
    if q[k] == nil then q[k] = unescape(v) end
  end
  return q
end

local function split_channels(s)
  local list = {}
  if type(s) ~= "string" then return list end
  for name in gmatch(s, "[^,]+") do list[#list + 1] = name end
  return list
end

function _M.load(path)
  local cfg, err = config.load(path)
  if not cfg then return nil, err end
  _M.config = cfg
  return cfg
end

-- The request as plugins see it (docs/plugins.md, "The request").
local function build_request(route, raw)
  local query = parse_query(raw.query_string or "")
  local auth = raw.headers.authorization
  local token = auth and match(auth, "^[Bb]earer%s+(%S+)%s*$") or query.token
  return {
    method = raw.method,
    path = raw.path,
    route = route.path,
    route_type = route.type,
    query = query,
    query_string = raw.query_string,
    headers = raw.headers,
    remote_addr = raw.remote_addr,
    token = token,
  }
end

local function denial(status, code, message)
  return nil, { status = status, code = code or DEFAULT_CODES[status] or "denied", message = message }
end

local function normalise_denial(plugin_name, d)
  if type(d) == "string" then return denial(401, "unauthorized", d) end
  if type(d) ~= "table" then return denial(401, "unauthorized", "denied by " .. plugin_name) end
  local status = tonumber(d.status) or 401
  if status < 400 or status > 599 then status = 500 end
  return denial(status, d.code or d.error, tostring(d.message or d.reason or ("denied by " .. plugin_name)))
end

local function identity_for_c(route, req, id)
  local allow = {}
  if type(id.channels) == "table" then
    for _, p in ipairs(id.channels) do allow[#allow + 1] = tostring(p) end
  end
  local out = {
    user = tostring(id.user or id.name or "anonymous"),
    device = tostring(id.device or req.query.device or "default"),
    kind = tostring(id.kind or "default"),
    allow = allow,
    subscribe = route.type == "websocket" and split_channels(req.query.channels) or {},
  }
  return out
end

-- Runs the auth phase: the first plugin that returns an identity or a
-- denial decides. Returns identity (C shape) or nil, denial.
function _M.auth(route_index, raw)
  local route = _M.config.routes[route_index]
  local req = build_request(route, raw)
  if not route.has_auth then
    return identity_for_c(route, req, { channels = { "*" } })
  end
  for _, link in ipairs(route.chain) do
    local hook = link.plugin.auth
    if hook then
      local ok, id, err = pcall(hook, req, link.config)
      if not ok then
        return nil, { status = 500, code = "plugin_error", message = "plugin " .. link.name .. " failed",
                      log = tostring(id) }
      end
      if id then
        if type(id) ~= "table" then
          return denial(500, "plugin_error", "plugin " .. link.name .. " returned a non-table identity")
        end
        return identity_for_c(route, req, id)
      end
      if err then return normalise_denial(link.name, err) end
    end
  end
  return denial(401, "unauthorized", "no auth plugin accepted the request")
end

return _M
