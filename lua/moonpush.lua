-- moonpush: the module plugins require. C-backed helpers come from
-- "moonpush.host" (src/lua_api.c; inside the server lua_host.c adds
-- publish/online/channel_info); JSON is lua-cjson. See docs/plugins.md.

local host = require "moonpush.host"
local cjson = require "cjson.safe"

local select, tostring, concat = select, tostring, table.concat

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
  publish = host.publish,
  online = host.online,
  channel_info = host.channel_info,
}

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
