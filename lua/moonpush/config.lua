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
    max_outbound_bytes = 4194304,  -- at least; see outbound_budget below
    max_subscriptions = 64,
    max_channels = 1000000,
    socket_send_buffer = 131072,   -- SO_SNDBUF of a WebSocket: caps kernel memory per slow client
  },
  timeouts = {
    request_ms = 10000,
    idle_ms = 60000,
    ping_ms = 25000,
    shutdown_ms = 5000,
  },
  plugin_budget = 1000000,   -- Lua instructions per hook call
}

local ROUTE_TYPES = { websocket = true, sse = true, publish = true, health = true, history = true, presence = true,
                      metrics = true }

-- Keys a config may have: anything else is a typo, refused rather than ignored.
local TOP_KEYS = { listen = true, max_connections = true, limits = true, timeouts = true,
                   plugin_dir = true, plugin_path = true, plugin_budget = true, routes = true,
                   history = true, admin = true, log = true, pid_file = true }
local ROUTE_KEYS = { path = true, type = true, plugins = true, budget = true, acks = true,
                     duplicate_devices = true, cors = true, anonymous = true, origins = true,
                     permessage_deflate = true }
-- Routes that hand out or take channel data: without an auth plugin anyone
-- could publish to (or read) every channel, so that must be asked for.
local ANONYMOUS_TYPES = { publish = true, history = true, presence = true }
local ACK_DEFAULTS = { timeout_ms = 5000, factor = 2, max_tries = 5, jitter = 0.2 }
local HISTORY_DEFAULTS = { max_messages = 100, max_age_ms = 3600000, max_channels = 100000,
                           max_bytes = 268435456, channel_idle_ms = 600000, max_cursors = 1000000,
                           cursor_ttl_ms = 604800000 }

local function unknown_key(t, known, where)
  for k in pairs(t) do
    if not known[k] then return format("unknown key %s%s", where, tostring(k)) end
  end
end

local function dirname(path)
  return match(path, "^(.*)/[^/]*$") or "."
end

-- The plugins shipped with moonpush sit next to the Lua runtime (the
-- source tree's plugins/, an install's PREFIX/share/moonpush/plugins): every
-- config finds them after its own plugin_path, wherever the config lives.
local BUNDLED_PLUGINS = dirname(dirname(dirname(debug.getinfo(1, "S").source:gsub("^@", "")))) .. "/plugins"

-- The C side keeps counts, budgets, sizes and timeouts in an int (or wider)
-- and history sizes and ages in 64 bits: a number past these bounds would
-- not convert (C leaves it undefined; on x86 max_connections = 1e10 became
-- INT_MIN, and every connection was refused), so it is refused here.
local INT_MAX = 2147483647
local EXACT_MAX = 2 ^ 53        -- the largest integer a Lua number holds exactly
local MESSAGES_MAX = 1000000    -- per channel: store.h MP_STORE_MESSAGES_LIMIT

local function positive_int(v)
  return type(v) == "number" and v >= 1 and v == math.floor(v) and v <= INT_MAX
end
local POSITIVE_INT = "an integer from 1 to " .. INT_MAX

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
      return nil, format("%s.%s must be %s, got %s", name, key, POSITIVE_INT, tostring(v))
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

-- The largest frame a subscriber can be sent: one message whose data is a
-- whole publish body (limits.max_body_bytes), in its envelope
-- ({"type":"message","channel":...,"seq":...,"id":...,"data":...}: at most
-- 352 bytes for 128-byte names) behind a WebSocket header (10). A queue
-- bound below it closes every subscriber of such a message with 4001, even
-- one reading at full speed, so it is refused. Unset, the bound holds four
-- such messages (and at least 4 MiB): a reader at full speed keeps up with
-- a publisher sending them one after another.
local ENVELOPE_BYTES = 512
local DEFAULT_OUTBOUND_MIN = 4194304

local function outbound_budget(given, limits)
  local largest = limits.max_body_bytes + ENVELOPE_BYTES
  if given == nil then
    return math.max(DEFAULT_OUTBOUND_MIN, 4 * largest)   -- size_t in C: no int bound
  end
  if given < largest then
    return nil, format("limits.max_outbound_bytes (%d) is smaller than the largest message a route can deliver " ..
      "(limits.max_body_bytes %d + %d bytes of envelope = %d): every subscriber of such a message would be " ..
      "closed 4001 (slow consumer); raise max_outbound_bytes (unset, it is max(4 MiB, 4 x that)) or lower " ..
      "max_body_bytes", given, limits.max_body_bytes, ENVELOPE_BYTES, largest)
  end
  return given
end

local function parse_listen(s)
  if type(s) ~= "string" then return nil end
  local host, port = match(s, "^%[(.+)%]:(%d+)$")
  if not host then host, port = match(s, "^(.*):(%d+)$") end
  port = tonumber(port)
  if not host or not port or port > 65535 then return nil end
  return host, port
end

-- listen = "host:port", or a list whose items are "host:port" or
-- { addr = "host:port", tls = { cert = FILE, key = FILE } }. TLS files are
-- relative to the config's directory; they must be readable here, and
-- src/tls.c then loads them (a bad file, a key that does not match the
-- certificate) before the server starts. Returns a list of
-- { host, port, tls = { cert, key } | nil }.
local MAX_LISTENERS = 8      -- server.h MP_MAX_LISTENERS
local MAX_TLS_PATH = 500     -- server.h mp_listener paths hold 512 bytes

local function readable(file)
  local f, why = io.open(file, "rb")
  if not f then return nil, why end
  f:close()
  return true
end

local function check_tls(t, where, dir)
  if type(t) ~= "table" then return nil, where .. " must be a table { cert = FILE, key = FILE }" end
  local bad = unknown_key(t, { cert = true, key = true }, where .. ".")
  if bad then return nil, bad end
  local out = {}
  for _, k in ipairs({ "cert", "key" }) do
    local f = t[k]
    if type(f) ~= "string" or f == "" then return nil, format("%s.%s must be a file path", where, k) end
    if f:sub(1, 1) ~= "/" then f = dir .. "/" .. f end
    if #f > MAX_TLS_PATH then return nil, format("%s.%s: path longer than %d bytes", where, k, MAX_TLS_PATH) end
    local ok, why = readable(f)
    if not ok then return nil, format("%s.%s: cannot read %s", where, k, why) end
    out[k] = f
  end
  return out
end

local function check_listener(item, where, dir)
  local addr, tls = item, nil
  if type(item) == "table" then
    local bad = unknown_key(item, { addr = true, tls = true }, where .. ".")
    if bad then return nil, bad end
    addr = item.addr
    if item.tls ~= nil then
      local err
      tls, err = check_tls(item.tls, where .. ".tls", dir)
      if not tls then return nil, err end
    end
  end
  local host, port = parse_listen(addr)
  if not host then return nil, format("%s must be \"host:port\", got %s", where, tostring(addr)) end
  if #host > 63 then return nil, where .. ": host longer than 63 bytes" end
  return { host = host, port = port, tls = tls }
end

function _M.check_listen(listen, dir)
  if type(listen) ~= "table" then
    local l = check_listener(listen, "listen", dir)
    if not l then return nil, "listen must be \"host:port\", got " .. tostring(listen) end
    return { l }
  end
  if #listen == 0 then return nil, "listen must be \"host:port\" or a non-empty list of listeners" end
  if #listen > MAX_LISTENERS then return nil, format("listen: at most %d listeners", MAX_LISTENERS) end
  for k in pairs(listen) do
    if type(k) ~= "number" then return nil, "listen must be a list, found key " .. tostring(k) end
  end
  local out, seen = {}, {}
  for i, item in ipairs(listen) do
    local l, err = check_listener(item, format("listen[%d]", i), dir)
    if not l then return nil, err end
    local key = l.host .. ":" .. l.port
    if seen[key] and l.port ~= 0 then return nil, format("listen[%d]: %s is listed twice", i, key) end
    seen[key] = true
    out[i] = l
  end
  return out
end

-- One string per listen setup, so a reload can tell whether it changed.
local function listen_key(listeners)
  local parts = {}
  for i, l in ipairs(listeners) do
    parts[i] = l.host .. ":" .. l.port .. (l.tls and (" tls " .. l.tls.cert .. " " .. l.tls.key) or "")
  end
  return table.concat(parts, ", ")
end

-- cors = { origins = "*" | { "https://app.example", ... }, max_age = 600, headers = { ... } }
-- on publish, history and presence routes: browsers on those origins may
-- call the route (src/cors.c answers the preflight and adds the headers).
local CORS_ROUTES = { publish = true, history = true, presence = true, sse = true }
local CORS_MAX_AGE = 86400

local function valid_origin(o)
  if type(o) ~= "string" or #o > 200 then return false end
  local host = match(o, "^https?://(.+)$")
  if not host then return false end
  host = match(host, "^(.-):%d+$") or host
  return match(host, "^[%w%.%-]+$") ~= nil or match(host, "^%[[%x:%.]+%]$") ~= nil
end

local function check_cors(c, rtype, where)
  where = where .. ".cors"
  if not CORS_ROUTES[rtype] then return nil, where .. " applies to publish, history, presence and sse routes only" end
  if type(c) ~= "table" then return nil, where .. " must be a table { origins = ..., max_age = ... }" end
  local bad = unknown_key(c, { origins = true, max_age = true, headers = true }, where .. ".")
  if bad then return nil, bad end
  local origins = c.origins
  if origins ~= "*" then
    if type(origins) ~= "table" or #origins == 0 then
      return nil, where .. ".origins must be \"*\" or a non-empty list of origins"
    end
    for k, o in ipairs(origins) do
      -- An origin is scheme://host[:port]: no path, no trailing slash; the
      -- browser's Origin header is compared with it byte for byte.
      if not valid_origin(o) then
        return nil, format("%s.origins[%d] must be an origin like \"https://app.example.com\" or \"http://127.0.0.1:8000\" (scheme://host[:port], no path), got %s",
          where, k, tostring(o))
      end
    end
    origins = " " .. table.concat(origins, " ") .. " "
  end
  local max_age = c.max_age
  if max_age == nil then max_age = 600 end
  if type(max_age) ~= "number" or max_age < 0 or max_age ~= math.floor(max_age) or max_age > CORS_MAX_AGE then
    return nil, format("%s.max_age must be an integer from 0 to %d (seconds), got %s", where, CORS_MAX_AGE, tostring(c.max_age))
  end
  local headers = { "Authorization", "Content-Type" }
  if c.headers ~= nil and type(c.headers) ~= "table" then return nil, where .. ".headers must be a list of header names" end
  if #(c.headers or {}) > 8 then return nil, where .. ".headers: at most 8 header names" end
  for k, h in ipairs(c.headers or {}) do
    if type(h) ~= "string" or #h > 40 or not match(h, "^[%w%-]+$") then
      return nil, format("%s.headers[%d] must be a header name (letters, digits, -; at most 40), got %s", where, k, tostring(h))
    end
    headers[#headers + 1] = h
  end
  return { origins = origins, max_age = max_age, headers = table.concat(headers, ", ") }
end

-- origins = { "https://app.example.com", "http://localhost:8000" } or { "*" }
-- on websocket routes: pages that may open a WebSocket besides the server's
-- own origin. Returns a set (nil if not given), or nil, err.
local function check_origins(where, r)
  local o = r.origins
  if o == nil then return nil end
  if r.type ~= "websocket" then return nil, where .. ".origins applies to websocket routes only" end
  if o == "*" then o = { "*" } end
  if type(o) ~= "table" then return nil, where .. ".origins must be a list of origins (\"https://host[:port]\") or \"*\"" end
  local set = {}
  for k, v in pairs(o) do
    if type(k) ~= "number" or (v ~= "*" and not valid_origin(v)) then
      return nil, format("%s.origins: %s is not an origin: scheme://host[:port] with no path, or \"*\"",
                         where, tostring(v))
    end
    set[v] = true
  end
  return set
end

-- permessage_deflate = true or { threshold = BYTES, level = 1..9 } on
-- websocket routes (docs/protocol.md, "Compression"). Returns the settings
-- (nil when off), or nil, err.
local DEFLATE_DEFAULTS = { threshold = 256, level = 6 }
local function check_deflate(where, r)
  local d = r.permessage_deflate
  if d == nil or d == false then return nil end
  where = where .. ".permessage_deflate"
  if r.type ~= "websocket" then return nil, where .. " applies to websocket routes only" end
  if d == true then d = {} end
  if type(d) ~= "table" then return nil, where .. " must be true, false or { threshold = BYTES, level = 1..9 }" end
  local bad = unknown_key(d, DEFLATE_DEFAULTS, where .. ".")
  if bad then return nil, bad end
  local out = {}
  for k, default in pairs(DEFLATE_DEFAULTS) do
    local v = d[k]
    if v == nil then v = default end
    local lo, hi = k == "level" and 1 or 0, k == "level" and 9 or 16777216
    if type(v) ~= "number" or v ~= math.floor(v) or v < lo or v > hi then
      return nil, format("%s.%s must be an integer from %d to %d, got %s", where, k, lo, hi, tostring(d[k]))
    end
    out[k] = v
  end
  return out
end

local function check_route(i, r, plugin_dirs)
  local where = format("routes[%d]", i)
  if type(r) ~= "table" then return nil, where .. " must be a table" end
  local bad = unknown_key(r, ROUTE_KEYS, where .. ".")
  if bad then return nil, bad end
  if type(r.path) ~= "string" or not match(r.path, "^/[%w%-%._~/]*$") then
    return nil, where .. ".path must be a string starting with /"
  end
  local path = r.path
  if #path > 1 then path = path:gsub("/+$", "") end
  if not ROUTE_TYPES[r.type] then
    return nil, format("%s.type must be websocket, sse, publish, history, presence, metrics or health, got %s", where, tostring(r.type))
  end
  if r.budget ~= nil and not positive_int(r.budget) then
    return nil, where .. ".budget must be " .. POSITIVE_INT .. " (Lua instructions per hook call)"
  end
  local chain, err = plugins.load_chain(r.plugins or {}, plugin_dirs, where, path)
  if not chain then return nil, err end
  if (r.type == "websocket" or r.type == "sse") and not chain.has_auth then
    return nil, where .. ": a " .. r.type .. " route needs a plugin with an auth hook"
  end
  -- An SSE stream has no upstream: nothing can ack, send frames, or take
  -- another shape than the standard envelope (docs/protocol.md, SSE).
  if r.type == "sse" then
    if r.acks ~= nil and r.acks ~= false then
      return nil, where .. ".acks: an sse route has no upstream to ack with; use a websocket route for acks"
    end
    for _, h in ipairs({ "format", "on_message", "on_ack" }) do
      if chain.hooks[h] then
        return nil, format("%s: a plugin of this sse route has a %s hook, which sse routes do not run (no upstream, standard envelope only)", where, h)
      end
    end
  end
  if r.anonymous ~= nil then
    if type(r.anonymous) ~= "boolean" then return nil, where .. ".anonymous must be true or false" end
    if not ANONYMOUS_TYPES[r.type] then
      return nil, where .. ".anonymous applies to publish, history and presence routes only"
    end
    if r.anonymous and chain.has_auth then
      return nil, where .. ".anonymous = true: this route has an auth plugin (remove one or the other)"
    end
  end
  if ANONYMOUS_TYPES[r.type] and not chain.has_auth and r.anonymous ~= true then
    return nil, format("%s (%s): a %s route without an auth plugin lets anyone %s every channel; " ..
                       "add an auth plugin (e.g. auth_token with publishers), or set anonymous = true " ..
                       "if that is what you want", where, path, r.type,
                       r.type == "publish" and "publish to" or "read")
  end
  local origins, oerr = check_origins(where, r)
  if oerr then return nil, oerr end
  local acks
  if r.acks ~= nil and r.acks ~= false then
    if r.type ~= "websocket" then return nil, where .. ".acks applies to websocket routes only" end
    local given = r.acks == true and {} or r.acks
    if type(given) ~= "table" then return nil, where .. ".acks must be true or a table" end
    acks = {}
    for k, default in pairs(ACK_DEFAULTS) do
      local v = given[k]
      if v == nil then v = default end
      if type(v) ~= "number" or v < 0 or (k ~= "jitter" and v <= 0) or (k == "jitter" and v >= 1)
         or (k == "factor" and v < 1) or (k == "max_tries" and not positive_int(v)) then
        return nil, format("%s.acks.%s is out of range: %s", where, k, tostring(v))
      end
      acks[k] = v
    end
    local extra = unknown_key(given, ACK_DEFAULTS, where .. ".acks.")
    if extra then return nil, extra end
  end
  local dup = r.duplicate_devices or "replace"
  if dup ~= "replace" and dup ~= "allow" then
    return nil, where .. ".duplicate_devices must be \"replace\" or \"allow\""
  end
  local deflate, derr = check_deflate(where, r)
  if derr then return nil, derr end
  local cors
  if r.cors ~= nil then
    cors, err = check_cors(r.cors, r.type, where)
    if not cors then return nil, err end
  end
  return { path = path, type = r.type, chain = chain, has_auth = chain.has_auth, budget = r.budget,
           acks = acks, allow_duplicates = dup == "allow", cors = cors, anonymous = r.anonymous == true,
           origins = origins, deflate = deflate }
end

-- history = { max_messages, max_age_ms, ..., channels = { { pattern, max_messages, max_age_ms } } }
function _M.check_history(h)
  if h == nil then h = {} end
  if type(h) ~= "table" then return nil, "history must be a table" end
  local out = { channels = {} }
  for k, default in pairs(HISTORY_DEFAULTS) do
    local v = h[k]
    if v == nil then v = default end
    local max = k == "max_messages" and MESSAGES_MAX or EXACT_MAX
    if type(v) ~= "number" or v < 0 or v ~= math.floor(v) or v > max then
      return nil, format("history.%s must be an integer from 0 to %.0f, got %s", k, max, tostring(v))
    end
    out[k] = v
  end
  for k in pairs(h) do
    if HISTORY_DEFAULTS[k] == nil and k ~= "channels" then return nil, "unknown key history." .. tostring(k) end
  end
  for i, p in ipairs(h.channels or {}) do
    local where = format("history.channels[%d]", i)
    if type(p) ~= "table" or type(p.pattern) ~= "string" or p.pattern == "" then
      return nil, where .. " needs a pattern (exact name, prefix*, or *)"
    end
    local mm, ma = p.max_messages or out.max_messages, p.max_age_ms or out.max_age_ms
    if type(mm) ~= "number" or mm < 0 or mm > MESSAGES_MAX or type(ma) ~= "number" or ma < 0 or ma > EXACT_MAX then
      return nil, format("%s: max_messages 0..%d and max_age_ms 0..%.0f", where, MESSAGES_MAX, EXACT_MAX)
    end
    out.channels[i] = { pattern = p.pattern, max_messages = mm, max_age_ms = ma }
  end
  return out
end

-- admin = { socket = "path" | false, listen = "127.0.0.1:8081", token = "..." }
function _M.check_admin(a, base)
  if a == nil then a = {} end
  if type(a) ~= "table" then return nil, "admin must be a table" end
  local bad = unknown_key(a, { socket = true, listen = true, token = true }, "admin.")
  if bad then return nil, bad end
  local out = {}
  if a.socket ~= false then
    local sock = a.socket or "moonpush-admin.sock"
    if type(sock) ~= "string" or sock == "" then return nil, "admin.socket must be a path or false" end
    if sock:sub(1, 1) ~= "/" then sock = base .. "/" .. sock end
    if #sock > 100 then return nil, "admin.socket path is too long for a Unix socket (100 bytes)" end
    out.socket = sock
  end
  if a.listen ~= nil then
    local host, port = parse_listen(a.listen)
    if not host then return nil, "admin.listen must be \"host:port\"" end
    if host ~= "127.0.0.1" and host ~= "::1" and host ~= "localhost" then
      return nil, "admin.listen must be a loopback address (127.0.0.1, ::1 or localhost)"
    end
    if type(a.token) ~= "string" or #a.token < 16 then
      return nil, "admin.listen needs admin.token, at least 16 characters"
    end
    out.listen_host, out.listen_port, out.token = host, port, a.token
  end
  return out
end

-- log = { level = "info", format = "logfmt" | "json", file = "path", access = true }
function _M.check_log(l)
  if l == nil then l = {} end
  if type(l) ~= "table" then return nil, "log must be a table" end
  local bad = unknown_key(l, { level = true, format = true, file = true, access = true }, "log.")
  if bad then return nil, bad end
  local levels = { debug = true, info = true, warn = true, error = true }
  local out = { level = l.level or "info", format = l.format or "logfmt", file = l.file, access = l.access ~= false }
  if not levels[out.level] then return nil, "log.level must be debug, info, warn or error" end
  if out.format ~= "logfmt" and out.format ~= "json" then return nil, "log.format must be logfmt or json" end
  if out.file ~= nil and type(out.file) ~= "string" then return nil, "log.file must be a path" end
  return out
end

-- Returns the normalised config, or nil and a message.
function _M.load(path)
  local chunk, err = loadfile(path)
  if not chunk then return nil, err end
  plugins.disable_jit(chunk)   -- the load's instruction budget must see every loop
  local ok, cfg = pcall(chunk)
  if not ok then return nil, path .. ": " .. tostring(cfg) end
  if type(cfg) ~= "table" then return nil, path .. ": the config file must return a table" end
  local bad = unknown_key(cfg, TOP_KEYS, "")
  if bad then return nil, bad end

  local out = {}
  out.listeners, err = _M.check_listen(cfg.listen or DEFAULTS.listen, dirname(path))
  if not out.listeners then return nil, err end
  out.listen_host, out.listen_port = out.listeners[1].host, out.listeners[1].port
  out.listen_key = listen_key(out.listeners)

  out.max_connections = cfg.max_connections or DEFAULTS.max_connections
  if not positive_int(out.max_connections) then return nil, "max_connections must be " .. POSITIVE_INT end
  out.plugin_budget = cfg.plugin_budget or DEFAULTS.plugin_budget
  if not positive_int(out.plugin_budget) then return nil, "plugin_budget must be " .. POSITIVE_INT end

  out.limits, err = check_section(cfg, "limits")
  if not out.limits then return nil, err end
  out.limits.max_outbound_bytes, err = outbound_budget(cfg.limits and cfg.limits.max_outbound_bytes, out.limits)
  if not out.limits.max_outbound_bytes then return nil, err end
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
  out.plugin_path[#out.plugin_path + 1] = BUNDLED_PLUGINS

  out.history, err = _M.check_history(cfg.history)
  if not out.history then return nil, err end
  out.admin, err = _M.check_admin(cfg.admin, dirname(path))
  if not out.admin then return nil, err end
  out.log, err = _M.check_log(cfg.log)
  if not out.log then return nil, err end
  if cfg.pid_file ~= nil then
    local pf = cfg.pid_file
    if type(pf) ~= "string" or pf == "" then return nil, "pid_file must be a path" end
    if pf:sub(1, 1) ~= "/" then pf = dirname(path) .. "/" .. pf end
    if #pf > 250 then return nil, "pid_file path is too long (250 bytes)" end
    out.pid_file = pf
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
