-- HS256 JSON Web Tokens for the integration specs that run auth_jwt routes,
-- signed with the real crypto of the plugins' `moonpush` module.
--
--   local jwt = require "helpers.jwt"
--   jwt.sign(secret, { sub = "alice", exp = jwt.now() + 60 })
local moonpush = require "moonpush"
local cjson = require "cjson"

local M = {}

local b64 = moonpush.base64url_encode

function M.sign(secret, claims)
  local h = b64(cjson.encode({ alg = "HS256", typ = "JWT" }))
  local p = b64(cjson.encode(claims))
  return h .. "." .. p .. "." .. b64(moonpush.hmac_sha256(secret, h .. "." .. p))
end

-- Unix seconds, whole (what exp claims hold).
function M.now() return math.floor(moonpush.now() / 1000) end

return M
