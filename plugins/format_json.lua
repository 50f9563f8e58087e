-- format_json: the standard JSON message frame, optionally reshaped.
--
--   {"type":"message","channel":"news","seq":7,"id":"5f3a9c1e-2a","data":{...}}
--
-- config = {
--   type = "message",   -- the value of the type field
--   fields = {          -- per standard field: a new name, or false to omit it
--     type = "t", channel = "ch", seq = false, id = "msg_id", data = "payload",
--   },
-- }
-- Fields keep the order above; output names must be distinct. Without
-- config the frame is byte-for-byte the protocol's `message` frame, except
-- that data is re-encoded by lua-cjson (see below).
--
-- data: when the core hands over msg.data_json (data already serialised
-- compactly, key order kept) it is spliced in as is; otherwise msg.data is
-- encoded with moonpush.json.encode (lua-cjson), which does not keep object
-- key order, writes an empty array as {} and keeps 14 significant digits of
-- a number. If data cannot be encoded the hook logs a warning and returns
-- nil: the core then sends its standard envelope.
--
-- Called once per message per route, never per recipient.

local moonpush = require "moonpush"

local type, pairs, tostring, setmetatable = type, pairs, tostring, setmetatable
local concat = table.concat
local format, match = string.format, string.match
local floor = math.floor

local json_encode = moonpush.json.encode
local log = moonpush.log

local _M = { name = "format_json" }

local ORDER = { "type", "channel", "seq", "id", "data" }
local STANDARD = { type = true, channel = true, seq = true, id = true, data = true }

function _M.validate(conf)
  for k in pairs(conf) do
    if k ~= "type" and k ~= "fields" then return nil, "unknown key " .. tostring(k) end
  end
  if conf.type ~= nil and (type(conf.type) ~= "string" or conf.type == "") then
    return nil, "type must be a non-empty string"
  end
  if conf.fields ~= nil then
    if type(conf.fields) ~= "table" then return nil, "fields must be a table" end
    local used = {}
    for k, v in pairs(conf.fields) do
      if not STANDARD[k] then
        return nil, "fields." .. tostring(k) .. ": not a standard field (type, channel, seq, id, data)"
      end
      if v ~= false and (type(v) ~= "string" or v == "") then
        return nil, "fields." .. k .. " must be a new name or false"
      end
    end
    for _, k in pairs(ORDER) do
      local out = conf.fields[k]
      if out == nil then out = k end
      if out then
        if used[out] then return nil, "fields: two fields named " .. out end
        used[out] = true
      end
    end
  end
  return true
end

-- Precomputed per config table: the '"name":' prefixes, nil for omitted.
local keys_cache = setmetatable({}, { __mode = "k" })

local function keys_for(conf)
  local keys = keys_cache[conf]
  if keys then return keys end
  keys = {}
  local fields = conf.fields or {}
  for _, k in pairs(ORDER) do
    local out = fields[k]
    if out == nil then out = k end
    if out then keys[k] = json_encode(out) .. ":" end
  end
  keys_cache[conf] = keys
  return keys
end

-- seq as an exact integer: numbers up to 2^53, or a string of digits.
local function encode_seq(seq)
  if type(seq) == "number" and seq == floor(seq) and seq >= 0 and seq < 2 ^ 53 then
    return format("%d", seq)
  end
  if type(seq) == "string" and match(seq, "^%d+$") then return seq end
  return json_encode(seq)
end

function _M.format(msg, audience, conf)
  local keys = keys_for(conf)
  local parts, n = {}, 0
  local function add(k, v)
    if keys[k] then
      n = n + 1
      parts[n] = keys[k] .. v
    end
  end
  add("type", json_encode(conf.type or "message"))
  add("channel", json_encode(msg.channel))
  add("seq", encode_seq(msg.seq))
  add("id", json_encode(msg.id))
  if keys.data then
    local data = msg.data_json
    if type(data) ~= "string" then
      local err
      data, err = json_encode(msg.data)
      if not data then
        log("warn", "format_json: cannot encode data of", tostring(msg.channel), tostring(msg.seq), err)
        return nil
      end
    end
    add("data", data)
  end
  return "{" .. concat(parts, ",") .. "}"
end

return _M
