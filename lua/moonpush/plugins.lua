-- moonpush.plugins: finds, loads and validates plugins; builds route chains.
--
-- A plugin is a Lua file returning a table of hook functions (see
-- docs/plugins.md). A chain is the ordered list of { name, plugin, config }
-- a route names. A plugin may declare `validate(config)` returning true or
-- nil, err: it runs at load, so hooks can trust their config.

local type, pairs, ipairs, tostring, setmetatable = type, pairs, ipairs, tostring, setmetatable
local format, match = string.format, string.match

local _M = {}

_M.HOOKS = { auth = true }

local function disable_jit(fn)
  -- Count hooks (the instruction budget) only fire in the interpreter:
  -- JIT-compiled plugin code could loop forever unseen.
  local ok, jit = pcall(require, "jit")
  if ok and jit and jit.off then jit.off(fn, true) end
end

-- Loads plugins/<name>.lua into a fresh table. Returns plugin or nil, err.
function _M.load_file(dir, name)
  if type(name) ~= "string" or not match(name, "^[%w_%-]+$") then
    return nil, "plugin names are letters, digits, _ and -: " .. tostring(name)
  end
  local file = dir .. "/" .. name .. ".lua"
  local chunk, err = loadfile(file)
  if not chunk then return nil, err end
  disable_jit(chunk)
  local ok, plugin = pcall(chunk)
  if not ok then return nil, file .. ": " .. tostring(plugin) end
  if type(plugin) ~= "table" then return nil, file .. ": a plugin must return a table" end
  local hooks = 0
  for k, v in pairs(plugin) do
    if _M.HOOKS[k] then
      if type(v) ~= "function" then return nil, format("%s: hook %s must be a function", file, k) end
      hooks = hooks + 1
    end
  end
  if hooks == 0 then return nil, file .. ": a plugin needs at least one hook (auth)" end
  plugin.name = plugin.name or name
  plugin.file = file
  return plugin
end

function _M.load_chain(list, dir, where)
  if type(list) ~= "table" then return nil, where .. ".plugins must be a list" end
  local chain = { has_auth = false }
  for i, entry in ipairs(list) do
    local at = format("%s.plugins[%d]", where, i)
    if type(entry) == "string" then entry = { name = entry } end
    if type(entry) ~= "table" then return nil, at .. " must be a name or { name = ..., config = ... }" end
    local plugin, err = _M.load_file(dir, entry.name)
    if not plugin then return nil, at .. ": " .. err end
    local conf = entry.config or {}
    if type(conf) ~= "table" then return nil, at .. ".config must be a table" end
    if plugin.validate then
      local ok, verr = plugin.validate(conf)
      if not ok then return nil, format("%s (%s): invalid config: %s", at, plugin.name, tostring(verr)) end
    end
    chain[#chain + 1] = { name = plugin.name, plugin = plugin, config = conf }
    if plugin.auth then chain.has_auth = true end
  end
  return chain
end

return _M
