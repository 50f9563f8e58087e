-- ratelimit: token-bucket limits per client IP, token, user or publisher.
--
-- config = {
--   per_ip        = { rate = 5, burst = 10 },  -- every phase (ctx.ip)
--   per_token     = { rate = 5, burst = 10 },  -- connect/publish (ctx.token)
--   per_user      = { rate = 20, burst = 40 }, -- message phase (ctx.user)
--   per_publisher = { rate = 100, burst = 200 },-- publish phase (ctx.publisher)
--   phases = { "connect", "publish", "message" }, -- where to apply (default all)
--   scope  = "/ws",   -- bucket namespace; default: the route's path
-- }
-- Every per_* entry is optional (at least one is required). `rate` is tokens
-- per second (> 0, fractions allowed: 0.5 = one every 2 s), `burst` the
-- bucket size (>= 1). Each event takes one token from every bucket that
-- applies to it; a limit whose key is absent from the event (e.g. per_user
-- at connect, where no user is known yet) is skipped.
--
-- Buckets live in C (moonpush.limit): O(1), bounded, least recently used
-- evicted. A key is "<scope>|<phase>|<kind>|<value>", e.g.
-- "/ws|connect|ip|127.0.0.1": each phase has its own buckets, so one route
-- may carry several ratelimit entries with different `phases` and rates.
-- Entries that share scope, phase and kind share a bucket: give them
-- different `scope`s, or the same scope on purpose to share one budget
-- between routes. Tokens are hashed (SHA-256) before they become keys, and
-- a key longer than the limiter's 256 bytes is hashed whole.
--
-- Limits are checked in the order ip, token, user, publisher; the first that
-- denies ends the check (the buckets before it have been charged).
-- Denial: nil, { status = 429, code = "rate_limited", message = "...",
--                retry_after = <whole seconds, >= 1> }

local moonpush = require "moonpush"

local type, ipairs, tostring, tonumber = type, ipairs, tostring, tonumber
local ceil = math.ceil
local match, format = string.match, string.format

local limit = moonpush.limit
local sha256 = moonpush.sha256
local b64url = moonpush.base64url_encode

local _M = { name = "ratelimit" }

-- kind name in the config, key word, ctx field, phases where ctx has it
local KINDS = {
  { conf = "per_ip", word = "ip", field = "ip" },
  { conf = "per_token", word = "token", field = "token", hash = true },
  { conf = "per_user", word = "user", field = "user" },
  { conf = "per_publisher", word = "publisher", field = "publisher" },
}
local MAX_KEY_BYTES = 256   -- MP_LIMITER_MAX_KEY_LEN

local LIMIT = { type = "table", fields = {
  rate = { type = "number", required = true, above = 0, hint = "a number of events per second > 0" },
  burst = { type = "number", required = true, min = 1 },
} }

_M.schema = {
  per_ip = LIMIT, per_token = LIMIT, per_user = LIMIT, per_publisher = LIMIT,
  phases = { type = "list", min_len = 1, allowed = { "connect", "publish", "message" } },   -- absent: all
  scope = { type = "string", min_len = 1, max_len = 64 },
}

-- Across options: a ratelimit entry without any limit is a mistake.
function _M.validate(conf)
  for _, k in ipairs(KINDS) do
    if conf[k.conf] ~= nil then return true end
  end
  return nil, "set at least one of per_ip, per_token, per_user, per_publisher"
end

local function applies(conf, phase)
  local phases = conf.phases
  if not phases then return true end
  for i = 1, #phases do
    if phases[i] == phase then return true end
  end
  return false
end

-- The IP from ctx.ip, else remote_addr without its port.
local function client_ip(ctx)
  if type(ctx.ip) == "string" and ctx.ip ~= "" then return ctx.ip end
  local addr = ctx.remote_addr
  if type(addr) ~= "string" then return nil end
  return match(addr, "^%[(.-)%]:%d+$") or match(addr, "^([^:]+):%d+$") or addr
end

local function bucket_key(prefix, value, hash)
  if hash then value = "#" .. b64url(sha256(value)) end
  local key = prefix .. value
  if #key > MAX_KEY_BYTES then key = "#" .. b64url(sha256(key)) end
  return key
end

function _M.ratelimit(ctx, conf)
  local phase = ctx.phase
  if not applies(conf, phase) then return end
  local scope = conf.scope or ctx.route or "-"
  for _, k in ipairs(KINDS) do
    local l = conf[k.conf]
    if l then
      local value
      if k.field == "ip" then value = client_ip(ctx) else value = ctx[k.field] end
      if type(value) == "string" and value ~= "" then
        local ok, retry = limit(bucket_key(scope .. "|" .. tostring(phase) .. "|" .. k.word .. "|", value, k.hash),
                                l.rate, l.burst)
        if not ok then
          local after = ceil(tonumber(retry) or 1)
          if after < 1 then after = 1 end
          return nil, {
            status = 429, code = "rate_limited", retry_after = after,
            message = format("too many requests (%s limit: %g/s, burst %g); retry in %d s", k.word, l.rate, l.burst, after),
          }
        end
      end
    end
  end
end

return _M
