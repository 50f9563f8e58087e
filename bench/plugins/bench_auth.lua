-- bench_auth: bench-only auth plugin (bench/configs/bench.lua, route /ws/lua).
-- The same identities as the auth_token book of /ws, but worked out in Lua
-- from the token instead of looked up in a 10k-entry config table:
--   "bench"        -> user "bench", any channel
--   "bench-u<k>"   -> user "u<k>", k = 0 .. users-1, any channel
-- config = { users = 10000, kind = "bench" }
local type, tonumber, match, floor = type, tonumber, string.match, math.floor

local _M = { name = "bench_auth" }

function _M.validate(conf)
  local u = conf.users
  if type(u) ~= "number" or u < 1 or u ~= floor(u) then return nil, "users must be a positive integer" end
  if conf.kind ~= nil and type(conf.kind) ~= "string" then return nil, "kind must be a string" end
  return true
end

local ANY = { "*" }

function _M.auth(req, conf)
  local token = req.token
  if token == "bench" then
    return { user = "bench", kind = conf.kind or "bench", channels = ANY }
  end
  local k = type(token) == "string" and tonumber(match(token, "^bench%-u(%d+)$"))
  if k and k < conf.users then
    return { user = "u" .. k, kind = conf.kind or "bench", channels = ANY }
  end
  return nil, { status = 401, code = "unauthorized", message = "unknown token" }
end

return _M
