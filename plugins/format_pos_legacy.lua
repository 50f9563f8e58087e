-- format_pos_legacy: one plain-text line per message, for old POS terminals
-- that cannot parse JSON frames.
--
--   MSG|<channel>|<seq>|<id>|<payload>
--   e.g.  MSG|orders:17|42|5f3a9c1e-2a|{"total":12.5,"status":"paid"}
--         MSG|orders:17|42|5f3a9c1e-2a|Order 17 paid        (field = "text")
--
-- The first four fields never contain '|' (channel names and ids cannot);
-- the payload is the rest of the line and may. The line holds no CR, LF or
-- other control character: JSON escapes them, and in field mode they are
-- replaced by spaces.
--
-- config = {
--   tag = "MSG",        -- first field (letters, digits, _ and -)
--   field = "text",     -- payload = data[field] ("a.b" digs into objects)
--                       -- instead of the whole data as compact JSON; strings
--                       -- as they are, numbers and booleans as text, objects
--                       -- and arrays as compact JSON
--   missing = "",       -- payload when data has no such field (or is null)
--   ascii = false,      -- true: bytes outside ASCII become '?'
--   line_end = "",      -- appended to the line: "", "\n" or "\r\n"
-- }
-- Whole-data payloads use msg.data_json (the core's compact text) when the
-- core provides it, else lua-cjson (no key order, 14 significant digits).
-- Returns nil (the core's standard envelope) only if data cannot be encoded,
-- after logging a warning. Called once per message per route.

local moonpush = require "moonpush"

local type, tostring = type, tostring
local concat = table.concat
local format, match, gsub, gmatch = string.format, string.match, string.gsub, string.gmatch
local floor = math.floor

local json_encode = moonpush.json.encode
local null = moonpush.json.null
local log = moonpush.log

local _M = { name = "format_pos_legacy" }

-- A field name or a dotted path: no empty part.
local function dotted(f)
  return not (match(f, "^%.") or match(f, "%.$") or match(f, "%.%."))
end

_M.schema = {
  tag = { type = "string", pattern = "^[%w_%-]+$", default = "MSG", hint = "a word of letters, digits, _ and -" },
  field = { type = "string", min_len = 1, check = dotted, hint = "a field name or a dotted path (a.b)" },
  missing = { type = "string", pattern = "^%C*$", default = "", hint = "a string without control characters" },
  ascii = { type = "boolean", default = false },
  line_end = { type = "string", allowed = { "", "\n", "\r\n" }, default = "" },
}

local function number_text(v)
  if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return format("%d", v) end
  return format("%.14g", v)
end

local function dig(data, path)
  local v = data
  for key in gmatch(path, "[^%.]+") do
    if type(v) ~= "table" then return nil end
    v = v[key]
  end
  return v
end

-- The payload text, or nil, err if data cannot be encoded.
local function payload(msg, conf)
  local data, field = msg.data, conf.field
  if not field then
    if type(msg.data_json) == "string" then return msg.data_json end
    return json_encode(data)
  end
  local v = dig(data, field)
  local t = type(v)
  if v == nil or v == null then return conf.missing end
  if t == "string" then return (gsub(v, "%c", " ")) end
  if t == "number" then return number_text(v) end
  if t == "boolean" then return tostring(v) end
  return json_encode(v)
end

function _M.format(msg, audience, conf)
  local text, err = payload(msg, conf)
  if not text then
    log("warn", "format_pos_legacy: cannot encode data of", tostring(msg.channel), tostring(msg.seq), err)
    return nil
  end
  local seq = msg.seq
  if type(seq) == "number" then seq = number_text(seq) end
  local line = concat({ conf.tag, tostring(msg.channel), tostring(seq), tostring(msg.id), text }, "|")
  if conf.ascii then line = gsub(line, "[\128-\255]", "?") end
  return line .. conf.line_end
end

return _M
