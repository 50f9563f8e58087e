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

local type, pairs, ipairs, tostring, setmetatable = type, pairs, ipairs, tostring, setmetatable
local concat = table.concat
local format, match, find, gsub = string.format, string.match, string.find, string.gsub

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

-- Per config table, built once: the whole frame as a string.format template
-- with the type value and the field names baked in. Each of channel, seq, id
-- and data has a slot, "%.0s" (prints nothing) when the field is omitted, so
-- every call passes the same four arguments and makes one string. Two
-- templates: `plain` has the quotes around channel and id and "%d" for seq,
-- for the usual message (strings that need no escape, an integer seq);
-- `any` takes each value already encoded.
local templates = setmetatable({}, { __mode = "k" })

local function escape_percent(s) return (gsub(s, "%%", "%%%%")) end

local function build_template(conf, slots)
  local fields = conf.fields or {}
  local out, sent = {}, 0
  for _, k in ipairs(ORDER) do
    local name = fields[k]
    if name == nil then name = k end
    local slot
    if k == "type" then
      slot = name and escape_percent(json_encode(conf.type or "message")) or ""
    elseif name then
      slot = slots[k]
    else
      slot = "%.0s"
    end
    if name then
      out[#out + 1] = (sent > 0 and "," or "") .. escape_percent(json_encode(name)) .. ":" .. slot
      sent = sent + 1
    else
      out[#out + 1] = slot
    end
  end
  return "{" .. concat(out) .. "}"
end

local PLAIN_SLOTS = { channel = '"%s"', seq = "%d", id = '"%s"', data = "%s" }
local ANY_SLOTS = { channel = "%s", seq = "%s", id = "%s", data = "%s" }

local function templates_for(conf)
  local t = templates[conf]
  if not t then
    local fields = conf.fields or {}
    t = { plain = build_template(conf, PLAIN_SLOTS), any = build_template(conf, ANY_SLOTS),
          seq = fields.seq ~= false, data = fields.data ~= false }
    templates[conf] = t
  end
  return t
end

-- A string that goes between JSON quotes as it is (the core's channel names
-- and ids always do).
local function plain(s)
  return type(s) == "string" and not find(s, '[%c"\\/]')
end

local function seq_is_int(seq)
  return type(seq) == "number" and seq >= 0 and seq < 2 ^ 53 and seq % 1 == 0
end

-- seq that is not a plain integer number: a string of digits as it is.
local function encode_seq(seq)
  if type(seq) == "string" and match(seq, "^%d+$") then return seq end
  return json_encode(seq)
end

function _M.format(msg, audience, conf)
  local t = templates_for(conf)
  local data = ""
  if t.data then
    data = msg.data_json
    if type(data) ~= "string" then
      local err
      data, err = json_encode(msg.data)
      if not data then
        log("warn", "format_json: cannot encode data of", tostring(msg.channel), tostring(msg.seq), err)
        return nil
      end
    end
  end
  local channel, seq, id = msg.channel, msg.seq, msg.id
  if plain(channel) and plain(id) and (not t.seq or seq_is_int(seq)) then
    return format(t.plain, channel, t.seq and seq or "", id, data)
  end
  return format(t.any, json_encode(channel), t.seq and encode_seq(seq) or "", json_encode(id), data)
end

return _M
