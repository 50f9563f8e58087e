-- moonpush: the module plugins require. C-backed helpers come from
-- "moonpush.host" (src/lua_api.c; inside the server lua_host_helpers.c adds
-- publish/online/connections/channel_info); JSON is lua-cjson. See docs/plugins.md.

local host = require "moonpush.host"
local cjson = require "cjson.safe"

local select, tostring, type, error, concat = select, tostring, type, error, table.concat

local _M = {
  json = {
    encode = cjson.encode,
    decode = cjson.decode,
    null = cjson.null,
  },
  now = host.now,
  sha1 = host.sha1,
  sha256 = host.sha256,
  hmac_sha256 = host.hmac_sha256,
  constant_time_eq = host.constant_time_eq,
  base64_encode = host.base64_encode,
  base64_decode = host.base64_decode,
  base64url_encode = host.base64url_encode,
  base64url_decode = host.base64url_decode,
  limit = host.limit,
  online = host.online,
  connections = host.connections,
  channel_info = host.channel_info,
}

-- publish("news", data) | publish({ user = "alice" }, data) | publish({ channel = "x" }, data)
if host.publish then
  function _M.publish(target, data)
    local name = target
    if type(target) == "table" then
      name = target.channel or (target.user and "user:" .. tostring(target.user))
    end
    if type(name) ~= "string" then
      error("bad argument #1 to 'publish' (channel name or { user = ... } / { channel = ... } expected)", 2)
    end
    local text, err = cjson.encode(data)
    if not text then error("bad argument #2 to 'publish' (" .. tostring(err) .. ")", 2) end
    return host.publish(name, text)
  end
end

-- For a plugin's validate(conf): "unknown key <k>" for a key of t that the
-- set `known` lacks, nil when every key is known. A misspelt option is
-- refused rather than silently ignored.
function _M.unknown_key(t, known)
  for k in pairs(t) do
    if not known[k] then return "unknown key " .. tostring(k) end
  end
  return nil
end

local LEVELS = { debug = true, info = true, warn = true, error = true }

function _M.log(level, ...)
  if not LEVELS[level] then
    error("bad argument #1 to 'log' (debug, info, warn or error expected)", 2)
  end
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = tostring((select(i, ...))) end
  host.log(level, concat(parts, " "))
end

return _M
