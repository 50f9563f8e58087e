-- moonpush.plugins: finds, loads and validates plugins; builds route chains.
--
-- A plugin is a Lua file returning a table of hook functions (see
-- docs/plugins.md). A chain is the ordered list of { name, plugin, config,
-- raw } a route names: raw is the operator's config table, config the copy
-- the hooks get. A plugin may declare its options in `schema` (checked by
-- moonpush.schema, which fills the defaults into that copy) and rules
-- across options in `validate(config)`, returning true or nil, err. Both
-- run at load, so hooks can trust their config.

local type, pairs, ipairs, tostring, setmetatable = type, pairs, ipairs, tostring, setmetatable
local format, match, concat = string.format, string.match, table.concat
local file_stamp = require("moonpush.host").file_stamp
local schema = require "moonpush.schema"

local _M = {}

_M.HOOKS = { auth = true, ratelimit = true, route = true, format = true,
             on_connect = true, on_close = true, on_message = true, on_ack = true }

-- Count hooks (the instruction budget) only fire in the interpreter:
-- JIT-compiled plugin (or config) code could loop forever unseen.
function _M.disable_jit(fn)
  local ok, jit = pcall(require, "jit")
  if ok and jit and jit.off then jit.off(fn, true) end
end
local disable_jit = _M.disable_jit

-- Loads one plugin file into a fresh table. Returns plugin or nil, err
-- (with file and line for syntax and load-time errors).
function _M.load_path(file, name)
  local stamp = file_stamp(file)   -- before reading: an edit after it shows as a change
  local chunk, err = loadfile(file)
  if not chunk then return nil, err end
  disable_jit(chunk)
  local ok, plugin = pcall(chunk)
  if not ok then return nil, tostring(plugin) end
  if type(plugin) ~= "table" then return nil, file .. ": a plugin must return a table" end
  local hooks = 0
  for k, v in pairs(plugin) do
    if _M.HOOKS[k] then
      if type(v) ~= "function" then return nil, format("%s: hook %s must be a function", file, k) end
      hooks = hooks + 1
    end
  end
  if hooks == 0 then
    return nil, file .. ": a plugin needs at least one hook (auth, ratelimit, route, format, on_connect, on_close, on_message, on_ack)"
  end
  if plugin.validate ~= nil and type(plugin.validate) ~= "function" then
    return nil, file .. ": validate must be a function"
  end
  plugin.name = plugin.name or name
  if plugin.schema ~= nil then
    local sok, good, why = pcall(schema.check_schema, plugin.schema)
    if not sok or not good then
      return nil, format("%s: plugin %s has a bad schema: %s", file, tostring(plugin.name),
                         tostring(sok and why or good))
    end
  end
  plugin.file = file
  plugin.stamp = stamp
  plugin.loaded_at = os.date("!%Y-%m-%dT%H:%M:%SZ")
  return plugin
end

local function file_exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

-- Finds <name>.lua in the first directory of dirs that has it.
function _M.find(dirs, name)
  if type(name) ~= "string" or not match(name, "^[%w_%-]+$") then
    return nil, "plugin names are letters, digits, _ and -: " .. tostring(name)
  end
  for _, dir in ipairs(dirs) do
    local file = dir .. "/" .. name .. ".lua"
    if file_exists(file) then return file end
  end
  return nil, format("plugin %s not found in %s", name, concat(dirs, ", "))
end

-- chain.hooks[h] is true when some plugin of the chain has hook h.
function _M.refresh_flags(chain)
  local hooks = {}
  for _, link in ipairs(chain) do
    for h in pairs(_M.HOOKS) do
      if link.plugin[h] then hooks[h] = true end
    end
  end
  chain.hooks = hooks
  chain.has_auth = hooks.auth == true
end

-- The config a plugin's hooks get for the operator's table `raw`: checked
-- against the plugin's schema (a copy with the defaults filled in; raw
-- itself without a schema), then by its validate. Returns it, or nil and
-- what is wrong.
function _M.check_config(plugin, raw)
  if raw == nil then raw = {} end
  if type(raw) ~= "table" then return nil, "config must be a table" end
  local conf = raw
  if plugin.schema ~= nil then
    local ok, filled, err = pcall(schema.apply, plugin.schema, raw)
    if not ok then return nil, "checking the config raised: " .. tostring(filled) end
    if not filled then return nil, err end
    conf = filled
  end
  if plugin.validate then
    local ok, valid, err = pcall(plugin.validate, conf)
    if not ok then return nil, "validate raised: " .. tostring(valid) end
    if not valid then return nil, tostring(err or "validate refused the config") end
  end
  return conf
end

-- How a config error names a link: "route /ws: plugin auth_jwt", plus its
-- place in the chain ("(plugins[3])") when an earlier link of `chain` (the
-- links before it) is the same plugin.
function _M.link_label(route_path, chain, name, i)
  local label = format("route %s: plugin %s", tostring(route_path), tostring(name))
  for j = 1, #chain do
    if chain[j].name == name then return format("%s (plugins[%d])", label, i) end
  end
  return label
end

-- where names the route in structural errors ("routes[2]"), route_path in
-- config errors.
function _M.load_chain(list, dirs, where, route_path)
  if type(list) ~= "table" then return nil, where .. ".plugins must be a list" end
  local chain = {}
  for i, entry in ipairs(list) do
    local at = format("%s.plugins[%d]", where, i)
    if type(entry) == "string" then entry = { name = entry } end
    if type(entry) ~= "table" then return nil, at .. " must be a name or { name = ..., config = ... }" end
    local file, ferr = _M.find(dirs, entry.name)
    if not file then return nil, at .. ": " .. ferr end
    local plugin, err = _M.load_path(file, entry.name)
    if not plugin then return nil, at .. ": " .. err end
    local raw = entry.config or {}
    if type(raw) ~= "table" then return nil, at .. ".config must be a table" end
    local conf, cerr = _M.check_config(plugin, raw)
    if not conf then return nil, _M.link_label(route_path or where, chain, plugin.name, i) .. ": " .. cerr end
    chain[#chain + 1] = { name = plugin.name, plugin = plugin, config = conf, raw = raw }
  end
  _M.refresh_flags(chain)
  return chain
end

return _M
