-- route_default: small, common publish-time rules for a publish route.
--
-- config = {
--   require_fields = { "order", "status" }, -- data must be an object with these
--                                           -- keys, none of them null
--   max_data_bytes = 4096,   -- data, JSON-encoded, may be at most this long
--   prefix = "acme:",        -- prepended to the channel(s); "{publisher}" in
--                            -- it is replaced by the publisher's name, so
--                            -- "{publisher}:" gives each publisher its own
--                            -- namespace. Personal channels (user:<id>) are
--                            -- left alone.
--   kinds = { "pos" },       -- deliver only to connections of these device
--                            -- kinds (sets msg.kinds; intersected with kinds
--                            -- an earlier plugin set)
-- }
-- Every key is optional. Checks run before rewrites, so the limits apply to
-- what the publisher sent. The hook always returns the message, which ends
-- the route phase: put route_default last among a chain's route hooks.
--
-- Denials:
--   400 bad_message     data is not an object / lacks a required field
--   413 data_too_large  data over max_data_bytes, measured on its JSON text:
--                       the text as published (the frame's bytes) while no
--                       earlier hook touched msg.data, else as lua-cjson
--                       encodes it (within a few bytes of the frame)
--   400 bad_channel     a prefixed channel name would pass 128 bytes
-- The channel rules themselves (characters, length) are the core's, checked
-- on the result as on any channel.

local moonpush = require "moonpush"

local type, ipairs = type, ipairs
local find, gsub, match, sub, format = string.find, string.gsub, string.match, string.sub, string.format

local json_encode, json_decode = moonpush.json.encode, moonpush.json.decode
local null = moonpush.json.null

local _M = { name = "route_default" }

local MAX_CHANNEL_BYTES = 128
local PERSONAL = "user:"

-- A prefix: channel characters and {publisher}, shorter than a channel.
local function good_prefix(p)
  local literal = gsub(p, "{publisher}", "")
  if not match(literal, "^[%w_%-%.:@]*$") then
    return nil, "channel characters (A-Z a-z 0-9 _ - . : @) and {publisher}"
  end
  if #literal >= MAX_CHANNEL_BYTES then return nil, "shorter than a channel name may be (128 bytes)" end
  return true
end

local NAMES = { type = "list", min_len = 1, of = { type = "string", min_len = 1 } }

_M.schema = {
  require_fields = NAMES,
  max_data_bytes = { type = "number", integer = true, min = 1 },
  prefix = { type = "string", min_len = 1, check = good_prefix },
  kinds = NAMES,
}

local function bad(status, code, message)
  return nil, { status = status, code = code, message = message }
end

-- Checks read msg.data_json when the core still has it (no hook touched
-- data): a private decode for the fields, its length for the size. msg.data
-- itself stays untouched, so the core publishes the bytes as sent instead of
-- re-encoding them.
local function check_data(msg, conf)
  local text = rawget(msg, "data_json")
  local fields = conf.require_fields
  if fields then
    local data
    if text then data = json_decode(text) else data = msg.data end
    if type(data) ~= "table" then return bad(400, "bad_message", "data must be an object") end
    for i = 1, #fields do
      local v = data[fields[i]]
      if v == nil or v == null then
        return bad(400, "bad_message", "data." .. fields[i] .. " is required")
      end
    end
  end
  local max = conf.max_data_bytes
  if max then
    if not text then
      text = json_encode(msg.data)
      if not text then return bad(400, "bad_message", "data cannot be encoded as JSON") end
    end
    if #text > max then
      return bad(413, "data_too_large", format("data is %d bytes, at most %d allowed", #text, max))
    end
  end
  return true
end

local function prefixed(channel, prefix)
  if type(channel) ~= "string" or sub(channel, 1, #PERSONAL) == PERSONAL then return channel end
  local c = prefix .. channel
  if #c > MAX_CHANNEL_BYTES then return nil, c end
  return c
end

local function intersect(have, want)
  local set, out = {}, {}
  for _, k in ipairs(want) do set[k] = true end
  for _, k in ipairs(have) do
    if set[k] then out[#out + 1] = k end
  end
  return out
end

function _M.route(msg, ctx, conf)
  local ok, denial = check_data(msg, conf)
  if not ok then return nil, denial end

  local prefix = conf.prefix
  if prefix then
    if find(prefix, "{publisher}", 1, true) then
      local name = ctx.publisher
      if type(name) ~= "string" or name == "" then
        return bad(403, "forbidden", "route needs a named publisher ({publisher} prefix)")
      end
      prefix = gsub(prefix, "{publisher}", (gsub(name, "%%", "%%%%")))
    end
    local long
    if msg.channel ~= nil then
      local c
      c, long = prefixed(msg.channel, prefix)
      if c == nil then return bad(400, "bad_channel", "channel too long after prefix: " .. sub(long, 1, 40) .. "...") end
      msg.channel = c
    end
    if type(msg.channels) == "table" then
      local out = {}
      for i, ch in ipairs(msg.channels) do
        out[i], long = prefixed(ch, prefix)
        if out[i] == nil then return bad(400, "bad_channel", "channel too long after prefix: " .. sub(long, 1, 40) .. "...") end
      end
      msg.channels = out
    end
  end

  local kinds = conf.kinds
  if kinds then
    if type(msg.kinds) == "table" then
      msg.kinds = intersect(msg.kinds, kinds)
    else
      local copy = {}
      for i = 1, #kinds do copy[i] = kinds[i] end
      msg.kinds = copy
    end
  end
  return msg
end

return _M
