-- Unit spec for plugins/route_default.lua (no server).

local moonpush = require "moonpush"
local unit = require "helpers.plugin_unit"

local PLUGIN = "plugins/route_default.lua"

local function msg(extra)
  local m = { channel = "orders:17", data = { order = 17, status = "paid" }, store = true }
  for k, v in pairs(extra or {}) do m[k] = v end
  return m
end

local function ctx(publisher)
  return { route = "/publish", publisher = publisher or "billing", remote_addr = "10.0.0.1:4000" }
end

local assert_denied = unit.assert_denied

describe("route_default", function()
  local plugin

  before_each(function()
    plugin = dofile(PLUGIN)
  end)

  describe("its options", function()
    it("accept an empty config and every documented option", function()
      assert.same({}, unit.accepts(plugin, {}))
      local all = { require_fields = { "order" }, max_data_bytes = 100, prefix = "{publisher}:", kinds = { "pos", "web" } }
      assert.same(all, unit.accepts(plugin, all))
    end)

    local bad = {
      { "an unknown key", { max_bytes = 10 }, 'unknown option "max_bytes" (known: kinds, max_data_bytes, prefix, require_fields)' },
      { "an empty require_fields", { require_fields = {} },
        'option "require_fields" must be a non-empty list of non-empty strings, got a table' },
      { "require_fields with a non-string", { require_fields = { "a", 2 } },
        'option "require_fields[2]" must be a non-empty string, got 2' },
      { "require_fields as a string", { require_fields = "order" }, 'option "require_fields" must be a non-empty list' },
      { "a zero max_data_bytes", { max_data_bytes = 0 }, 'option "max_data_bytes" must be an integer >= 1, got 0' },
      { "a fractional max_data_bytes", { max_data_bytes = 1.5 }, 'option "max_data_bytes" must be an integer >= 1, got 1.5' },
      { "an empty prefix", { prefix = "" }, 'option "prefix" must be a non-empty string, got ""' },
      { "a prefix with characters channels cannot hold", { prefix = "a/b" },
        'option "prefix" must be channel characters (A-Z a-z 0-9 _ - . : @) and {publisher}, got "a/b"' },
      { "a prefix with a space", { prefix = "acme " }, 'option "prefix" must be channel characters' },
      { "a prefix as long as a channel", { prefix = string.rep("p", 128) },
        'option "prefix" must be shorter than a channel name may be (128 bytes)' },
      { "kinds that are not a list of strings", { kinds = { pos = true } }, 'option "kinds" must be a non-empty list' },
      { "an empty kinds list", { kinds = {} }, 'option "kinds" must be a non-empty list' },
    }
    for _, case in ipairs(bad) do
      it("refuse " .. case[1], function() unit.refuses(plugin, case[2], case[3]) end)
    end
  end)

  it("returns the message unchanged without config", function()
    local m = msg()
    local out, err = plugin.route(m, ctx(), {})
    assert.is_nil(err)
    assert.equal(m, out)
    assert.same(msg(), out)
  end)

  describe("require_fields", function()
    local conf = { require_fields = { "order", "status" } }

    it("passes data that has every field", function()
      assert.is_table((plugin.route(msg(), ctx(), conf)))
    end)

    it("rejects data without a field, naming it", function()
      assert_denied(400, "bad_message", "data%.status is required", plugin.route(msg({ data = { order = 1 } }), ctx(), conf))
    end)

    it("counts a JSON null as missing", function()
      local data = { order = 1, status = moonpush.json.null }
      assert_denied(400, "bad_message", "data%.status", plugin.route(msg({ data = data }), ctx(), conf))
    end)

    it("rejects data that is not an object", function()
      for _, data in ipairs({ "paid", 17, true, moonpush.json.null }) do
        assert_denied(400, "bad_message", "must be an object", plugin.route(msg({ data = data }), ctx(), conf))
      end
    end)

    it("counts false and empty strings as present", function()
      assert.is_table((plugin.route(msg({ data = { order = false, status = "" } }), ctx(), conf)))
    end)
  end)

  describe("max_data_bytes", function()
    it("passes data of exactly the limit", function()
      local data = { text = "xxxxx" }            -- {"text":"xxxxx"} = 16 bytes
      assert.equal(16, #moonpush.json.encode(data))
      assert.is_table((plugin.route(msg({ data = data }), ctx(), { max_data_bytes = 16 })))
    end)

    it("rejects data one byte over with 413 data_too_large", function()
      local data = { text = "xxxxxx" }
      assert_denied(413, "data_too_large", "17 bytes, at most 16", plugin.route(msg({ data = data }), ctx(), { max_data_bytes = 16 }))
    end)

    it("measures strings and numbers as JSON too", function()
      assert_denied(413, "data_too_large", "", plugin.route(msg({ data = string.rep("a", 20) }), ctx(), { max_data_bytes = 21 }))
      assert.is_table((plugin.route(msg({ data = 12345 }), ctx(), { max_data_bytes = 5 })))
    end)

    -- As the core hands it over: msg.data_json set, msg.data decoded on
    -- first read (here: a read fails the test).
    local function untouched(text)
      return setmetatable({ channel = "orders:17", data_json = text }, { __index = function(_, k)
        if k == "data" then error("route_default read msg.data") end
      end })
    end

    it("measures and checks msg.data_json without touching msg.data", function()
      local text = '{"order":17,"x":"12345"}'        -- 24 bytes as published
      local out = plugin.route(untouched(text), ctx(), { require_fields = { "order" }, max_data_bytes = 24 })
      assert.is_table(out)
      assert.equal(text, rawget(out, "data_json"))
      assert_denied(413, "data_too_large", "25 bytes, at most 24",
        plugin.route(untouched('{"order":17,"x":"123456"}'), ctx(), { max_data_bytes = 24 }))
      assert_denied(400, "bad_message", "data%.status",
        plugin.route(untouched(text), ctx(), { require_fields = { "order", "status" } }))
      assert_denied(400, "bad_message", "must be an object",
        plugin.route(untouched("12"), ctx(), { require_fields = { "order" } }))
    end)

    it("checks fields before size", function()
      local conf = { require_fields = { "x" }, max_data_bytes = 2 }
      assert_denied(400, "bad_message", "data%.x", plugin.route(msg(), ctx(), conf))
    end)
  end)

  describe("prefix", function()
    it("prepends to the channel", function()
      local out = plugin.route(msg(), ctx(), { prefix = "acme:" })
      assert.equal("acme:orders:17", out.channel)
    end)

    it("prepends to every channel of a fan-out", function()
      local out = plugin.route(msg({ channels = { "a", "b" } }), ctx(), { prefix = "acme:" })
      assert.same({ "acme:a", "acme:b" }, out.channels)
    end)

    it("puts the publisher's name in place of {publisher}", function()
      local out = plugin.route(msg(), ctx("erp"), { prefix = "{publisher}:" })
      assert.equal("erp:orders:17", out.channel)
    end)

    it("copes with % in a publisher name", function()
      local out = plugin.route(msg(), ctx("a%1"), { prefix = "{publisher}." })
      assert.equal("a%1.orders:17", out.channel)
    end)

    it("refuses a {publisher} prefix without a publisher name", function()
      local c = ctx() c.publisher = nil
      assert_denied(403, "forbidden", "publisher", plugin.route(msg(), c, { prefix = "{publisher}:" }))
    end)

    it("leaves personal user: channels alone", function()
      local out = plugin.route(msg({ channel = "user:alice", channels = { "user:bob", "x" } }), ctx(), { prefix = "acme:" })
      assert.equal("user:alice", out.channel)
      assert.same({ "user:bob", "acme:x" }, out.channels)
    end)

    it("rejects a channel that the prefix makes longer than 128 bytes", function()
      local long = string.rep("c", 125)
      assert_denied(400, "bad_channel", "too long", plugin.route(msg({ channel = long }), ctx(), { prefix = "acme:" }))
      assert_denied(400, "bad_channel", "too long", plugin.route(msg({ channels = { "a", long } }), ctx(), { prefix = "acme:" }))
    end)

    it("does nothing to a message with no channel", function()
      local out = plugin.route({ data = 1 }, ctx(), { prefix = "acme:" })
      assert.is_nil(out.channel)
    end)
  end)

  describe("kinds", function()
    it("restricts delivery to the configured kinds with a copy of the list", function()
      local conf = { kinds = { "pos" } }
      local out = plugin.route(msg(), ctx(), conf)
      assert.same({ "pos" }, out.kinds)
      out.kinds[2] = "web"
      assert.same({ "pos" }, conf.kinds)
    end)

    it("intersects with kinds already set on the message", function()
      local out = plugin.route(msg({ kinds = { "web", "pos", "mobile" } }), ctx(), { kinds = { "pos", "mobile" } })
      assert.same({ "pos", "mobile" }, out.kinds)
    end)
  end)

  it("loads through the server's plugin loader", function()
    local p = unit.load_through_server(PLUGIN, "route_default")
    assert.is_function(p.route)
  end)
end)
