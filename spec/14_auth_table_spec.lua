-- Unit spec for examples/plugins/auth_table.lua (no server): tokens from a
-- Lua file, re-read when it changes, at most once per reload_interval.
-- The clock (moonpush.now), io.open and lfs.attributes are observed through
-- stubs installed before the plugin is loaded.

local moonpush = require "moonpush"
local unit = require "helpers.plugin_unit"

local PLUGIN = "examples/plugins/auth_table.lua"

local TOKENS = [[
return {
  ["till-1"] = { user = "store-12", device = "till-1", kind = "pos", channels = { "store:12", "prices" } },
  ["erp"]    = { name = "erp", channels = { "store:*" } },
}
]]

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function req(token, route_type)
  return unit.auth_request(token, { path = "/ws/pos", route = "/ws/pos", route_type = route_type })
end

local assert_unauthorized = unit.assert_unauthorized

describe("auth_table", function()
  local plugin, file, clock, opens, stats, logs
  local real_now, real_open, real_log, lfs, real_attributes

  -- Loads the plugin with a controllable clock and counted I/O.
  local function load()
    real_now, real_open, real_log = moonpush.now, io.open, moonpush.log
    moonpush.now = function() return clock end
    moonpush.log = function(level, ...) logs[#logs + 1] = level .. " " .. table.concat({ ... }, " ") end
    io.open = function(...) opens = opens + 1 return real_open(...) end
    local ok, p = pcall(dofile, PLUGIN)
    moonpush.now, io.open, moonpush.log = real_now, real_open, real_log
    assert(ok, p)
    return p
  end

  before_each(function()
    clock, opens, stats, logs = 1e12, 0, 0, {}
    local ok, l = pcall(require, "lfs")
    lfs = ok and l or nil
    if lfs then
      real_attributes = lfs.attributes
      lfs.attributes = function(...) stats = stats + 1 return real_attributes(...) end
    end
    file = os.tmpname()
    write(file, TOKENS)
    plugin = load()
  end)

  after_each(function()
    if lfs then lfs.attributes = real_attributes end
    os.remove(file)
  end)

  local function conf(extra)
    local c = { file = file }
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
  end

  describe("validate", function()
    it("loads a good file", function()
      assert.is_true(plugin.validate(conf({ reload_interval = 1 })))
    end)

    -- through the server's loader: the schema, then validate
    local function refuses(c, pattern)
      local err = unit.refuses(plugin, c)
      assert.matches(pattern, err)
      return err
    end

    it("refuses a config without file", function()
      refuses({}, 'option "file" is required %(the path of a Lua file')
    end)
    it("refuses a non-string file", function() refuses({ file = 3 }, 'option "file" must be the path of a Lua file') end)
    it("refuses an unknown key", function() refuses(conf({ path = "x" }), 'unknown option "path"') end)
    it("refuses a tiny or non-numeric reload_interval", function()
      refuses(conf({ reload_interval = 0 }), 'option "reload_interval" must be a number of seconds >= 0.1')
      refuses(conf({ reload_interval = "5" }), 'option "reload_interval" must be')
    end)
    it("refuses a file that does not exist", function() refuses({ file = file .. "-missing" }, "No such file") end)

    for _, case in ipairs({
      { "a syntax error", "return {", "expected" },
      { "a file that does not return a table", "return 42", "must return a table" },
      { "a non-string token", "return { [1] = { user = 'a' } }", "non%-empty strings" },
      { "an identity that is not a table", "return { t = 'alice' }", "must be a table" },
      { "an identity with neither user nor name", "return { t = { channels = {} } }", "exactly one of user" },
      { "an identity with both user and name", "return { t = { user = 'a', name = 'b' } }", "exactly one of user" },
      { "channels that are not a list", "return { t = { user = 'a', channels = 'news' } }", "channels must be a list" },
      { "a non-string channel", "return { t = { user = 'a', channels = { 1 } } }", "channels must be strings" },
      { "a non-string device", "return { t = { user = 'a', device = 7 } }", "device must be a string" },
      { "an identity with an unknown key", "return { t = { usr = 'a', name = 'b' } }", "unknown key usr" },
      { "code that reaches for globals", "os.exit(1) return {}", "os" },
      { "code that raises", "return { t = { user = 'a' .. nil } }", "concatenate" },
    }) do
      it("refuses a file with " .. case[1], function()
        write(file, case[2])
        refuses(conf(), case[3])
      end)
    end

    it("names the file but never a whole token in its message", function()
      write(file, "return { ['very-secret-token'] = { channels = {} } }")
      local _, err = plugin.validate(conf())
      assert.matches(file, err, 1, true)
      assert.is_nil(err:find("very-secret-token", 1, true))
    end)
  end)

  describe("auth", function()
    before_each(function()
      assert.is_true(plugin.validate(conf()))
    end)

    it("maps a device token to its identity", function()
      local id, err = plugin.auth(req("till-1"), conf())
      assert.is_nil(err)
      assert.same({ role = "device", user = "store-12", device = "till-1", kind = "pos", channels = { "store:12", "prices" } }, id)
    end)

    it("hands out copies the caller may change", function()
      local id = plugin.auth(req("till-1"), conf())
      id.user, id.channels[1] = "mallory", "*"
      assert.same({ "store:12", "prices" }, plugin.auth(req("till-1"), conf()).channels)
      assert.equal("store-12", plugin.auth(req("till-1"), conf()).user)
    end)

    it("maps a publisher token on a publish route", function()
      assert.same({ role = "publisher", name = "erp", channels = { "store:*" } }, plugin.auth(req("erp", "publish"), conf()))
      -- history and presence routes take publishers too
      assert.same({ role = "publisher", name = "erp", channels = { "store:*" } }, plugin.auth(req("erp", "history"), conf()))
    end)

    it("refuses a publisher token on a device route and a device token on a publish route", function()
      assert_unauthorized("unknown token", plugin.auth(req("erp"), conf()))
      assert_unauthorized("unknown token", plugin.auth(req("till-1", "publish"), conf()))
    end)

    it("refuses an unknown or missing token", function()
      assert_unauthorized("unknown token", plugin.auth(req("nope"), conf()))
      assert_unauthorized("missing token", plugin.auth(req(nil), conf()))
      assert_unauthorized("missing token", plugin.auth(req(""), conf()))
    end)
  end)

  describe("reloading", function()
    local c
    local NEW = 'return { ["till-2"] = { user = "store-12", device = "till-2", kind = "pos" } }'

    before_each(function()
      c = conf({ reload_interval = 5 })
      assert.is_true(plugin.validate(c))
      opens, stats = 0, 0
    end)

    it("does no I/O between checks", function()
      for _ = 1, 100 do
        clock = clock + 10   -- 1 s in all, under the 5 s interval
        assert.is_table((plugin.auth(req("till-1"), c)))
      end
      assert.equal(0, opens)
      assert.equal(0, stats)
    end)

    it("looks at the file once per interval when it has not changed", function()
      clock = clock + 5000
      for _ = 1, 10 do plugin.auth(req("till-1"), c) end
      assert.equal(1, opens + stats)
    end)

    it("sees a new table only after the interval", function()
      write(file, NEW)
      clock = clock + 4000
      assert.is_table((plugin.auth(req("till-1"), c)))
      assert_unauthorized("unknown token", plugin.auth(req("till-2"), c))
      clock = clock + 1000
      assert.same({ role = "device", user = "store-12", device = "till-2", kind = "pos" }, plugin.auth(req("till-2"), c))
      assert_unauthorized("unknown token", plugin.auth(req("till-1"), c))   -- revoked
      assert.matches("^info auth_table: loaded", logs[#logs])
    end)

    it("keeps the last good table when the file breaks, and takes the fixed one", function()
      write(file, "return { broken = ")
      clock = clock + 5000
      assert.is_table((plugin.auth(req("till-1"), c)))
      assert.matches("^warn auth_table: not reloading", logs[#logs])
      local n = #logs
      clock = clock + 5000
      plugin.auth(req("till-1"), c)
      assert.equal(n, #logs)    -- the same broken file is not re-parsed and re-logged
      write(file, NEW)
      clock = clock + 5000
      assert.is_table((plugin.auth(req("till-2"), c)))
    end)

    it("keeps the last good table when the file disappears", function()
      os.remove(file)
      clock = clock + 5000
      assert.is_table((plugin.auth(req("till-1"), c)))
      assert.matches("^warn auth_table: cannot check", logs[#logs])
    end)

    it("keeps a table per file", function()
      local other = os.tmpname()
      write(other, NEW)
      local c2 = { file = other }
      assert.is_true(plugin.validate(c2))
      assert.is_table((plugin.auth(req("till-2"), c2)))
      assert_unauthorized("unknown token", plugin.auth(req("till-2"), c))
      os.remove(other)
    end)
  end)

  describe("without LuaFileSystem", function()
    local saved_preload, saved_loaded

    before_each(function()
      saved_preload, saved_loaded = package.preload.lfs, package.loaded.lfs
      package.loaded.lfs = nil
      package.preload.lfs = function() error("no lfs here") end
      plugin = load()
      package.preload.lfs, package.loaded.lfs = saved_preload, saved_loaded
    end)

    it("notices a same-size rewrite by comparing contents", function()
      local c = conf({ reload_interval = 1 })
      assert.is_true(plugin.validate(c))
      write(file, (TOKENS:gsub("till%-1", "till-9")))   -- same length, same second
      clock = clock + 1000
      assert.is_table((plugin.auth(req("till-9"), c)))
      assert_unauthorized("unknown token", plugin.auth(req("till-1"), c))
    end)

    it("reads the file once per interval, not per request", function()
      local c = conf({ reload_interval = 1 })
      assert.is_true(plugin.validate(c))
      opens = 0
      for _ = 1, 50 do plugin.auth(req("till-1"), c) end
      assert.equal(0, opens)
    end)
  end)

  it("loads through the server's plugin loader", function()
    local p = unit.load_through_server(PLUGIN, "auth_table", "examples/plugins")
    assert.is_function(p.auth)
  end)
end)
