-- moonpush.core: the Lua side of the C<->Lua boundary (src/lua_host*.c).
--
-- C calls only the functions of this module. They run a route's plugin
-- chain for one phase and turn what plugins return into plain values C
-- reads, so plugins never see C and C never sees plugins:
--   load(path)                     first config
--   reload_config()                SIGHUP / admin: all or nothing
--   reload_file(file)              a watched plugin file changed
--   routes_for_c()                 path, type, hook flags, budget per route
--   plugin_files()                 what to watch, and each file's stamp when loaded
--   auth(i, raw)                   handshake / publish request
--   refresh(i, conn, token)        a connection's refresh frame (a new token)
--   route(i, path, publisher, remote, list, channel, data)  publish: rewrite / reject
--   format(i, channel, seq, id, data_json)    delivery: one string per route and message
--   event(i, name, conn, arg)      on_connect / on_close / on_message
-- Every call runs under C's pcall and instruction budget; each plugin hook
-- under an xpcall of its own, which keeps the traceback of an error.

local config = require "moonpush.config"
local plugins = require "moonpush.plugins"
local cjson = require "cjson.safe"

local type, ipairs, pairs, tostring, tonumber, xpcall, unpack = type, ipairs, pairs, tostring, tonumber, xpcall, unpack
local char, gsub, gmatch, match, format, find, sub = string.char, string.gsub, string.gmatch, string.match,
                                                     string.format, string.find, string.sub
local traceback = debug.traceback
local concat, sort = table.concat, table.sort

local _M = { config = nil, path = nil }

local DEFAULT_CODES = { [400] = "bad_request", [401] = "unauthorized", [403] = "forbidden",
                        [413] = "too_large", [429] = "rate_limited", [500] = "plugin_error",
                        [503] = "unavailable" }

-- ---- requests -------------------------------------------------------------

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

local function build_request(route, raw)
  local query = parse_query(raw.query_string or "")
  local auth = raw.headers.authorization
  local token = auth and match(auth, "^[Bb]earer%s+(%S+)%s*$") or query.token
  return {
    method = raw.method, path = raw.path, route = route.path, route_type = route.type,
    query = query, query_string = raw.query_string, headers = raw.headers,
    remote_addr = raw.remote_addr, ip = match(raw.remote_addr or "", "^(.*):%d+$"),
    token = token,
  }
end

-- ---- denials --------------------------------------------------------------

local function denial(status, code, message, retry_after)
  return nil, { status = status, code = code or DEFAULT_CODES[status] or "denied",
                message = message, retry_after = retry_after }
end

local function normalise_denial(name, d, default_status)
  if type(d) == "string" then return denial(default_status, nil, d) end
  if type(d) ~= "table" then return denial(default_status, nil, "denied by " .. name) end
  local status = tonumber(d.status) or default_status
  if status < 400 or status > 599 then status = 500 end
  return denial(status, d.code or d.error, tostring(d.message or d.reason or ("denied by " .. name)),
                tonumber(d.retry_after))
end

-- Hooks run under xpcall with debug.traceback as the handler: a C
-- function, so it runs even when the instruction budget's count hook has
-- just aborted the call (a Lua handler would be aborted in turn). What it
-- returns is cut to the plugin's own frames: the core's below them are the
-- same for every error, and the log line has room for about 500 bytes.
local function why(err)
  if type(err) ~= "string" then return tostring(err) end
  local cut = find(err, "\n\t%[C%]: in function 'xpcall'")
  if cut then err = sub(err, 1, cut - 1) end
  local at = find(err, "\nstack traceback:", 1, true)
  if not at then return err end
  -- frames name files by their base name: the message above names the path
  return sub(err, 1, at) .. gsub(sub(err, at + 1), "[^%s<]*/([^/%s]+%.lua:)", "%1")
end

-- A hook that raised: the client learns which plugin, the log learns why
-- (the error and its traceback).
local function plugin_failed(name, err)
  return nil, { status = 500, code = "plugin_error", message = "plugin " .. name .. " failed",
                log = name .. ": " .. why(err) }
end

-- Hook statistics by plugin name, for /metrics: calls, errors, time. Wall
-- time in milliseconds from the vDSO clock (os.clock would be a syscall per
-- hook call), turned into seconds only when read; the loop is
-- single-threaded, so wall time in a hook is time the loop spent.
local stats = {}
local now_ms = require("moonpush.host").now

local function stat_for(name)
  local s = stats[name]
  if not s then s = { name = name, calls = 0, errors = 0, ms = 0 } stats[name] = s end
  return s
end

function _M.plugin_stats()
  local out = {}
  for _, s in pairs(stats) do
    out[#out + 1] = { name = s.name, calls = s.calls, errors = s.errors, seconds = s.ms / 1000 }
  end
  sort(out, function(x, y) return x.name < y.name end)
  return out
end

-- Runs `hook` of every plugin of the chain in order, passing (a, [b,]
-- link.config), until one decides. Returns decided, value_or_nil, denial;
-- decided == false when no plugin did. This runs once or twice per published
-- message, under the budget's count hook: every bytecode here is paid per
-- message, so the link caches its stats record (stats are by plugin name,
-- which a plugin reload keeps).
local function with_config(chain, hook, default_status, a, b)
  for i = 1, #chain do
    local link = chain[i]
    local fn = link.plugin[hook]
    if fn then
      local name = link.name
      _M.running = name   -- C names it if the call has to be aborted
      local st = link.stat
      if not st then st = stat_for(name) link.stat = st end
      st.calls = st.calls + 1
      st.errors = st.errors + 1   -- taken back below unless the call is aborted
      local t0 = now_ms()
      local ok, v, err
      if b == nil then ok, v, err = xpcall(fn, traceback, a, link.config)
      else ok, v, err = xpcall(fn, traceback, a, b, link.config) end
      st.ms = st.ms + (now_ms() - t0)
      if not ok then return true, plugin_failed(name, v) end
      st.errors = st.errors - 1
      if v ~= nil and v ~= false then return true, v end
      if err ~= nil then return true, normalise_denial(name, err, default_status) end
    end
  end
  return false
end

-- ---- config ---------------------------------------------------------------

function _M.load(path)
  local cfg, err = config.load(path)
  if not cfg then return nil, err end
  _M.config, _M.path = cfg, path
  return cfg
end

local function route_summary(r)
  local names = {}
  for _, link in ipairs(r.chain) do names[#names + 1] = link.name end
  return r.type .. "[" .. concat(names, ",") .. "]"
end

-- What changed between two configs, in one log-friendly line.
local function diff(old, new)
  local changes = {}
  local old_routes, new_routes = {}, {}
  for _, r in ipairs(old.routes) do old_routes[r.path] = r end
  for _, r in ipairs(new.routes) do new_routes[r.path] = r end
  for p, r in pairs(new_routes) do
    if not old_routes[p] then changes[#changes + 1] = "+route " .. p
    elseif route_summary(old_routes[p]) ~= route_summary(r) then changes[#changes + 1] = "~route " .. p
    else changes[#changes + 1] = "route " .. p .. " config reloaded" end
  end
  for p in pairs(old_routes) do
    if not new_routes[p] then changes[#changes + 1] = "-route " .. p end
  end
  for _, section in ipairs({ "limits", "timeouts" }) do
    for k, v in pairs(new[section]) do
      if old[section][k] ~= v then
        changes[#changes + 1] = format("%s.%s %s->%s", section, k, tostring(old[section][k]), tostring(v))
      end
    end
  end
  if old.listen_key ~= new.listen_key then
    changes[#changes + 1] = "listen changed: takes effect at restart"
  end
  sort(changes)
  return concat(changes, " ")
end

-- All or nothing: an invalid config leaves the running one in place.
function _M.reload_config()
  local cfg, err = config.load(_M.path)
  if not cfg then return nil, err end
  local summary = diff(_M.config, cfg)
  cfg.listen_host, cfg.listen_port = _M.config.listen_host, _M.config.listen_port
  cfg.listeners, cfg.listen_key = _M.config.listeners, _M.config.listen_key   -- TLS files are reread (tls.c)
  _M.config = cfg
  return cfg, summary
end

-- A changed plugin file: load it fresh, check it (its schema, then its
-- validate) against every route config that uses it, and swap it, with the
-- configs its schema filled, into those links only if all pass.
function _M.reload_file(file)
  local users, labels = {}, {}
  for _, r in ipairs(_M.config.routes) do
    for i, link in ipairs(r.chain) do
      if link.plugin.file == file then
        users[#users + 1] = link
        labels[#users] = plugins.link_label(r.path, { unpack(r.chain, 1, i - 1) }, link.name, i)
      end
    end
  end
  if #users == 0 then return nil, "no route uses " .. file end
  local plugin, err = plugins.load_path(file, users[1].plugin.name)
  if not plugin then return nil, err end
  local confs = {}
  for n, link in ipairs(users) do
    local conf, why = plugins.check_config(plugin, link.raw)
    if not conf then
      return nil, format("%s: the new version refuses the config of %s: %s", file, labels[n], why)
    end
    confs[n] = conf
  end
  for n, link in ipairs(users) do link.plugin, link.config = plugin, confs[n] end
  for _, r in ipairs(_M.config.routes) do plugins.refresh_flags(r.chain) end
  return #users
end

function _M.plugin_files()
  local seen, files, stamps = {}, {}, {}
  for _, r in ipairs(_M.config.routes) do
    for _, link in ipairs(r.chain) do
      local f = link.plugin.file
      if not seen[f] then
        seen[f] = true
        files[#files + 1] = f
        stamps[#files] = link.plugin.stamp or false
      end
    end
  end
  return files, stamps
end

function _M.routes_for_c()
  local out = {}
  for i, r in ipairs(_M.config.routes) do
    local h = r.chain.hooks
    local a = r.acks
    out[i] = { path = r.path, type = r.type, budget = r.budget or _M.config.plugin_budget,
               allow_duplicates = r.allow_duplicates, acks = a ~= nil,
               ack_timeout_ms = a and a.timeout_ms, ack_factor = a and a.factor,
               ack_jitter = a and a.jitter, ack_max_tries = a and a.max_tries,
               auth = h.auth, ratelimit = h.ratelimit, route = h.route, format = h.format,
               on_connect = h.on_connect, on_close = h.on_close, on_message = h.on_message,
               on_ack = h.on_ack,
               cors_origins = r.cors and r.cors.origins, cors_headers = r.cors and r.cors.headers,
               cors_max_age = r.cors and r.cors.max_age,
               deflate = r.deflate ~= nil, deflate_threshold = r.deflate and r.deflate.threshold,
               deflate_level = r.deflate and r.deflate.level }
  end
  return out
end

-- ---- auth (+ the connect / publish rate limits) -----------------------------

-- What a route takes: websocket and sse routes devices, every other route
-- (publish, history, presence, metrics) publishers. A token minted for one
-- kind of client is refused on the other (docs/plugins.md, "Identities").
local function route_role(route)
  return (route.type == "websocket" or route.type == "sse") and "device" or "publisher"
end

local IDENTITY_KEYS = { user = true, name = true, device = true, kind = true, channels = true,
                        role = true, expires = true, cache = true }
local IDENTITY_KEY_LIST = "user, name, device, kind, channels, role, expires, cache"

-- An identity the core cannot read is the plugin's bug, never "anonymous":
-- 500 plugin_error to the client, the plugin and the key in the log.
local function bad_identity(plugin, what)
  local msg = "auth plugin " .. tostring(plugin) .. " returned a bad identity: " .. what
  return nil, { status = 500, code = "plugin_error", message = "plugin " .. tostring(plugin) .. " failed",
                log = msg }
end

local function nonempty(v)
  if type(v) == "number" and v == math.floor(v) then v = tostring(v) end
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

-- Checks an identity against the schema and the route's role. Returns the
-- role, or nil, denial.
local function check_identity(route, id, plugin)
  for k in pairs(id) do
    if not IDENTITY_KEYS[k] then
      return bad_identity(plugin, format("unknown key %q (known: %s)", tostring(k), IDENTITY_KEY_LIST))
    end
  end
  local role = id.role
  if role ~= nil and role ~= "device" and role ~= "publisher" then
    return bad_identity(plugin, "role must be \"device\" or \"publisher\"")
  end
  local user, name = nonempty(id.user), nonempty(id.name)
  if id.user ~= nil and not user then return bad_identity(plugin, "user must be a non-empty string") end
  if id.name ~= nil and not name then return bad_identity(plugin, "name must be a non-empty string") end
  -- Without a role the keys tell: user alone is a device, name alone a
  -- publisher; an identity with both serves either kind of route.
  if not role then
    if user and name then role = route_role(route)
    else role = (user and "device") or (name and "publisher") end
  end
  if not role then return bad_identity(plugin, "no user (device) or name (publisher)") end
  if role == "device" and not user then return bad_identity(plugin, "a device identity needs user") end
  if role == "publisher" and not name then return bad_identity(plugin, "a publisher identity needs name") end
  for _, k in ipairs({ "device", "kind" }) do
    if id[k] ~= nil and type(id[k]) ~= "string" then return bad_identity(plugin, k .. " must be a string") end
  end
  if id.channels ~= nil then
    if type(id.channels) ~= "table" then return bad_identity(plugin, "channels must be a list of patterns") end
    for _, p in ipairs(id.channels) do
      if type(p) ~= "string" then return bad_identity(plugin, "channels must be a list of patterns") end
    end
  end
  local expires = id.expires
  if expires ~= nil and (type(expires) ~= "number" or expires ~= expires) then
    return bad_identity(plugin, "expires must be a number (unix seconds)")
  end
  if id.cache ~= nil and type(id.cache) ~= "boolean" then
    return bad_identity(plugin, "cache must be a boolean")
  end
  local want = route_role(route)
  if role ~= want then
    return denial(403, "forbidden", format("a %s token is not accepted on a %s route (it takes %s tokens)",
                                           role, route.type, want))
  end
  if expires and expires * 1000 <= now_ms() then return denial(401, "unauthorized", "token expired") end
  return role
end

local function identity_for_c(route, req, id, role)
  local allow = {}
  if type(id.channels) == "table" then
    for _, p in ipairs(id.channels) do allow[#allow + 1] = p end
  end
  return {
    user = role == "publisher" and nonempty(id.name) or nonempty(id.user),
    device = tostring(id.device or req.query.device or "default"),
    kind = tostring(id.kind or "default"),
    allow = allow,
    expires = id.expires,
    -- cache = false: never reuse this answer on a keep-alive connection (auth_cache.h)
    no_cache = id.cache == false and 1 or 0,
    subscribe = (route.type == "websocket" or route.type == "sse") and split_channels(req.query.channels) or {},
  }
end

local function ratelimit(route, ctx)
  local decided, v, d = with_config(route.chain, "ratelimit", 429, ctx)
  if decided and v == nil then return nil, d end
  return true
end

-- Cross-site WebSocket hijacking: a browser sends the page's Origin with
-- every handshake, cookies included. Without `origins` only a page from the
-- server's own origin (Origin's host:port equal to Host) may connect; a
-- request without Origin (not a browser) passes: Origin guards browsers'
-- ambient credentials, which other clients do not send for someone else.
local function origin_allowed(route, req)
  local origin = req.headers.origin
  if origin == nil then return true end
  local list = route.origins
  if list then
    if list["*"] or list[origin] then return true end
  end
  local host = req.headers.host
  local o_host = match(origin, "^https?://([^/]+)$")
  return o_host ~= nil and host ~= nil and o_host:lower() == host:lower()
end

function _M.auth(route_index, raw)
  local route = _M.config.routes[route_index]
  local req = build_request(route, raw)
  local chain = route.chain
  if route.type == "websocket" and not origin_allowed(route, req) then
    return denial(403, "origin_not_allowed", "Origin " .. tostring(req.headers.origin):sub(1, 100) ..
                  " may not open a WebSocket here: list it in the route's origins")
  end
  if chain.hooks.ratelimit and (route.type == "websocket" or route.type == "sse") then
    local ok, d = ratelimit(route, { phase = "connect", route = route.path, remote_addr = req.remote_addr,
                                     ip = req.ip, token = req.token })
    if not ok then return nil, d end
  end
  local id
  if chain.hooks.auth then
    local decided, v, d = with_config(chain, "auth", 401, req)
    if not decided then return denial(401, "unauthorized", "no auth plugin accepted the request") end
    if v == nil then return nil, d end
    if type(v) ~= "table" then return bad_identity(_M.running, "not a table") end
    id = v
  else
    -- Only a route that opted in (anonymous = true) or one that reads
    -- nothing private (metrics) gets here: config.lua refuses the rest.
    id = { name = "anonymous", channels = { "*" } }
  end
  local role, d = check_identity(route, id, _M.running)
  if not role then return nil, d end
  if chain.hooks.ratelimit and route.type == "publish" then
    local ok, rd = ratelimit(route, { phase = "publish", route = route.path, remote_addr = req.remote_addr,
                                      ip = req.ip, token = req.token, publisher = id.name or id.user })
    if not ok then return nil, rd end
  end
  return identity_for_c(route, req, id, role)
end

-- A connection's refresh frame: the route's auth chain judges the new token
-- as if at a handshake of the same connection (req.refresh = true tells a
-- plugin that cares). The route may have been removed by a reload meanwhile.
function _M.refresh(route_index, conn, token)
  local route = _M.config.routes[route_index]
  if not route then return denial(403, "forbidden", "this connection's route is gone: reconnect") end
  local remote = conn.remote_addr
  local req = {
    method = "GET", path = route.path, route = route.path, route_type = route.type,
    query = { token = token }, query_string = "", headers = {},
    remote_addr = remote, ip = match(remote or "", "^(.*):%d+$"), token = token, refresh = true,
  }
  local decided, v, d = with_config(route.chain, "auth", 401, req)
  if not decided then return denial(401, "unauthorized", "no auth plugin accepted the token") end
  if v == nil then return nil, d end
  if type(v) ~= "table" then return bad_identity(_M.running, "not a table") end
  local role, cd = check_identity(route, v, _M.running)
  if not role then return nil, cd end
  req.query.device = conn.device
  return identity_for_c(route, req, v, role)
end

-- ---- publish: route hooks ---------------------------------------------------

-- A route hook's msg.data is decoded on first use. Until a hook reads or
-- sets msg.data, msg.data_json is its exact text as published; touching data
-- drops data_json (the text may no longer match), and only then does the
-- core re-encode data. So a chain that never needs the data, or checks it
-- from data_json, costs no decode or encode, and the bytes stay as sent.
local route_data = {
  __index = function(t, k)
    if k ~= "data" then return nil end
    local text = rawget(t, "data_json")
    if text == nil then return nil end
    rawset(t, "data_json", nil)
    local d = cjson.decode(text)
    rawset(t, "data", d)
    return d
  end,
  __newindex = function(t, k, v)
    if k == "data" then rawset(t, "data_json", nil) end
    rawset(t, k, v)
  end,
}

-- One message through the chain. Returns its answer for C: the channel
-- name when the hooks left the message alone apart from its channel (one
-- channel, every device kind, data as published: the common case, read
-- cheaply by C), else { channels = {...}, kinds = {...}|nil, data = <json>|nil }
-- with data nil when it is as published; or nil, denial. Re-encoded data
-- (cjson) keeps 14 significant digits of a number and not the key order.
local function route_one(chain, ctx, channel, published)
  local msg = setmetatable({ channel = channel, data_json = published }, route_data)
  local decided, v, d = with_config(chain, "route", 400, msg, ctx)
  if decided and v == nil then return nil, d end
  setmetatable(msg, nil)   -- the hooks are done: no decoding for the reads below
  local m = (decided and type(v) == "table") and v or msg
  local channels, kinds = m.channels, m.kinds
  if type(channels) ~= "table" then channels = nil end
  if type(kinds) ~= "table" then kinds = nil end
  local untouched = m == msg and msg.data_json == published
  if untouched and not channels and not kinds and type(msg.channel) == "string" then
    return msg.channel
  end
  local encoded
  if not untouched then
    encoded = cjson.encode(m.data)
    if encoded == nil then return denial(500, "plugin_error", "a route plugin left data that is not JSON") end
  end
  return { channels = channels or { m.channel }, kinds = kinds, data = encoded }
end

-- A publish request's messages: one as (channel, data) with list nil, or a
-- batch as list = { channel1, data1, channel2, data2, ... } (data: JSON
-- text). Returns the one answer, or a list of them, or nil, denial (nothing
-- of a batch is published then).
function _M.route(route_index, route_path, publisher, remote_addr, list, channel, data)
  local chain = _M.config.routes[route_index].chain
  local ctx = { route = route_path, publisher = publisher, remote_addr = remote_addr }
  if not list then return route_one(chain, ctx, channel, data) end
  local n = #list / 2
  local out = {}
  for i = 1, n do
    local answer, d = route_one(chain, ctx, list[2 * i - 1], list[2 * i])
    if answer == nil then
      if n > 1 then d.message = format("item %d: %s", i - 1, d.message) end
      return nil, d
    end
    out[i] = answer
  end
  return out
end

-- ---- delivery: format hooks -------------------------------------------------

-- msg.data is decoded only if a plugin reads it: formats that embed
-- msg.data_json (the exact text) never pay for the decode.
local lazy_data = { __index = function(t, k)
  if k == "data" then
    local d = cjson.decode(rawget(t, "data_json"))
    rawset(t, "data", d)
    return d
  end
end }

-- audience is made once per route (this runs once per message per route)
-- and handed to every call: plugins treat it as read-only, like conf.
function _M.format(route_index, channel, seq, id, data_json)
  local route = _M.config.routes[route_index]
  local msg = setmetatable({ channel = channel, seq = seq, id = id, data_json = data_json }, lazy_data)
  local audience = route.audience
  if not audience then audience = { route = route.path } route.audience = audience end
  local decided, v, d = with_config(route.chain, "format", 500, msg, audience)
  if decided and v == nil then return nil, d end
  if decided and type(v) ~= "string" then return denial(500, "plugin_error", "a format plugin returned a non-string") end
  return v
end

-- ---- connection events --------------------------------------------------------

function _M.event(route_index, name, conn, arg)
  local route = _M.config.routes[route_index]
  if not route then return nil end
  conn.route = route.path
  if name == "ratelimit" then
    return ratelimit(route, { phase = "message", route = route.path, remote_addr = conn.remote_addr,
                              ip = match(conn.remote_addr or "", "^(.*):%d+$"), user = conn.user })
  end
  if name == "on_message" then
    local msg = cjson.decode(arg)
    local decided, v, d = with_config(route.chain, "on_message", 400, conn, msg)
    if not decided then return nil, { status = 400, code = "unknown_type", message = "unknown frame type" } end
    if v == nil then return nil, d end
    if type(v) ~= "table" then return nil end
    return cjson.encode(v)
  end
  -- on_connect / on_close / on_ack: every plugin hears it; errors are only logged
  local errors = {}
  for _, link in ipairs(route.chain) do
    local fn = link.plugin[name]
    if fn then
      _M.running = link.name
      local ok, err
      if arg ~= nil then ok, err = xpcall(fn, traceback, conn, arg, link.config)
      else ok, err = xpcall(fn, traceback, conn, link.config) end
      if not ok then errors[#errors + 1] = link.name .. ": " .. why(err) end
    end
  end
  if #errors > 0 then return nil, { log = concat(errors, "; ") } end
  return true
end

return _M
