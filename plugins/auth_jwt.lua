-- auth_jwt: HS256 JSON Web Tokens (RFC 7519) signed with a shared secret.
--
-- The token comes from `Authorization: Bearer <jwt>` or `?token=<jwt>`
-- (req.token). Only HS256 is accepted: the header's `alg` must be exactly
-- "HS256" ("none", "hs256", RS256 ... are refused), and a header with `crit`
-- is refused (no extensions are understood).
--
-- config = {
--   secret   = "...",         -- required; at least 32 bytes (RFC 7518 3.2)
--   leeway   = 30,            -- seconds of clock skew allowed on exp/nbf/iat
--   require_exp = false,      -- true: a token without `exp` is refused
--   issuer   = "billing",     -- optional: `iss` must equal it (or be one of a list)
--   audience = "push",        -- optional: `aud` (string or list) must contain it
--                             --   (or one of a list)
--   publisher = false,        -- true: a token without a role claim is a
--                             --   publisher's (default: a device's)
--   require_role = false,     -- true: a token without a role claim is refused
--   claims = {                -- which claim holds what (defaults shown)
--     user = "sub", device = "device", kind = "kind", channels = "channels",
--     name = "sub",           -- publisher name
--     role = "role",          -- "device" or "publisher"
--   },
-- }
--
-- Roles: the `role` claim says whom a token was minted for, "device" (it
-- may open a WebSocket) or "publisher" (it may publish and read history and
-- presence). A token without it is a device token (unless publisher = true
-- or require_role = true): the safe side, since a device token can only
-- ever read what its channels allow, so every publisher token must say
-- role = "publisher". The core refuses a token of the other role on a route
-- with 403 forbidden.
--
-- Identities: a device gets { role, user, device?, kind?, channels, expires? }
-- from the claims (a missing device/kind is left to the core's defaults; a
-- missing channels claim means no channel besides user:<user>). A publisher
-- gets { role, name, channels, expires? }. The channels claim is a list of
-- channel patterns. expires is exp + leeway (unix seconds): the server
-- closes a WebSocket whose token expired unless it sent a refresh in time.
--
-- Denials (the status is the contract with clients; the message names the
-- reason and never echoes the token):
--   401 unauthorized  -- the token cannot be trusted or is not for us, so the
--                        client should get a new one: missing token,
--                        malformed token (parts, base64, JSON, claim types),
--                        unsupported alg, bad signature, expired, not yet
--                        valid, issued in the future, wrong issuer, wrong
--                        audience (RFC 6750 "invalid_token").
--   403 forbidden     -- an authentic, current token for us that does not
--                        grant this route: no user claim (device tokens) or
--                        no name claim (publisher tokens), no role claim when
--                        require_role is set; and (from the core) a token of
--                        the other role than the route takes.

local moonpush = require "moonpush"

local type, ipairs, tostring, setmetatable = type, ipairs, tostring, setmetatable
local match, sub = string.match, string.sub
local floor = math.floor

local b64url_decode = moonpush.base64url_decode
local b64url_encode = moonpush.base64url_encode
local hmac_sha256 = moonpush.hmac_sha256
local ct_eq = moonpush.constant_time_eq
local json_decode = moonpush.json.decode
local now_ms = moonpush.now
local null = moonpush.json.null

local _M = { name = "auth_jwt" }

local MAX_TOKEN_BYTES = 8192
local ROLES = { device = true, publisher = true }

local function claim(default) return { type = "string", min_len = 1, default = default } end
local NAMES = { type = { "string", "list" }, of = "string", min_len = 1 }   -- one name, or any of a list

-- The options (docs/plugins.md, "Options: schema"): the loader checks them
-- and fills in the defaults, so the hooks read conf.leeway, conf.claims.user...
_M.schema = {
  secret = { type = "string", required = true, min_len = 32, secret = true,
             hint = "a string of at least 32 bytes (RFC 7518: HS256 keys are 256 bits or more)" },
  leeway = { type = "number", min = 0, default = 30 },
  require_exp = { type = "boolean", default = false },
  issuer = NAMES,
  audience = NAMES,
  publisher = { type = "boolean", default = false },
  require_role = { type = "boolean", default = false },
  claims = { type = "table", default = {}, fields = {
    user = claim("sub"), device = claim("device"), kind = claim("kind"), channels = claim("channels"),
    name = claim("sub"), role = claim("role"),
  } },
}

local function unauthorized(message)
  return nil, { status = 401, code = "unauthorized", message = message }
end

local function forbidden(message)
  return nil, { status = 403, code = "forbidden", message = message }
end

-- issuer / audience (a string or a list of them, checked by the schema) as a set.
local function string_set(v)
  if type(v) == "string" then return { [v] = true } end
  local set = {}
  for _, s in ipairs(v) do set[s] = true end
  return set
end

-- Options derived from a config, computed once per config table.
local derived = setmetatable({}, { __mode = "k" })

local function options(conf)
  local o = derived[conf]
  if o then return o end
  o = {
    issuers = conf.issuer and string_set(conf.issuer),
    audiences = conf.audience and string_set(conf.audience),
  }
  derived[conf] = o
  return o
end

-- Decodes one base64url JSON object part; returns table or nil.
local function decode_part(s)
  local raw = b64url_decode(s)
  if not raw then return nil end
  local v = json_decode(raw)   -- cjson.safe: nil on bad JSON
  if type(v) ~= "table" or #v > 0 then return nil end
  return v
end

local function is_time(v)
  return type(v) == "number" and v == v and v > -1e15 and v < 1e15
end

-- Verifies the token; returns the claims or nil, denial.
local function verify(token, conf, o)
  if #token > MAX_TOKEN_BYTES then return unauthorized("malformed token: too long") end
  local h64, p64, s64 = match(token, "^([%w_%-]+)%.([%w_%-]+)%.([%w_%-]*)$")
  if not h64 then
    local _, dots = token:gsub("%.", "")
    if dots ~= 2 then return unauthorized("malformed token: a JWT has 3 dot-separated parts") end
    return unauthorized("malformed token: parts must be base64url")
  end

  local header = decode_part(h64)
  if not header then return unauthorized("malformed token: header is not a base64url JSON object") end
  if header.alg ~= "HS256" then
    return unauthorized("unsupported alg " .. (type(header.alg) == "string" and sub(header.alg, 1, 16) or "(none)") .. ": only HS256 is accepted")
  end
  if header.crit ~= nil then return unauthorized("malformed token: unsupported crit header") end

  -- The signature is checked before the payload is looked at.
  local expected = b64url_encode(hmac_sha256(conf.secret, h64 .. "." .. p64))
  if not ct_eq(expected, s64) then return unauthorized("bad signature") end

  local claims = decode_part(p64)
  if not claims then return unauthorized("malformed token: payload is not a base64url JSON object") end

  local now = now_ms() / 1000
  local leeway = conf.leeway
  local exp, nbf, iat = claims.exp, claims.nbf, claims.iat
  if exp ~= nil then
    if not is_time(exp) then return unauthorized("malformed token: exp must be a number") end
    if now >= exp + leeway then return unauthorized("expired token") end
  elseif conf.require_exp then
    return unauthorized("token has no exp")
  end
  if nbf ~= nil then
    if not is_time(nbf) then return unauthorized("malformed token: nbf must be a number") end
    if now + leeway < nbf then return unauthorized("token not yet valid (nbf)") end
  end
  if iat ~= nil then
    if not is_time(iat) then return unauthorized("malformed token: iat must be a number") end
    if now + leeway < iat then return unauthorized("token issued in the future (iat)") end
  end

  if o.issuers then
    if type(claims.iss) ~= "string" or not o.issuers[claims.iss] then
      return unauthorized("wrong issuer")
    end
  end
  if o.audiences then
    local aud, ok = claims.aud, false
    if type(aud) == "string" then
      ok = o.audiences[aud] or false
    elseif type(aud) == "table" then
      for _, a in ipairs(aud) do
        if type(a) == "string" and o.audiences[a] then ok = true break end
      end
    end
    if not ok then return unauthorized("wrong audience") end
  end
  return claims
end

-- A claim as a non-empty string (numbers are accepted and converted).
local function claim_string(claims, name)
  local v = claims[name]
  if type(v) == "number" and v == floor(v) then v = tostring(v) end
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

local function claim_channels(claims, name)
  local v = claims[name]
  if v == nil or v == null then return {} end
  if type(v) ~= "table" then return nil end
  local out = {}
  for i, c in ipairs(v) do
    if type(c) ~= "string" then return nil end
    out[i] = c
  end
  return out
end

function _M.auth(req, conf)
  local token = req.token
  if type(token) ~= "string" or token == "" then
    return unauthorized("missing token: send Authorization: Bearer <jwt> or ?token=")
  end
  local o = options(conf)
  local claims, denial = verify(token, conf, o)
  if not claims then return nil, denial end

  local names = conf.claims
  local channels = claim_channels(claims, names.channels)
  if not channels then
    return unauthorized("malformed token: claim " .. names.channels .. " must be a list of strings")
  end

  local role = claims[names.role]
  if role == nil or role == null then
    if conf.require_role then return forbidden("token has no role (claim " .. names.role .. ")") end
    role = conf.publisher and "publisher" or "device"
  elseif not ROLES[role] then
    return unauthorized("malformed token: claim " .. names.role .. " must be \"device\" or \"publisher\"")
  end
  local expires = claims.exp and claims.exp + conf.leeway or nil

  if role == "publisher" then
    local name = claim_string(claims, names.name)
    if not name then return forbidden("token has no publisher name (claim " .. names.name .. ")") end
    return { role = role, name = name, channels = channels, expires = expires }
  end

  local user = claim_string(claims, names.user)
  if not user then return forbidden("token has no user (claim " .. names.user .. ")") end
  local device, kind = claims[names.device], claims[names.kind]
  if device == null then device = nil end
  if kind == null then kind = nil end
  if device ~= nil and type(device) ~= "string" then
    return unauthorized("malformed token: claim " .. names.device .. " must be a string")
  end
  if kind ~= nil and type(kind) ~= "string" then
    return unauthorized("malformed token: claim " .. names.kind .. " must be a string")
  end
  return { role = role, user = user, device = device, kind = kind, channels = channels, expires = expires }
end

return _M
