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

  it("is what the bundled plugins answer with", function()
    local ratelimit = dofile("plugins/ratelimit.lua")
    local ok, err = ratelimit.validate({ per_ip = { rat = 1, rate = 1, burst = 1 } })
    assert.is_nil(ok)
    assert.equal("per_ip: unknown key rat", err)
    ok, err = ratelimit.validate({ per_ip = { rate = 1, burst = 1 }, colour = "red" })
    assert.is_nil(ok)
    assert.equal("unknown key colour", err)
  end)
end)
