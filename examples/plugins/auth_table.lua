-- auth_table: an example custom auth plugin. Tokens live in a Lua file that
-- returns token -> identity; the file is re-read when it changes, so tokens
-- can be added or revoked without touching the server config.
--
--   -- tokens.lua
--   return {
--     ["till-3-secret"] = { user = "store-12", device = "till-3", kind = "pos",
--                           channels = { "store:12", "prices" } },
--     ["erp-secret"]    = { name = "erp", channels = { "store:*" } },  -- publisher
--   }
--
-- config = {
--   file = "/etc/moonpush/tokens.lua",  -- required; a relative path is taken
--                                       -- from the server's working directory
--   reload_interval = 5,                -- seconds between checks of the file
-- }
-- Entries with `user` are devices (websocket routes), entries with `name`
-- are publishers (publish, history, presence routes); a token of the other
-- kind is unknown on a route. Identities go out with their role. The file runs in an empty environment: plain data only.
--
-- Reloading: a hook looks at the file at most once per reload_interval (one
-- stat via LuaFileSystem when it is installed, else one read of the file and
-- a compare with the last contents); in between it does no I/O at all. A
-- changed file is loaded and checked whole; if it is broken or gone, a
-- warning is logged and the last good table keeps serving. With lfs a change
-- is seen by modification time and size, so a same-size rewrite within the
-- same second as the last load can go unnoticed until the next change.
-- validate() loads the file, so a config naming a missing or broken file is
-- refused at load.

local moonpush = require "moonpush"

local type, pairs, ipairs, tostring, pcall, setfenv, loadstring =
  type, pairs, ipairs, tostring, pcall, setfenv, loadstring
local open = io.open

local now_ms = moonpush.now
local log = moonpush.log

local has_lfs, lfs = pcall(require, "lfs")
if not has_lfs then lfs = nil end
local has_jit, jit = pcall(require, "jit")
if not has_jit then jit = nil end

local _M = { name = "auth_table" }

local DEFAULT_INTERVAL = 5

-- The options, checked by the server's loader before validate runs
-- (docs/plugins.md, "Options: schema").
_M.schema = {
  file = { type = "string", required = true, min_len = 1, hint = "the path of a Lua file returning token = identity" },
  reload_interval = { type = "number", min = 0.1, hint = "a number of seconds >= 0.1 (default 5)" },
}

-- file path -> { tokens = {...}, stamp = ..., checked = ms }
local tables = {}

local function read_file(path)
  local f, err = open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  if not s then return nil, path .. ": cannot read" end
  return s
end

-- What tells that the file changed: "mtime:size" with lfs, else the text.
local function stamp_of(path)
  if lfs then
    local attr, err = lfs.attributes(path)
    if not attr then return nil, err end
    return attr.modification .. ":" .. attr.size
  end
  return read_file(path)
end

local ID_KEYS = { user = true, name = true, device = true, kind = true, channels = true }

local function check_identity(token, id)
  local where = "token " .. (#token > 4 and token:sub(1, 4) .. "..." or "...")
  if type(id) ~= "table" then return nil, where .. ": identity must be a table" end
  local is_user, is_pub = type(id.user) == "string" and id.user ~= "", type(id.name) == "string" and id.name ~= ""
  if is_user == is_pub then return nil, where .. ": set exactly one of user (device) or name (publisher)" end
  for k in pairs(id) do
    if not ID_KEYS[k] then return nil, where .. ": unknown key " .. tostring(k) end
  end
  if id.channels ~= nil then
    if type(id.channels) ~= "table" then return nil, where .. ": channels must be a list" end
    for _, c in pairs(id.channels) do
      if type(c) ~= "string" then return nil, where .. ": channels must be strings" end
    end
  end
  for _, k in ipairs({ "device", "kind" }) do
    if id[k] ~= nil and type(id[k]) ~= "string" then return nil, where .. ": " .. k .. " must be a string" end
  end
  return true
end

-- Loads and checks the whole file; returns the token table or nil, err.
local function load_tokens(path)
  local text, err = read_file(path)
  if not text then return nil, err end
  local chunk, cerr = loadstring(text, "=" .. path)
  if not chunk then return nil, cerr end
  setfenv(chunk, {})
  -- Like plugin code, keep it in the interpreter, where the server's
  -- instruction budget can see it.
  if jit and jit.off then jit.off(chunk, true) end
  local ok, t = pcall(chunk)
  if not ok then return nil, path .. ": " .. tostring(t) end
  if type(t) ~= "table" then return nil, path .. ": must return a table of token = identity" end
  for token, id in pairs(t) do
    if type(token) ~= "string" or token == "" then return nil, path .. ": tokens must be non-empty strings" end
    local good, ierr = check_identity(token, id)
    if not good then return nil, path .. ": " .. ierr end
  end
  return t
end

-- Loads path now; returns the entry or nil, err.
local function load_entry(path)
  local stamp, err = stamp_of(path)
  if not stamp then return nil, err end
  local tokens
  tokens, err = load_tokens(path)
  if not tokens then return nil, err end
  local entry = { tokens = tokens, stamp = stamp, checked = now_ms() }
  tables[path] = entry
  return entry
end

-- Beyond the schema: the file must load (the options are checked already).
function _M.validate(conf)
  local entry, err = load_entry(conf.file)
  if not entry then return nil, err end
  return true
end

-- The entry for conf.file, re-read first if the interval has passed and
-- the file changed. entry.tokens is nil only if no good table was ever read.
local function current(conf)
  local path = conf.file
  local entry = tables[path]
  local now = now_ms()
  if entry and now - entry.checked < (conf.reload_interval or DEFAULT_INTERVAL) * 1000 then
    return entry
  end
  if not entry then
    entry = {}
    tables[path] = entry
  end
  entry.checked = now
  local stamp, err = stamp_of(path)
  if not stamp then
    log("warn", "auth_table: cannot check", path, err, "(keeping the last good table)")
    return entry
  end
  if stamp == entry.stamp then return entry end
  entry.stamp = stamp   -- a broken file is not retried until it changes again
  local tokens
  tokens, err = load_tokens(path)
  if not tokens then
    log("warn", "auth_table: not reloading", path, err, "(keeping the last good table)")
    return entry
  end
  entry.tokens = tokens
  log("info", "auth_table: loaded", path)
  return entry
end

local function copy_identity(id)
  local out = { role = id.user and "device" or "publisher" }
  for k, v in pairs(id) do out[k] = v end
  if type(id.channels) == "table" then
    local ch = {}
    for i, c in ipairs(id.channels) do ch[i] = c end
    out.channels = ch
  end
  return out
end

function _M.auth(req, conf)
  local token = req.token
  if type(token) ~= "string" or token == "" then
    return nil, { status = 401, code = "unauthorized", message = "missing token: send Authorization: Bearer <token> or ?token=" }
  end
  local entry = current(conf)
  if not entry.tokens then
    return nil, { status = 503, code = "unavailable", message = "token table unavailable" }
  end
  local id = entry.tokens[token]
  local want = (req.route_type == "websocket" or req.route_type == "sse") and "user" or "name"
  if not id or id[want] == nil then
    return nil, { status = 401, code = "unauthorized", message = "unknown token" }
  end
  return copy_identity(id)
end

return _M
