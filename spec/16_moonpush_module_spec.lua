-- Unit specs for helpers of the `moonpush` module that are pure Lua.

local moonpush = require "moonpush"

describe("moonpush.unknown_key", function()
  it("is nil when every key is known, including an empty table", function()
    assert.is_nil(moonpush.unknown_key({ a = 1, b = false }, { a = true, b = true, c = true }))
    assert.is_nil(moonpush.unknown_key({}, { a = true }))
  end)

  it("names a key the set lacks", function()
    assert.equal("unknown key feild", moonpush.unknown_key({ feild = 1 }, { field = true }))
  end)

  it("names non-string keys too", function()
    assert.equal("unknown key 1", moonpush.unknown_key({ "x" }, { x = true }))
  end)

  it("is what a plugin without a schema may use in its validate", function()
    local plugin = { validate = function(conf)
      local bad = moonpush.unknown_key(conf, { level = true })
      if bad then return nil, bad end
      return true
    end }
    local ok, err = require("moonpush.plugins").check_config(plugin, { levle = 1 })
    assert.is_nil(ok)
    assert.equal("unknown key levle", err)
  end)
end)
