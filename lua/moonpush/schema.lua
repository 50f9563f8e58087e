-- moonpush.schema: a plugin's declared options (its `schema` table) and the
-- check of a route's config against them, run by the loader before the
-- plugin's own `validate` (docs/plugins.md, "Options: schema").
--
-- A schema maps each option name to a spec: a type name ("string") or a
-- table of these keys:
--   type      "string" | "number" | "boolean" | "table" | "list" | "function",
--             or a list of them ({ "string", "list" }: either)
--   required  true: the option must be set
--   default   the value when the option is absent (a table is copied)
--   allowed   { v1, v2, ... }: the value is one of these (a list: each item)
--   min, max  numbers: inclusive bounds; above: an exclusive lower bound
--   integer   true: a whole number
--   min_len, max_len   strings: bytes; lists: items
--   pattern   strings: a Lua pattern the whole value must match (anchor it)
--   check     function(v) -> true, or nil and what v must be (for messages)
--   hint      what the value must be, in words: replaces the generated text
--   secret    true: a message never shows the value (only its length)
--   fields    tables: a record with exactly these keys, each a spec
--   keys, values   tables: a map whose keys / values follow these specs
--   secret_keys    true: a map's keys are secrets (shown as [...])
--   of        lists: the spec of every item
--
-- check_schema(schema) says whether a schema is well formed (a plugin with
-- a broken one is refused at load); apply(schema, conf) returns a checked
-- copy of conf with the defaults filled in, or nil and a message naming
-- the option: `option "leeway" must be a number >= 0, got "5"`. The
-- operator's table is never changed. Runs at load only, never per request.

local type, pairs, ipairs, tostring, pcall = type, pairs, ipairs, tostring, pcall
local format, find, gsub, match, sub = string.format, string.find, string.gsub, string.match, string.sub
local concat, sort = table.concat, table.sort
local floor, huge, min = math.floor, math.huge, math.min

local _M = {}

local TYPES = { string = true, number = true, boolean = true, table = true, list = true, ["function"] = true }
local TYPE_LIST = "string, number, boolean, table, list, function"
local SPEC_KEYS = { type = true, required = true, default = true, allowed = true, min = true, max = true,
                    above = true, integer = true, min_len = true, max_len = true, pattern = true,
                    check = true, hint = true, secret = true, fields = true, keys = true, values = true,
                    secret_keys = true, of = true }
local NOUNS = { string = "a string", number = "a number", boolean = "true or false", table = "a table",
                list = "a list", ["function"] = "a function" }
local PLURALS = { string = "strings", number = "numbers", boolean = "booleans", table = "tables",
                  list = "lists", ["function"] = "functions" }

-- ---- helpers --------------------------------------------------------------

-- A spec given as a bare type name is the spec { type = name }.
local function as_spec(s)
  if type(s) == "string" then return { type = s } end
  return s
end

local function types_of(spec)
  local t = spec.type
  if type(t) == "table" then return t end
  return { t }
end

local function has_type(spec, name)
  for _, t in ipairs(types_of(spec)) do
    if t == name then return true end
  end
  return false
end

local function is_list(v)
  local n, len = 0, #v
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > len or k ~= floor(k) then return false end
    n = n + 1
  end
  return n == len
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  return out
end

local function number_text(n)
  if n ~= n then return "nan" end
  if n == huge then return "inf" end
  if n == -huge then return "-inf" end
  return format("%.14g", n)
end

local ESCAPES = { ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t", ['"'] = '\\"', ["\\"] = "\\\\" }

-- A string as Lua source would write it, cut at 40 bytes.
local function quote(s)
  local cut = #s > 40
  if cut then s = sub(s, 1, 40) end
  s = gsub(s, '[%c"\\]', function(c) return ESCAPES[c] or format("\\%d", c:byte()) end)
  return '"' .. s .. '"' .. (cut and "..." or "")
end

-- A value as a message shows it.
local function shown(v, secret)
  local t = type(v)
  if t == "string" then
    if secret then return format("a string of %d bytes", #v) end
    return quote(v)
  end
  if secret then return NOUNS[t] or t end
  if t == "number" then return number_text(v) end
  if t == "boolean" or t == "nil" then return tostring(v) end
  return NOUNS[t] or ("a " .. t)
end

local function key_text(k)
  if type(k) == "string" then return quote(k) end
  return tostring(k)
end

-- The path of a record field, a list item and a map value.
local function field_path(path, name)
  if path == "" then return tostring(name) end
  return path .. "." .. tostring(name)
end

local function item_path(path, i) return format("%s[%d]", path, i) end

local function map_path(path, k, secret_keys)
  if secret_keys then return path .. "[...]" end
  if type(k) == "string" and match(k, "^[%a_][%w_]*$") then return path .. "." .. k end
  return path .. "[" .. key_text(k) .. "]"
end

-- ---- what a spec asks for, in words ----------------------------------------

local function allowed_text(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = type(v) == "string" and quote(v) or tostring(v) end
  return concat(out, ", ")
end

local function length_text(spec, unit)
  local lo, hi = spec.min_len, spec.max_len
  if lo and hi then
    if lo == hi then return format(" of %d %s", lo, unit) end
    return format(" of %d-%d %s", lo, hi, unit)
  end
  if lo and lo > 1 then return format(" of at least %d %s", lo, unit) end
  if hi then return format(" of at most %d %s", hi, unit) end
  return ""
end

local function nonempty(spec)
  return spec.min_len == 1 and not spec.max_len
end

local describe

local function plural(of)
  if of == nil then return "values" end
  of = as_spec(of)
  if of.hint then return "items that are " .. of.hint end
  local words = {}
  for i, t in ipairs(types_of(of)) do
    local w = PLURALS[t] or t
    if t == "number" and of.integer then w = "integers" end
    if (t == "string" or t == "list") and nonempty(of) then w = "non-empty " .. w end
    words[i] = w
  end
  local text = concat(words, " or ")
  if of.allowed then text = text .. " (" .. allowed_text(of.allowed) .. ")" end
  return text
end

local function describe_number(spec)
  local noun = spec.integer and "an integer" or "a number"
  if spec.min and spec.max then
    return format("%s between %s and %s", noun, number_text(spec.min), number_text(spec.max))
  end
  local bounds = {}
  if spec.above then bounds[#bounds + 1] = "> " .. number_text(spec.above) end
  if spec.min then bounds[#bounds + 1] = ">= " .. number_text(spec.min) end
  if spec.max then bounds[#bounds + 1] = "<= " .. number_text(spec.max) end
  if #bounds == 0 then return noun end
  return noun .. " " .. concat(bounds, " and ")
end

local function describe_type(spec, t)
  if t == "number" then return describe_number(spec) end
  if t == "string" then
    local text = (nonempty(spec) and "a non-empty string" or "a string") .. length_text(spec, "bytes")
    if spec.pattern then text = text .. " matching " .. spec.pattern end
    return text
  end
  if t == "list" then
    local text = (nonempty(spec) and "a non-empty list" or "a list") .. length_text(spec, "items")
    if spec.allowed then return text .. " of " .. allowed_text(spec.allowed) end
    return text .. " of " .. plural(spec.of)
  end
  return NOUNS[t] or t
end

function describe(spec)
  if spec.hint then return spec.hint end
  if spec.allowed and not has_type(spec, "list") then return "one of " .. allowed_text(spec.allowed) end
  local out = {}
  for i, t in ipairs(types_of(spec)) do out[i] = describe_type(spec, t) end
  return concat(out, " or ")
end

-- ---- checking a value ------------------------------------------------------

local function mismatch(spec, v, path, what)
  return false, format("option %q must be %s, got %s", path, what or describe(spec), shown(v, spec.secret))
end

-- Which of the spec's types v is, or nil.
local function kind_of(spec, v)
  local lt, table_ok = type(v), false
  for _, t in ipairs(types_of(spec)) do
    if t == lt and t ~= "table" then return t end
    if lt == "table" then
      if t == "list" and is_list(v) then return "list" end
      if t == "table" then table_ok = true end
    end
  end
  if table_ok then return "table" end
  return nil
end

local function in_list(list, v)
  for _, x in ipairs(list) do
    if x == v then return true end
  end
  return false
end

local check

local function check_number(spec, v, path)
  if v ~= v or v == huge or v == -huge then return mismatch(spec, v, path) end
  if spec.integer and v ~= floor(v) then return mismatch(spec, v, path) end
  if (spec.min and v < spec.min) or (spec.max and v > spec.max) or (spec.above and not (v > spec.above)) then
    return mismatch(spec, v, path)
  end
  return true, v
end

local function check_length(spec, n, v, path)
  if (spec.min_len and n < spec.min_len) or (spec.max_len and n > spec.max_len) then
    return mismatch(spec, v, path)
  end
  return true
end

local function check_list(spec, v, path)
  local ok, err = check_length(spec, #v, v, path)
  if not ok then return false, err end
  local of = as_spec(spec.of)
  if spec.allowed then
    local item = { allowed = spec.allowed }
    if of then for k, x in pairs(of) do item[k] = x end end
    if not item.type then item.type = { "string", "number", "boolean" } end
    of = item
  end
  local out = {}
  for i = 1, #v do
    if of then
      local good, x = check(of, v[i], item_path(path, i))
      if not good then return false, x end
      out[i] = x
    else
      out[i] = v[i]
    end
  end
  return true, out
end

-- An unknown key, with the nearest known name when one is a typo away.
local function distance(a, b)
  if #a > 40 or #b > 40 then return 99 end
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = sub(a, i, i) == sub(b, j, j) and 0 or 1
      cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function unknown(fields, k, path)
  local names = sorted_keys(fields)
  local best, best_d
  if type(k) == "string" then
    for _, name in ipairs(names) do
      local d = distance(k, name)
      if d <= (#k <= 4 and 1 or 2) and (not best_d or d < best_d) then best, best_d = name, d end
    end
  end
  local at
  if type(k) == "string" then at = format("%q", field_path(path, k))
  elseif path == "" then at = tostring(k)
  else at = format("%q", path .. "[" .. tostring(k) .. "]") end
  if best then
    return false, format("unknown option %s (did you mean %q?)", at, field_path(path, best))
  end
  local list = {}
  for i, name in ipairs(names) do list[i] = tostring(name) end
  return false, format("unknown option %s (known: %s)", at, concat(list, ", "))
end

local function check_record(fields, v, path)
  for _, k in ipairs(sorted_keys(v)) do
    if fields[k] == nil then return unknown(fields, k, path) end
  end
  local out = {}
  for _, name in ipairs(sorted_keys(fields)) do
    local ok, x = check(fields[name], v[name], field_path(path, name))
    if not ok then return false, x end
    out[name] = x
  end
  return true, out
end

local function check_map(spec, v, path)
  local keys, values = as_spec(spec.keys), as_spec(spec.values)
  local out = {}
  for _, k in ipairs(sorted_keys(v)) do
    if keys and not check(keys, k, path) then
      return false, format("option %q: every key must be %s, got %s", path, describe(keys),
                           shown(k, spec.secret_keys))
    end
    local x = v[k]
    if values then
      local ok
      ok, x = check(values, x, map_path(path, k, spec.secret_keys))
      if not ok then return false, x end
    end
    out[k] = x
  end
  return true, out
end

-- Returns true and the checked value (nil when absent and optional, a copy
-- of the default, or a copy of v with defaults filled below), or false and
-- a message.
function check(spec, v, path)
  spec = as_spec(spec)
  if v == nil then
    if spec.default ~= nil then v = copy(spec.default)
    elseif spec.required then return false, format("option %q is required (%s)", path, describe(spec))
    else return true, nil end
  end
  local kind = kind_of(spec, v)
  if not kind then return mismatch(spec, v, path) end
  local ok, out = true, v
  if kind == "number" then
    ok, out = check_number(spec, v, path)
  elseif kind == "string" then
    ok, out = check_length(spec, #v, v, path)
    if ok and spec.pattern and not find(v, spec.pattern) then ok, out = mismatch(spec, v, path) end
    if ok then out = v end
  elseif kind == "list" then
    ok, out = check_list(spec, v, path)
  elseif kind == "table" then
    if spec.fields then ok, out = check_record(spec.fields, v, path)
    elseif spec.keys or spec.values then ok, out = check_map(spec, v, path) end
  end
  if not ok then return false, out end
  if spec.allowed and kind ~= "list" and not in_list(spec.allowed, v) then return mismatch(spec, v, path) end
  if spec.check then
    local good, what = spec.check(out)
    if not good then return mismatch(spec, v, path, what and tostring(what)) end
  end
  return true, out
end

-- A checked copy of conf with the defaults of `schema` filled in, or nil
-- and a message.
function _M.apply(schema, conf)
  local ok, out = check_record(schema, conf, "")
  if not ok then return nil, out end
  return out
end

-- ---- checking a schema -----------------------------------------------------

local check_spec

local function bad(path, what) return nil, format("option %q: %s", path, what) end

local function is_count(v) return type(v) == "number" and v >= 0 and v == floor(v) end

local function check_fields(fields, path)
  if type(fields) ~= "table" then return nil, format("%s must be a table of option = spec", path == "" and "the schema" or "fields of " .. path) end
  for name, spec in pairs(fields) do
    if type(name) ~= "string" or name == "" then
      return nil, format("option names must be non-empty strings, got %s", shown(name))
    end
    local ok, err = check_spec(spec, field_path(path, name))
    if not ok then return nil, err end
  end
  return true
end

local function check_types(spec, path)
  local t = spec.type
  if type(t) == "string" then
    if not TYPES[t] then return bad(path, format("unknown type %q (%s)", t, TYPE_LIST)) end
    return true
  end
  if type(t) ~= "table" or #t == 0 then return bad(path, "type must be a type name or a list of them (" .. TYPE_LIST .. ")") end
  for _, x in ipairs(t) do
    if not TYPES[x] then return bad(path, format("unknown type %s (%s)", shown(x), TYPE_LIST)) end
  end
  return true
end

-- Each key of a spec: its own type, and only for the types it applies to.
local function check_spec_keys(spec, path)
  for k in pairs(spec) do
    if not SPEC_KEYS[k] then return bad(path, format("unknown spec key %s", key_text(k))) end
  end
  for _, k in ipairs({ "required", "integer", "secret", "secret_keys" }) do
    if spec[k] ~= nil and type(spec[k]) ~= "boolean" then return bad(path, k .. " must be true or false") end
  end
  for _, k in ipairs({ "min", "max", "above" }) do
    if spec[k] ~= nil then
      if type(spec[k]) ~= "number" or spec[k] ~= spec[k] then return bad(path, k .. " must be a number") end
      if not has_type(spec, "number") then return bad(path, k .. " applies to numbers only") end
    end
  end
  if spec.integer and not has_type(spec, "number") then return bad(path, "integer applies to numbers only") end
  for _, k in ipairs({ "min_len", "max_len" }) do
    if spec[k] ~= nil then
      if not is_count(spec[k]) then return bad(path, k .. " must be a whole number >= 0") end
      if not has_type(spec, "string") and not has_type(spec, "list") then
        return bad(path, k .. " applies to strings and lists only")
      end
    end
  end
  if spec.min and spec.max and spec.min > spec.max then return bad(path, "min is above max") end
  if spec.min_len and spec.max_len and spec.min_len > spec.max_len then return bad(path, "min_len is above max_len") end
  if spec.pattern ~= nil then
    if type(spec.pattern) ~= "string" then return bad(path, "pattern must be a string") end
    if not has_type(spec, "string") then return bad(path, "pattern applies to strings only") end
    local ok, err = pcall(find, "", spec.pattern)
    if not ok then return bad(path, "pattern: " .. tostring(err)) end
  end
  for _, k in ipairs({ "hint" }) do
    if spec[k] ~= nil and (type(spec[k]) ~= "string" or spec[k] == "") then return bad(path, k .. " must be a non-empty string") end
  end
  if spec.check ~= nil and type(spec.check) ~= "function" then return bad(path, "check must be a function") end
  if spec.allowed ~= nil and (type(spec.allowed) ~= "table" or #spec.allowed == 0 or not is_list(spec.allowed)) then
    return bad(path, "allowed must be a non-empty list of values")
  end
  return true
end

-- The nested specs: fields / keys / values for tables, of for lists.
local function check_nested(spec, path)
  if spec.fields ~= nil then
    if not has_type(spec, "table") then return bad(path, "fields applies to tables only") end
    if spec.keys ~= nil or spec.values ~= nil then return bad(path, "a table has fields (a record) or keys/values (a map), not both") end
    local ok, err = check_fields(spec.fields, path)
    if not ok then return nil, err end
  end
  for _, k in ipairs({ "keys", "values" }) do
    if spec[k] ~= nil then
      if not has_type(spec, "table") then return bad(path, k .. " applies to tables only") end
      local ok, err = check_spec(spec[k], k == "keys" and path .. " (keys)" or path .. "[*]")
      if not ok then return nil, err end
    end
  end
  if spec.secret_keys and spec.keys == nil and spec.values == nil then
    return bad(path, "secret_keys applies to maps (keys/values) only")
  end
  if spec.of ~= nil then
    if not has_type(spec, "list") then return bad(path, "of applies to lists only") end
    local ok, err = check_spec(spec.of, path .. "[*]")
    if not ok then return nil, err end
  end
  return true
end

function check_spec(spec, path)
  if type(spec) == "string" then spec = { type = spec } end
  if type(spec) ~= "table" then return bad(path, "a spec must be a type name or a table") end
  local ok, err = check_types(spec, path)
  if not ok then return nil, err end
  ok, err = check_spec_keys(spec, path)
  if not ok then return nil, err end
  ok, err = check_nested(spec, path)
  if not ok then return nil, err end
  if spec.default ~= nil then
    if spec.required then return bad(path, "required and default exclude each other") end
    local good, why = check(spec, spec.default, path)
    if not good then return bad(path, "the default does not pass its own spec: " .. why) end
  end
  return true
end

-- true, or nil and what is wrong with the schema.
function _M.check_schema(schema)
  return check_fields(schema, "")
end

return _M
