-- moonpush.config: loads a config file, validates it whole, fills defaults.
--
-- A config is a Lua file returning a table (see examples/moonpush.lua and
-- docs/operations.md). load() either returns a complete, normalised config
-- or nil and one message naming the first problem: nothing half-loaded.

local plugins = require "moonpush.plugins"

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local format, match = string.format, string.match

local _M = {}

local DEFAULTS = {
  listen = "0.0.0.0:8080",
  max_connections = 10000,
  limits = {
    max_header_bytes = 8192,
    max_body_bytes = 1048576,
    max_batch = 1000,
    max_message_bytes = 65536,
    max_outbound_bytes = 1048576,
    max_subscriptions = 64,
    max_channels = 1000000,
  },
  timeouts = {
    request_ms = 10000,
    idle_ms = 60000,
    ping_ms = 25000,
  },
  plugin_budget = 1000000,   -- Lua instructions per hook call
}

local ROUTE_TYPES = { websocket = true, publish = true, health = true }

local function dirname(path)
  return match(path, "^(.*)/[^/]*$") or "."
end

local function positive_int(v)
  return type(v) == "number" and v >= 1 and v == math.floor(v)
end

local function check_section(cfg, name)
  local given = cfg[name]
  if given ~= nil and type(given) ~= "table" then
    return nil, format("%s must be a table", name)
  end
  local out = {}
  for key, default in pairs(DEFAULTS[name]) do
    local v = given and given[key]
    if v == nil then
      v = default
    elseif not positive_int(v) then
      return nil, format("%s.%s must be a positive integer, got %s", name, key, tostring(v))
    end
    out[key] = v
  end
  for key in pairs(given or {}) do
    if DEFAULTS[name][key] == nil then
      return nil, format("unknown key %s.%s", name, tostring(key))
    end
  end
  return out
end

local function parse_listen(s)
  if type(s) ~= "string" then return nil end
  local host, port = match(s, "^%[(.+)%]:(%d+)$")
  if not host then host, port = match(s, "^(.*):(%d+)$") end
  port = tonumber(port)
  if not host or not port or port > 65535 then return nil end
  return host, port
end

local function check_route(i, r, plugin_dirs)
  local where = format("routes[%d]", i)
  if type(r) ~= "table" then return nil, where .. " must be a table" end
  if type(r.path) ~= "string" or not match(r.path, "^/[%w%-%._~/]*$") then
    return nil, where .. ".path must be a string starting with /"
  end
  local path = r.path
  if #path > 1 then path = path:gsub("/+$", "") end
  if not ROUTE_TYPES[r.type] then
    return nil, format("%s.type must be websocket, publish or health, got %s", where, tostring(r.type))
  end
  if r.budget ~= nil and not positive_int(r.budget) then
    return nil, where .. ".budget must be a positive integer (Lua instructions per hook call)"
  end
  local chain, err = plugins.load_chain(r.plugins or {}, plugin_dirs, where)
  if not chain then return nil, err end
  if r.type == "websocket" and not chain.has_auth then
    return nil, where .. ": a websocket route needs a plugin with an auth hook"
  end
  return { path = path, type = r.type, chain = chain, has_auth = chain.has_auth, budget = r.budget }
end

-- Returns the normalised config, or nil and a message.
function _M.load(path)
  local chunk, err = loadfile(path)
  if not chunk then return nil, err end
  local ok, cfg = pcall(chunk)
  if not ok then return nil, path .. ": " .. tostring(cfg) end
  if type(cfg) ~= "table" then return nil, path .. ": the config file must return a table" end

  local out = {}
  local host, port = parse_listen(cfg.listen or DEFAULTS.listen)
  if not host then return nil, "listen must be \"host:port\", got " .. tostring(cfg.listen) end
  out.listen_host, out.listen_port = host, port

  out.max_connections = cfg.max_connections or DEFAULTS.max_connections
  if not positive_int(out.max_connections) then return nil, "max_connections must be a positive integer" end
  out.plugin_budget = cfg.plugin_budget or DEFAULTS.plugin_budget
  if not positive_int(out.plugin_budget) then return nil, "plugin_budget must be a positive integer" end

  out.limits, err = check_section(cfg, "limits")
  if not out.limits then return nil, err end
  out.timeouts, err = check_section(cfg, "timeouts")
  if not out.timeouts then return nil, err end
  if out.timeouts.ping_ms >= out.timeouts.idle_ms then
    return nil, "timeouts.ping_ms must be less than timeouts.idle_ms"
  end

  -- plugin_path: directories searched in order; plugin_dir: one directory.
  local dirs = cfg.plugin_path or { cfg.plugin_dir or "plugins" }
  if type(dirs) == "string" then dirs = { dirs } end
  if type(dirs) ~= "table" or #dirs == 0 then return nil, "plugin_path must be a list of directories" end
  out.plugin_path = {}
  for i, d in ipairs(dirs) do
    if type(d) ~= "string" then return nil, "plugin_path entries must be strings" end
    if d:sub(1, 1) ~= "/" then d = dirname(path) .. "/" .. d end
    out.plugin_path[i] = d
  end

  if type(cfg.routes) ~= "table" or #cfg.routes == 0 then
    return nil, "routes must be a non-empty list"
  end
  out.routes = {}
  local seen = {}
  for i, r in ipairs(cfg.routes) do
    local route, rerr = check_route(i, r, out.plugin_path)
    if not route then return nil, rerr end
    if seen[route.path] then return nil, "two routes for path " .. route.path end
    seen[route.path] = true
    out.routes[i] = route
  end
  return out
end

return _M
