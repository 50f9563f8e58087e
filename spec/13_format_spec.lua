-- Unit spec for plugins/format_json.lua and plugins/format_pos_legacy.lua
-- (no server).

local moonpush = require "moonpush"
local unit = require "helpers.plugin_unit"
local json = moonpush.json

local AUDIENCE = { route = "/ws" }

local function msg(extra)
  local m = { channel = "news", seq = 7, id = "5f3a9c1e-2a", data = { title = "hello" } }
  for k, v in pairs(extra or {}) do m[k] = v end
  return m
end

-- Loads a plugin with moonpush.log replaced by a recorder.
local function load_with_log(file)
  local lines, real = {}, moonpush.log
  moonpush.log = function(level, ...)
    lines[#lines + 1] = level .. " " .. table.concat({ ... }, " ")
  end
  local ok, p = pcall(dofile, file)
  moonpush.log = real
  assert(ok, p)
  return p, lines
end

local refuses = unit.refuses

describe("format_json", function()
  local plugin

  before_each(function()
    plugin = dofile("plugins/format_json.lua")
  end)

  -- The hook with the config the loader makes of conf (defaults filled in).
  local function fmt(m, conf) return plugin.format(m, AUDIENCE, unit.config(plugin, conf)) end

  it("writes the protocol's message frame, fields in order", function()
    assert.equal('{"type":"message","channel":"news","seq":7,"id":"5f3a9c1e-2a","data":{"title":"hello"}}',
      fmt(msg(), {}))
  end)

  it("writes any JSON value as data", function()
    for _, case in ipairs({
      { "x", '"x"' }, { 12.5, "12.5" }, { true, "true" }, { json.null, "null" }, { { 1, 2 }, "[1,2]" },
    }) do
      local out = fmt(msg({ data = case[1] }), {})
      assert.equal('{"type":"message","channel":"news","seq":7,"id":"5f3a9c1e-2a","data":' .. case[2] .. "}", out)
    end
  end)

  it("splices msg.data_json in as it is when the core provides it", function()
    local out = fmt(msg({ data_json = '{"z":1,"a":2}' }), {})
    assert.equal('{"type":"message","channel":"news","seq":7,"id":"5f3a9c1e-2a","data":{"z":1,"a":2}}', out)
  end)

  it("writes big seq numbers as exact integers", function()
    local out = fmt(msg({ seq = 2 ^ 40 + 1 }), {})
    assert.matches('"seq":1099511627777,', out, 1, true)
    out = fmt(msg({ seq = "18446744073709551615" }), {})
    assert.matches('"seq":18446744073709551615,', out, 1, true)
  end)

  it("escapes strings into valid JSON", function()
    local data = { text = 'quote " backslash \\ newline \n tab \t bell \7 é' }
    local out = fmt(msg({ id = 'a"b', data = data }), {})
    local back = json.decode(out)
    assert.same(data, back.data)
    assert.equal('a"b', back.id)
  end)

  it("renames and omits fields and sets the type value", function()
    local conf = { type = "push", fields = { type = "t", channel = "ch", seq = false, id = "msg_id", data = "payload" } }
    unit.accepts(plugin, conf)
    assert.equal('{"t":"push","ch":"news","msg_id":"5f3a9c1e-2a","payload":{"title":"hello"}}',
      fmt(msg(), conf))
  end)

  it("writes a type value and field names with % in them as they are", function()
    local conf = { type = "100%", fields = { channel = "%s", id = "%d%%" } }
    unit.accepts(plugin, conf)
    assert.equal('{"type":"100%","%s":"news","seq":7,"%d%%":"5f3a9c1e-2a","data":{"title":"hello"}}',
      fmt(msg(), conf))
  end)

  it("leaves out an omitted seq whatever its value", function()
    local conf = { fields = { seq = false } }
    for _, seq in ipairs({ 7, "12", 1.5, print }) do
      assert.equal('{"type":"message","channel":"news","id":"5f3a9c1e-2a","data":{"title":"hello"}}',
        fmt(msg({ seq = seq }), conf))
    end
  end)

  it("can leave only data", function()
    local conf = { fields = { type = false, channel = false, seq = false, id = false } }
    assert.equal('{"data":{"title":"hello"}}', fmt(msg(), conf))
  end)

  it("may give a field a name freed by an omitted one", function()
    local conf = { fields = { id = false, seq = "id" } }
    unit.accepts(plugin, conf)
    assert.equal('{"type":"message","channel":"news","id":7,"data":{"title":"hello"}}', fmt(msg(), conf))
  end)

  it("logs and returns nil (the core's envelope) for data it cannot encode", function()
    local p, lines = load_with_log("plugins/format_json.lua")
    local out = p.format(msg({ data = { f = print } }), AUDIENCE, unit.config(p, {}))
    assert.is_nil(out)
    assert.equal(1, #lines)
    assert.matches("^warn format_json: cannot encode data of news 7", lines[1])
  end)

  describe("its options", function()
    it("accept an empty config and fill in the defaults", function()
      assert.same({ type = "message", fields = {} }, unit.accepts(plugin, {}))
    end)

    for _, case in ipairs({
      { "an unknown key", { feilds = {} }, 'unknown option "feilds" (did you mean "fields"?)' },
      { "an empty type", { type = "" }, 'option "type" must be a non-empty string, got ""' },
      { "fields that are not a table", { fields = "x" }, 'option "fields" must be a table, got "x"' },
      { "a field that is not standard", { fields = { user = "u" } },
        'unknown option "fields.user" (known: channel, data, id, seq, type)' },
      { "a rename to an empty name", { fields = { id = "" } }, 'option "fields.id" must be a new name or false, got ""' },
      { "true as a rename", { fields = { id = true } }, 'option "fields.id" must be a new name or false, got true' },
      { "two fields with one name", { fields = { seq = "id" } }, "fields: two fields named id" },
    }) do
      it("refuse " .. case[1], function() refuses(plugin, case[2], case[3]) end)
    end
  end)

  it("loads through the server's plugin loader", function()
    local p = unit.load_through_server("plugins/format_json.lua", "format_json")
    assert.is_function(p.format)
  end)
end)

describe("format_pos_legacy", function()
  local plugin

  before_each(function()
    plugin = dofile("plugins/format_pos_legacy.lua")
  end)

  local function fmt(m, conf) return plugin.format(m, AUDIENCE, unit.config(plugin, conf)) end

  local function order(extra)
    return msg({ channel = "orders:17", seq = 42, data = extra or { text = "Order 17 paid" } })
  end

  it("writes MSG|channel|seq|id|data as compact JSON by default", function()
    assert.equal('MSG|orders:17|42|5f3a9c1e-2a|{"text":"Order 17 paid"}', fmt(order(), {}))
  end)

  it("uses msg.data_json for the whole data when the core provides it", function()
    local m = order()
    m.data_json = '{"z":1,"a":2}'
    assert.equal('MSG|orders:17|42|5f3a9c1e-2a|{"z":1,"a":2}', fmt(m, {}))
  end)

  it("writes one field of data as text", function()
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|Order 17 paid", fmt(order(), { field = "text" }))
  end)

  it("writes numbers, booleans and objects of the field as text", function()
    local conf = { field = "v" }
    for _, case in ipairs({
      { 12, "12" }, { 12.5, "12.5" }, { 2 ^ 40, "1099511627776" }, { false, "false" },
      { { a = 1 }, '{"a":1}' }, { { 1, 2 }, "[1,2]" },
    }) do
      assert.equal("MSG|orders:17|42|5f3a9c1e-2a|" .. case[2], fmt(order({ v = case[1] }), conf))
    end
  end)

  it("digs a dotted field out of nested objects", function()
    local data = { receipt = { total = { text = "12.50 EUR" } } }
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|12.50 EUR",
      fmt(order(data), { field = "receipt.total.text" }))
  end)

  it("writes `missing` when the field is absent, null, or data is not an object", function()
    local conf = { field = "text", missing = "-" }
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|-", fmt(order({ other = 1 }), conf))
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|-", fmt(order({ text = json.null }), conf))
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|-", fmt(msg({ channel = "orders:17", seq = 42, data = "x" }), conf))
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|", fmt(order({}), { field = "text" }))
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|-", fmt(order({ a = 5 }), { field = "a.b", missing = "-" }))
  end)

  it("keeps the line one line: control characters become spaces", function()
    local out = fmt(order({ text = "line1\r\nline2\tend\0" }), { field = "text" })
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|line1  line2 end ", out)
    out = fmt(order({ text = "a\nb" }), {})
    assert.is_nil(out:find("[\r\n]"))
  end)

  it("leaves a | in the payload, which is the rest of the line", function()
    local out = fmt(order({ text = "a|b|c" }), { field = "text" })
    local tag, channel, seq, id, payload = out:match("^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$")
    assert.same({ "MSG", "orders:17", "42", "5f3a9c1e-2a", "a|b|c" }, { tag, channel, seq, id, payload })
  end)

  it("replaces bytes outside ASCII with ? when ascii is set", function()
    local data = { text = "Caf\195\169 \226\130\172" }   -- "Café €"
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|Caf?? ???", fmt(order(data), { field = "text", ascii = true }))
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|Caf\195\169 \226\130\172", fmt(order(data), { field = "text" }))
  end)

  it("uses the configured tag and line end", function()
    assert.equal("PUSH|orders:17|42|5f3a9c1e-2a|Order 17 paid\r\n",
      fmt(order(), { tag = "PUSH", field = "text", line_end = "\r\n" }))
  end)

  it("logs and returns nil (the core's envelope) for data it cannot encode", function()
    local p, lines = load_with_log("plugins/format_pos_legacy.lua")
    assert.is_nil(p.format(order({ f = print }), AUDIENCE, unit.config(p, {})))
    assert.matches("^warn format_pos_legacy: cannot encode", lines[1])
  end)

  describe("its options", function()
    it("accept an empty config and every documented option", function()
      assert.same({ tag = "MSG", missing = "", ascii = false, line_end = "" }, unit.accepts(plugin, {}))
      unit.accepts(plugin, { tag = "MSG", field = "a.b", missing = "-", ascii = true, line_end = "\n" })
    end)

    for _, case in ipairs({
      { "an unknown key", { feild = "text" }, 'unknown option "feild" (did you mean "field"?)' },
      { "a tag with a separator", { tag = "M|G" }, 'option "tag" must be a word of letters, digits, _ and -, got "M|G"' },
      { "an empty tag", { tag = "" }, 'option "tag" must be a word' },
      { "an empty field", { field = "" }, 'option "field" must be a field name or a dotted path (a.b), got ""' },
      { "a field path starting with a dot", { field = ".a" }, 'option "field" must be a field name' },
      { "a field path ending with a dot", { field = "a." }, 'option "field" must be a field name' },
      { "a field path with an empty step", { field = "a..b" }, 'option "field" must be a field name' },
      { "a missing text with a newline", { missing = "a\nb" },
        'option "missing" must be a string without control characters, got "a\\nb"' },
      { "a non-boolean ascii", { ascii = "yes" }, 'option "ascii" must be true or false, got "yes"' },
      { "a bare CR line end", { line_end = "\r" }, 'option "line_end" must be one of "", "\\n", "\\r\\n", got "\\r"' },
    }) do
      it("refuse " .. case[1], function() refuses(plugin, case[2], case[3]) end)
    end
  end)

  it("loads through the server's plugin loader", function()
    local p = unit.load_through_server("plugins/format_pos_legacy.lua", "format_pos_legacy")
    assert.is_function(p.format)
  end)
end)
