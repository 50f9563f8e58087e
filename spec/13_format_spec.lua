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

  it("writes the protocol's message frame, fields in order", function()
    assert.equal('{"type":"message","channel":"news","seq":7,"id":"5f3a9c1e-2a","data":{"title":"hello"}}',
      plugin.format(msg(), AUDIENCE, {}))
  end)

  it("writes any JSON value as data", function()
    for _, case in ipairs({
      { "x", '"x"' }, { 12.5, "12.5" }, { true, "true" }, { json.null, "null" }, { { 1, 2 }, "[1,2]" },
    }) do
      local out = plugin.format(msg({ data = case[1] }), AUDIENCE, {})
      assert.equal('{"type":"message","channel":"news","seq":7,"id":"5f3a9c1e-2a","data":' .. case[2] .. "}", out)
    end
  end)

  it("splices msg.data_json in as it is when the core provides it", function()
    local out = plugin.format(msg({ data_json = '{"z":1,"a":2}' }), AUDIENCE, {})
    assert.equal('{"type":"message","channel":"news","seq":7,"id":"5f3a9c1e-2a","data":{"z":1,"a":2}}', out)
  end)

  it("writes big seq numbers as exact integers", function()
    local out = plugin.format(msg({ seq = 2 ^ 40 + 1 }), AUDIENCE, {})
    assert.matches('"seq":1099511627777,', out, 1, true)
    out = plugin.format(msg({ seq = "18446744073709551615" }), AUDIENCE, {})
    assert.matches('"seq":18446744073709551615,', out, 1, true)
  end)

  it("escapes strings into valid JSON", function()
    local data = { text = 'quote " backslash \\ newline \n tab \t bell \7 é' }
    local out = plugin.format(msg({ id = 'a"b', data = data }), AUDIENCE, {})
    local back = json.decode(out)
    assert.same(data, back.data)
    assert.equal('a"b', back.id)
  end)

  it("renames and omits fields and sets the type value", function()
    local conf = { type = "push", fields = { type = "t", channel = "ch", seq = false, id = "msg_id", data = "payload" } }
    assert.is_true(plugin.validate(conf))
    assert.equal('{"t":"push","ch":"news","msg_id":"5f3a9c1e-2a","payload":{"title":"hello"}}',
      plugin.format(msg(), AUDIENCE, conf))
  end)

  it("writes a type value and field names with % in them as they are", function()
    local conf = { type = "100%", fields = { channel = "%s", id = "%d%%" } }
    assert.is_true(plugin.validate(conf))
    assert.equal('{"type":"100%","%s":"news","seq":7,"%d%%":"5f3a9c1e-2a","data":{"title":"hello"}}',
      plugin.format(msg(), AUDIENCE, conf))
  end)

  it("leaves out an omitted seq whatever its value", function()
    local conf = { fields = { seq = false } }
    for _, seq in ipairs({ 7, "12", 1.5, print }) do
      assert.equal('{"type":"message","channel":"news","id":"5f3a9c1e-2a","data":{"title":"hello"}}',
        plugin.format(msg({ seq = seq }), AUDIENCE, conf))
    end
  end)

  it("can leave only data", function()
    local conf = { fields = { type = false, channel = false, seq = false, id = false } }
    assert.equal('{"data":{"title":"hello"}}', plugin.format(msg(), AUDIENCE, conf))
  end)

  it("may give a field a name freed by an omitted one", function()
    local conf = { fields = { id = false, seq = "id" } }
    assert.is_true(plugin.validate(conf))
    assert.equal('{"type":"message","channel":"news","id":7,"data":{"title":"hello"}}', plugin.format(msg(), AUDIENCE, conf))
  end)

  it("logs and returns nil (the core's envelope) for data it cannot encode", function()
    local p, lines = load_with_log("plugins/format_json.lua")
    local out = p.format(msg({ data = { f = print } }), AUDIENCE, {})
    assert.is_nil(out)
    assert.equal(1, #lines)
    assert.matches("^warn format_json: cannot encode data of news 7", lines[1])
  end)

  describe("validate", function()
    it("accepts an empty config", function()
      assert.is_true(plugin.validate({}))
    end)

    it("refuses an unknown key", function() refuses(plugin, { feilds = {} }) end)
    it("refuses an empty type", function() refuses(plugin, { type = "" }) end)
    it("refuses fields that are not a table", function() refuses(plugin, { fields = "x" }) end)
    it("refuses a field that is not standard", function() refuses(plugin, { fields = { user = "u" } }) end)
    it("refuses a rename to an empty name", function() refuses(plugin, { fields = { id = "" } }) end)
    it("refuses true as a rename", function() refuses(plugin, { fields = { id = true } }) end)
    it("refuses two fields with one name", function() refuses(plugin, { fields = { seq = "id" } }) end)
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

  local function order(extra)
    return msg({ channel = "orders:17", seq = 42, data = extra or { text = "Order 17 paid" } })
  end

  it("writes MSG|channel|seq|id|data as compact JSON by default", function()
    assert.equal('MSG|orders:17|42|5f3a9c1e-2a|{"text":"Order 17 paid"}', plugin.format(order(), AUDIENCE, {}))
  end)

  it("uses msg.data_json for the whole data when the core provides it", function()
    local m = order()
    m.data_json = '{"z":1,"a":2}'
    assert.equal('MSG|orders:17|42|5f3a9c1e-2a|{"z":1,"a":2}', plugin.format(m, AUDIENCE, {}))
  end)

  it("writes one field of data as text", function()
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|Order 17 paid", plugin.format(order(), AUDIENCE, { field = "text" }))
  end)

  it("writes numbers, booleans and objects of the field as text", function()
    local conf = { field = "v" }
    for _, case in ipairs({
      { 12, "12" }, { 12.5, "12.5" }, { 2 ^ 40, "1099511627776" }, { false, "false" },
      { { a = 1 }, '{"a":1}' }, { { 1, 2 }, "[1,2]" },
    }) do
      assert.equal("MSG|orders:17|42|5f3a9c1e-2a|" .. case[2], plugin.format(order({ v = case[1] }), AUDIENCE, conf))
    end
  end)

  it("digs a dotted field out of nested objects", function()
    local data = { receipt = { total = { text = "12.50 EUR" } } }
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|12.50 EUR",
      plugin.format(order(data), AUDIENCE, { field = "receipt.total.text" }))
  end)

  it("writes `missing` when the field is absent, null, or data is not an object", function()
    local conf = { field = "text", missing = "-" }
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|-", plugin.format(order({ other = 1 }), AUDIENCE, conf))
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|-", plugin.format(order({ text = json.null }), AUDIENCE, conf))
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|-", plugin.format(msg({ channel = "orders:17", seq = 42, data = "x" }), AUDIENCE, conf))
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|", plugin.format(order({}), AUDIENCE, { field = "text" }))
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|-", plugin.format(order({ a = 5 }), AUDIENCE, { field = "a.b", missing = "-" }))
  end)

  it("keeps the line one line: control characters become spaces", function()
    local out = plugin.format(order({ text = "line1\r\nline2\tend\0" }), AUDIENCE, { field = "text" })
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|line1  line2 end ", out)
    out = plugin.format(order({ text = "a\nb" }), AUDIENCE, {})
    assert.is_nil(out:find("[\r\n]"))
  end)

  it("leaves a | in the payload, which is the rest of the line", function()
    local out = plugin.format(order({ text = "a|b|c" }), AUDIENCE, { field = "text" })
    local tag, channel, seq, id, payload = out:match("^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$")
    assert.same({ "MSG", "orders:17", "42", "5f3a9c1e-2a", "a|b|c" }, { tag, channel, seq, id, payload })
  end)

  it("replaces bytes outside ASCII with ? when ascii is set", function()
    local data = { text = "Caf\195\169 \226\130\172" }   -- "Café €"
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|Caf?? ???", plugin.format(order(data), AUDIENCE, { field = "text", ascii = true }))
    assert.equal("MSG|orders:17|42|5f3a9c1e-2a|Caf\195\169 \226\130\172", plugin.format(order(data), AUDIENCE, { field = "text" }))
  end)

  it("uses the configured tag and line end", function()
    assert.equal("PUSH|orders:17|42|5f3a9c1e-2a|Order 17 paid\r\n",
      plugin.format(order(), AUDIENCE, { tag = "PUSH", field = "text", line_end = "\r\n" }))
  end)

  it("logs and returns nil (the core's envelope) for data it cannot encode", function()
    local p, lines = load_with_log("plugins/format_pos_legacy.lua")
    assert.is_nil(p.format(order({ f = print }), AUDIENCE, {}))
    assert.matches("^warn format_pos_legacy: cannot encode", lines[1])
  end)

  describe("validate", function()
    it("accepts an empty config and every documented option", function()
      assert.is_true(plugin.validate({}))
      assert.is_true(plugin.validate({ tag = "MSG", field = "a.b", missing = "-", ascii = true, line_end = "\n" }))
    end)

    for _, case in ipairs({
      { "an unknown key", { feild = "text" } },
      { "a tag with a separator", { tag = "M|G" } },
      { "an empty tag", { tag = "" } },
      { "an empty field", { field = "" } },
      { "a field path starting with a dot", { field = ".a" } },
      { "a field path ending with a dot", { field = "a." } },
      { "a field path with an empty step", { field = "a..b" } },
      { "a missing text with a newline", { missing = "a\nb" } },
      { "a non-boolean ascii", { ascii = "yes" } },
      { "a bare CR line end", { line_end = "\r" } },
    }) do
      it("refuses " .. case[1], function() refuses(plugin, case[2]) end)
    end
  end)

  it("loads through the server's plugin loader", function()
    local p = unit.load_through_server("plugins/format_pos_legacy.lua", "format_pos_legacy")
    assert.is_function(p.format)
  end)
end)
