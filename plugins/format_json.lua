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

local type, ipairs, tostring, setmetatable = type, ipairs, tostring, setmetatable
local concat = table.concat
local format, match, gsub = string.format, string.match, string.gsub

local json_encode = moonpush.json.encode
local log = moonpush.log

local _M = { name = "format_json" }

local ORDER = { "type", "channel", "seq", "id", "data" }

-- Per standard field: a new name, or false to leave it out.
local NAME = { type = { "string", "boolean" }, min_len = 1, hint = "a new name or false",
               check = function(v) return v ~= true end }

_M.schema = {
  type = { type = "string", min_len = 1, default = "message" },
  fields = { type = "table", default = {}, fields = {
    type = NAME, channel = NAME, seq = NAME, id = NAME, data = NAME,
  } },
}

-- Across fields: two fields must not come out under one name.
function _M.validate(conf)
  local used = {}
  for _, k in ipairs(ORDER) do
    local out = conf.fields[k]
    if out == nil then out = k end
    if out then
      if used[out] then return nil, "fields: two fields named " .. out end
      used[out] = true
    end
  end
  return true
end

-- Per config table, built once: the whole frame as a string.format template
-- with the type value and the field names baked in. Each of channel, seq, id
-- and data has a slot, "%.0s" (prints nothing) when the field is omitted, so
-- every call passes the same four arguments and makes one string. Two
-- templates: `int_seq` writes seq with "%d" (the usual integer), `any_seq`
-- takes it already encoded.
local templates = setmetatable({}, { __mode = "k" })

local function escape_percent(s) return (gsub(s, "%%", "%%%%")) end

local function build_template(conf, seq_slot)
  local fields = conf.fields
  local out, sent = {}, 0
  for _, k in ipairs(ORDER) do
    local name = fields[k]
    if name == nil then name = k end
    local slot
    if k == "type" then
      slot = name and escape_percent(json_encode(conf.type)) or ""
    elseif name then
      slot = k == "seq" and seq_slot or "%s"
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

local function templates_for(conf)
  local t = templates[conf]
  if not t then
    local fields = conf.fields
    t = { int_seq = build_template(conf, "%d"), any_seq = build_template(conf, "%s"),
          seq = fields.seq ~= false, data = fields.data ~= false }
    templates[conf] = t
  end
  return t
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
  -- channel and id through lua-cjson: cheaper than checking whether they
  -- need escaping at all (a Lua pattern costs ~2k instructions a string)
  local seq = msg.seq
  if not t.seq or seq_is_int(seq) then
    return format(t.int_seq, json_encode(msg.channel), t.seq and seq or "", json_encode(msg.id), data)
  end
  return format(t.any_seq, json_encode(msg.channel), encode_seq(seq), json_encode(msg.id), data)
end

return _M
