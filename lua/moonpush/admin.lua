-- moonpush.admin: what an administrator types runs here (src/admin.c sends
-- each chunk through lua_host_admin.c). eval() compiles a chunk as an expression
-- or a statement, runs it in the admin environment under the plugin
-- budget, and pretty-prints what it returns; complete() offers names.

local host = require "moonpush.admin_host"
local moonpush = require "moonpush"
local cjson = require "cjson.safe"

local type, pairs, ipairs, tostring, select, pcall, setfenv, loadstring =
      type, pairs, ipairs, tostring, select, pcall, setfenv, loadstring
local concat, sort, insert = table.concat, table.sort, table.insert
local format, rep, find, sub = string.format, string.rep, string.find, string.sub

local _M = {}

local MAX_DEPTH, MAX_ITEMS, MAX_OUTPUT = 5, 200, 256 * 1024

-- ---- pretty printing -------------------------------------------------------

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta == "number" end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function is_identifier(k)
  return type(k) == "string" and find(k, "^[%a_][%w_]*$") ~= nil
end

local function show(v, depth, seen, out)
  local t = type(v)
  if t == "string" then out[#out + 1] = format("%q", v) return end
  if t ~= "table" then out[#out + 1] = tostring(v) return end
  if seen[v] then out[#out + 1] = "<cycle>" return end
  if depth >= MAX_DEPTH then out[#out + 1] = "{...}" return end
  seen[v] = true
  local keys, n = {}, 0
  for k in pairs(v) do
    n = n + 1
    if n > MAX_ITEMS then break end
    keys[n] = k
  end
  if n == 0 then out[#out + 1] = "{}" seen[v] = nil return end
  sort(keys, key_order)
  local len = #v
  local pad = rep("  ", depth + 1)
  out[#out + 1] = "{\n"
  for i, k in ipairs(keys) do
    out[#out + 1] = pad
    if not (type(k) == "number" and k >= 1 and k <= len and k == math.floor(k)) then
      out[#out + 1] = is_identifier(k) and k or ("[" .. (type(k) == "string" and format("%q", k) or tostring(k)) .. "]")
      out[#out + 1] = " = "
    end
    show(v[k], depth + 1, seen, out)
    out[#out + 1] = i < #keys and ",\n" or "\n"
  end
  if n > MAX_ITEMS then out[#out + 1] = pad .. "... (more)\n" end
  out[#out + 1] = rep("  ", depth) .. "}"
  seen[v] = nil
end

function _M.pretty(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do
    local out = {}
    show((select(i, ...)), 0, {}, out)
    parts[i] = concat(out)
  end
  local text = concat(parts, "\t")
  if #text > MAX_OUTPUT then text = sub(text, 1, MAX_OUTPUT) .. "\n... (output cut at 256 KiB)" end
  return text
end

-- ---- the admin API -----------------------------------------------------------

local api = {}

local HELP = [==[
stats()                       counters: connections, messages, closes, store, reloads
clients([user | {user=,route=,kind=}])  open WebSocket connections
users()                       online users and their connection counts
kick(user | conn_id [, reason])  close with 4003 kicked; returns how many
publish(channel | {user=} | {channel=}, data)
history(channel [, since [, limit]])
reload()                      config + plugins now (as SIGHUP)
log_level([level])            get or set: debug, info, warn, error
routes(), plugins(), help()]==]

function api.help()
  local lines = {}
  for line in HELP:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return lines
end
function api.stats() return host.stats() end

function api.clients(filter)
  local list = host.clients()
  if filter == nil then return list end
  if type(filter) ~= "table" then filter = { user = tostring(filter) } end
  local out = {}
  for _, c in ipairs(list) do
    if (filter.user == nil or c.user == filter.user) and (filter.route == nil or c.route == filter.route)
       and (filter.kind == nil or c.kind == filter.kind) then
      out[#out + 1] = c
    end
  end
  return out
end

function api.users()
  local users = {}
  for _, c in ipairs(host.clients()) do users[c.user] = (users[c.user] or 0) + 1 end
  return users
end

function api.kick(target, reason)
  if type(target) ~= "string" and type(target) ~= "number" then
    error("bad argument #1 to 'kick' (user id or connection id expected)", 2)
  end
  return host.kick(target, reason and tostring(reason) or "kicked")
end

function api.publish(target, data)
  return moonpush.publish(target, data)
end

function api.history(channel, since, limit)
  local h, err = host.history(tostring(channel), tonumber(since) or 0, tonumber(limit) or 100)
  if not h then return nil, err end
  for i, text in ipairs(h.messages) do h.messages[i] = cjson.decode(text) or text end
  return h
end

function api.reload() return host.reload() end

function api.log_level(level)
  if level ~= nil then
    local ok, err = host.log_level(tostring(level))
    if not ok then return nil, err end
  end
  return host.log_level()
end

local function core() return require "moonpush.core" end

function api.routes()
  local out = {}
  for i, r in ipairs(core().config.routes) do
    local chain = {}
    for _, link in ipairs(r.chain) do chain[#chain + 1] = link.name end
    out[i] = { path = r.path, type = r.type, plugins = chain, acks = r.acks ~= nil }
  end
  return out
end

function api.plugins()
  local out, seen = {}, {}
  for _, r in ipairs(core().config.routes) do
    for _, link in ipairs(r.chain) do
      local p = link.plugin
      if not seen[p] then
        seen[p] = true
        local hooks = {}
        for h in pairs(require("moonpush.plugins").HOOKS) do if p[h] then hooks[#hooks + 1] = h end end
        sort(hooks)
        out[#out + 1] = { name = p.name, file = p.file, hooks = hooks, loaded_at = p.loaded_at }
      end
    end
  end
  return out
end

-- Each admin connection has its own environment: the API, then its own
-- variables, then (read through __index) the server's globals. Sessions
-- end with the connection (end_session), so nothing outlives its admin.
local sessions = {}

local function session_env(id)
  local env = sessions[id]
  if not env then
    env = setmetatable({ moonpush = moonpush }, { __index = function(_, k)
      local v = api[k]
      if v ~= nil then return v end
      return _G[k]
    end })
    sessions[id] = env
  end
  return env
end

function _M.end_session(id) sessions[id] = nil end

local function pack(...) return { n = select("#", ...), ... } end

-- ---- eval ------------------------------------------------------------------

-- Returns true, output | false, error | false, nil, true (incomplete).
function _M.eval(session, code)
  if type(code) ~= "string" then return false, "eval needs a string" end
  local fn, err = loadstring("return " .. code, "=admin")
  if not fn then
    fn, err = loadstring(code, "=admin")
    if not fn then
      if find(err, "<eof>", 1, true) then return false, nil, true end
      return false, err
    end
  end
  setfenv(fn, session_env(session))
  local ok, jit = pcall(require, "jit")
  if ok and jit then jit.off(fn, true) end   -- so the budget counts every instruction
  local r = pack(pcall(fn))
  if not r[1] then return false, tostring(r[2]) end
  if r.n == 1 then return true, "" end
  return true, _M.pretty(unpack(r, 2, r.n))
end

-- ---- completion ------------------------------------------------------------

function _M.complete(session, prefix)
  prefix = tostring(prefix or "")
  local env = session_env(session)
  local base, dot, partial = prefix:match("^(.-)([%.:]?)([%w_]*)$")
  local scope
  if dot == "" then
    scope = {}
    for k, v in pairs(api) do scope[k] = v end
    for k, v in pairs(_G) do scope[k] = v end
    for k, v in pairs(env) do scope[k] = v end
    base = ""
  else
    local fn = loadstring("return " .. base)
    if not fn then return {} end
    setfenv(fn, env)
    local ok, v = pcall(fn)
    if ok and type(v) == "string" then v = string end   -- s:upper(, s:format(
    if not ok or type(v) ~= "table" then return {} end
    scope = v
  end
  local out = {}
  for k, v in pairs(scope) do
    if type(k) == "string" and sub(k, 1, #partial) == partial then
      out[#out + 1] = base .. dot .. k .. (type(v) == "function" and "(" or (type(v) == "table" and "." or ""))
    end
  end
  sort(out)
  return out
end

return _M
