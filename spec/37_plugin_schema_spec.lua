-- Plugin options declared in a `schema` (lua/moonpush/schema.lua, checked
-- by the loader before a plugin's validate; docs/plugins.md "Options:
-- schema"), and the traceback a raising hook leaves in the log
-- (docs/plugins.md "Errors are isolated").
--
-- First the checker itself, rule by rule (no server); then the loader;
-- then a real server: --check-config messages, defaults reaching hooks, hot
-- reloads against the schema, and tracebacks in the log.
local schema = require "moonpush.schema"
local plugins = require "moonpush.plugins"
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local util = require "helpers.util"

local ROOT = server.ROOT
local FIXTURES = ROOT .. "/spec/fixtures/plugins"

-- apply(s, conf) must succeed; returns the filled copy
local function ok(s, conf)
  local out, err = schema.apply(s, conf)
  assert.is_nil(err)
  assert.is_table(out)
  return out
end

-- apply(s, conf) must fail with exactly `message` (or a message holding
-- `part` when plain = true)
local function refused(s, conf, message, plain)
  local out, err = schema.apply(s, conf)
  assert.is_nil(out)
  assert.is_string(err)
  if plain then assert.matches(message, err, 1, true) else assert.equal(message, err) end
end

local function bad_schema(s, part)
  local good, err = schema.check_schema(s)
  assert.is_nil(good)
  assert.matches(part, err, 1, true)
end

describe("moonpush.schema", function()
  describe("types", function()
    it("takes a type name as a whole spec", function()
      assert.same({ a = "x" }, ok({ a = "string" }, { a = "x" }))
      refused({ a = "string" }, { a = 1 }, 'option "a" must be a string, got 1')
    end)

    for _, case in ipairs({
      { "string", "x", 1, 'option "v" must be a string, got 1' },
      { "number", 1.5, "1", 'option "v" must be a number, got "1"' },
      { "boolean", false, "false", 'option "v" must be true or false, got "false"' },
      { "table", { k = 1 }, "t", 'option "v" must be a table, got "t"' },
      { "list", { 1, 2 }, { a = 1 }, 'option "v" must be a list of values, got a table' },
      { "function", print, true, 'option "v" must be a function, got true' },
    }) do
      it("checks " .. case[1], function()
        local s = { v = { type = case[1] } }
        local got = ok(s, { v = case[2] }).v
        if type(case[2]) == "table" then assert.same(case[2], got) else assert.equal(case[2], got) end
        refused(s, { v = case[3] }, case[4])
      end)
    end

    it("takes either of a list of types", function()
      local s = { v = { type = { "string", "list" }, of = "string" } }
      assert.equal("a", ok(s, { v = "a" }).v)
      assert.same({ "a", "b" }, ok(s, { v = { "a", "b" } }).v)
      refused(s, { v = 3 }, 'option "v" must be a string or a list of strings, got 3')
    end)

    it("refuses numbers that are not finite", function()
      local s = { v = "number" }
      refused(s, { v = 0 / 0 }, 'option "v" must be a number, got nan')
      refused(s, { v = math.huge }, 'option "v" must be a number, got inf')
    end)

    it("sees a list with holes or other keys as no list", function()
      local s = { v = { type = "list" } }
      refused(s, { v = { 1, nil, 3 } }, 'option "v" must be a list of values, got a table')
      refused(s, { v = { 1, x = 2 } }, 'option "v" must be a list of values, got a table')
      assert.same({}, ok(s, { v = {} }).v)
    end)
  end)

  describe("required and default", function()
    it("refuses a missing required option, saying what it must be", function()
      refused({ v = { type = "number", required = true, min = 1 } }, {}, 'option "v" is required (a number >= 1)')
    end)

    it("leaves an absent optional option out", function()
      assert.same({}, ok({ v = "string" }, {}))
    end)

    it("fills in a default, a copy of it for a table, and never changes the operator's table", function()
      local default = { "a" }
      local s = { v = { type = "list", of = "string", default = default }, n = { type = "number", default = 3 } }
      local conf = {}
      local out = ok(s, conf)
      assert.same({ v = { "a" }, n = 3 }, out)
      assert.are_not.equal(default, out.v)
      assert.same({}, conf)
      assert.are_not.equal(conf, out)
    end)

    it("keeps a false given for a boolean with a true default", function()
      assert.is_false(ok({ v = { type = "boolean", default = true } }, { v = false }).v)
    end)
  end)

  describe("values", function()
    it("checks allowed values", function()
      local s = { v = { type = "string", allowed = { "a", "b" } } }
      assert.equal("b", ok(s, { v = "b" }).v)
      refused(s, { v = "c" }, 'option "v" must be one of "a", "b", got "c"')
    end)

    it("checks allowed values of each item of a list", function()
      local s = { v = { type = "list", allowed = { "x", "y" } } }
      assert.same({ "y", "x" }, ok(s, { v = { "y", "x" } }).v)
      refused(s, { v = { "x", "z" } }, 'option "v[2]" must be one of "x", "y", got "z"')
    end)

    it("checks min, max, above and integer", function()
      local s = { v = { type = "number", min = 0, max = 3600, integer = true } }
      assert.equal(0, ok(s, { v = 0 }).v)
      assert.equal(3600, ok(s, { v = 3600 }).v)
      refused(s, { v = -1 }, 'option "v" must be an integer between 0 and 3600, got -1')
      refused(s, { v = 3601 }, 'option "v" must be an integer between 0 and 3600, got 3601')
      refused(s, { v = 1.5 }, 'option "v" must be an integer between 0 and 3600, got 1.5')
      refused(s, { v = "5" }, 'option "v" must be an integer between 0 and 3600, got "5"')
      local above = { v = { type = "number", above = 0 } }
      assert.equal(0.001, ok(above, { v = 0.001 }).v)
      refused(above, { v = 0 }, 'option "v" must be a number > 0, got 0')
      refused({ v = { type = "number", max = 2 } }, { v = 3 }, 'option "v" must be a number <= 2, got 3')
    end)

    it("checks the length of strings (bytes) and lists (items)", function()
      local s = { v = { type = "string", min_len = 2, max_len = 3 } }
      assert.equal("abc", ok(s, { v = "abc" }).v)
      refused(s, { v = "a" }, 'option "v" must be a string of 2-3 bytes, got "a"')
      refused(s, { v = "abcd" }, 'option "v" must be a string of 2-3 bytes, got "abcd"')
      refused({ v = { type = "string", min_len = 1 } }, { v = "" }, 'option "v" must be a non-empty string, got ""')
      local l = { v = { type = "list", of = "number", max_len = 1 } }
      refused(l, { v = { 1, 2 } }, 'option "v" must be a list of at most 1 items of numbers, got a table')
      refused({ v = { type = "list", min_len = 1 } }, { v = {} }, 'option "v" must be a non-empty list of values, got a table')
    end)

    it("checks a pattern", function()
      local s = { v = { type = "string", pattern = "^%a+$" } }
      assert.equal("abc", ok(s, { v = "abc" }).v)
      refused(s, { v = "a1" }, 'option "v" must be a string matching ^%a+$, got "a1"')
    end)

    it("runs check(v), whose second answer says what v must be", function()
      local s = { v = { type = "number", check = function(v) return v % 2 == 0, "an even number" end } }
      assert.equal(4, ok(s, { v = 4 }).v)
      refused(s, { v = 3 }, 'option "v" must be an even number, got 3')
    end)

    it("says what a hint says instead of the generated text", function()
      refused({ v = { type = "string", hint = "a colour" } }, { v = 1 }, 'option "v" must be a colour, got 1')
    end)

    it("never shows a secret value, only its length", function()
      refused({ v = { type = "string", min_len = 32, secret = true } }, { v = "hunter2" },
              'option "v" must be a string of at least 32 bytes, got a string of 7 bytes')
    end)

    it("writes control characters in a value as escapes and cuts long values", function()
      refused({ v = { type = "string", allowed = { "a" } } }, { v = "x\ny" }, 'got "x\\ny"', true)
      refused({ v = "number" }, { v = string.rep("z", 50) }, 'got "' .. string.rep("z", 40) .. '"...', true)
    end)
  end)

  describe("nested options", function()
    local S = {
      limit = { type = "table", default = {}, fields = {
        rate = { type = "number", default = 1 },
        burst = { type = "number", required = false, min = 1 },
      } },
      need = { type = "table", fields = { x = { type = "string", required = true } } },
      book = { type = "table", keys = { type = "string", min_len = 1 }, secret_keys = true,
               values = { type = "table", fields = { user = { type = "string", required = true } } } },
      names = { type = "table", values = "number" },
      items = { type = "list", of = { type = "string", min_len = 1 } },
    }

    it("fills the defaults of a record's fields", function()
      assert.same({ limit = { rate = 1 } }, ok(S, {}))
      assert.same({ limit = { rate = 1, burst = 2 } }, ok(S, { limit = { burst = 2 } }))
    end)

    it("names a record's field by its dotted path", function()
      refused(S, { limit = { burst = 0 } }, 'option "limit.burst" must be a number >= 1, got 0')
      refused(S, { need = {} }, 'option "need.x" is required (a string)')
      refused(S, { limit = { rat = 2 } }, 'unknown option "limit.rat" (did you mean "limit.rate"?)')
    end)

    it("checks a map's keys and values, hiding secret keys", function()
      assert.same({ ["t-1"] = { user = "a" } }, ok(S, { book = { ["t-1"] = { user = "a" } } }).book)
      refused(S, { book = { ["sekrit"] = { usr = "a" } } }, 'unknown option "book[...].usr" (did you mean "book[...].user"?)')
      refused(S, { book = { [""] = { user = "a" } } },
              'option "book": every key must be a non-empty string, got a string of 0 bytes')
      refused(S, { names = { ["a b"] = "x", ok = 1 } }, 'option "names[\\"a b\\"]" must be a number, got "x"')
      refused(S, { names = { abc = "x" } }, 'option "names.abc" must be a number, got "x"')
    end)

    it("names a list's item by its index", function()
      refused(S, { items = { "a", "" } }, 'option "items[2]" must be a non-empty string, got ""')
    end)
  end)

  describe("unknown options", function()
    local S = { leeway = "number", secret = "string", claims = "table" }

    it("suggests the nearest known name", function()
      refused(S, { leway = 1 }, 'unknown option "leway" (did you mean "leeway"?)')
      refused(S, { secrte = "x" }, 'unknown option "secrte" (did you mean "secret"?)')
    end)

    it("lists the known names when none is near", function()
      refused(S, { colour = 1 }, 'unknown option "colour" (known: claims, leeway, secret)')
      refused(S, { "x" }, "unknown option 1 (known: claims, leeway, secret)")
    end)
  end)

  describe("a broken schema", function()
    it("is one that is not a table of option = spec", function()
      bad_schema("string", "the schema must be a table")
      bad_schema({ [1] = "string" }, "option names must be non-empty strings")
      bad_schema({ a = 3 }, 'option "a": a spec must be a type name or a table')
    end)

    for _, case in ipairs({
      { "an unknown type", { type = "strnig" }, 'unknown type "strnig"' },
      { "no type", { required = true }, "type must be a type name" },
      { "an unknown spec key", { type = "string", requird = true }, 'unknown spec key "requird"' },
      { "required and default", { type = "string", required = true, default = "a" }, "required and default exclude" },
      { "a default that fails its spec", { type = "number", min = 1, default = 0 }, "the default does not pass" },
      { "min on a string", { type = "string", min = 1 }, "min applies to numbers only" },
      { "min above max", { type = "number", min = 2, max = 1 }, "min is above max" },
      { "a bad pattern", { type = "string", pattern = "[" }, "pattern:" },
      { "a negative min_len", { type = "string", min_len = -1 }, "min_len must be a whole number" },
      { "an empty allowed", { type = "string", allowed = {} }, "allowed must be a non-empty list" },
      { "a check that is no function", { type = "string", check = true }, "check must be a function" },
      { "fields on a string", { type = "string", fields = {} }, "fields applies to tables only" },
      { "fields and values together", { type = "table", fields = {}, values = "string" }, "not both" },
      { "of on a table", { type = "table", of = "string" }, "of applies to lists only" },
      { "a broken nested spec", { type = "table", fields = { x = { type = "nope" } } }, 'option "v.x": unknown type "nope"' },
      { "a broken item spec", { type = "list", of = { type = "string", max = 1 } }, 'option "v[*]": max applies' },
    }) do
      it("has " .. case[1], function() bad_schema({ v = case[2] }, case[3]) end)
    end
  end)
end)

describe("the plugin loader with a schema", function()
  local function plugin(extra)
    local p = { name = "p", schema = { level = { type = "string", allowed = { "a", "b" }, default = "a" } } }
    for k, v in pairs(extra or {}) do p[k] = v end
    return p
  end

  it("checks the schema before validate, and validate gets the filled copy", function()
    local seen
    local p = plugin({ validate = function(conf) seen = conf return true end })
    local raw = {}
    local conf = plugins.check_config(p, raw)
    assert.same({ level = "a" }, conf)
    assert.equal(conf, seen)
    assert.same({}, raw)
    local called = false
    p.validate = function() called = true return true end
    local bad, err = plugins.check_config(p, { level = "c" })
    assert.is_nil(bad)
    assert.equal('option "level" must be one of "a", "b", got "c"', err)
    assert.is_false(called)
  end)

  it("reports validate's reason, or that it raised", function()
    assert.same({ nil, "no" }, { plugins.check_config(plugin({ validate = function() return nil, "no" end }), {}) })
    local _, err = plugins.check_config(plugin({ validate = function() error("oops") end }), {})
    assert.matches("validate raised: .*oops", err)
  end)

  it("hands a plugin without a schema the operator's table as it is", function()
    local raw = { anything = 1 }
    assert.equal(raw, plugins.check_config({ name = "free" }, raw))
  end)

  it("refuses a plugin file whose schema is broken, naming the plugin", function()
    local p, err = plugins.load_path(FIXTURES .. "/bad_schema.lua", "bad_schema")
    assert.is_nil(p)
    assert.matches("plugin bad_schema has a bad schema: option \"level\": unknown spec key \"requird\"", err, 1, true)
  end)

  it("names the route and the plugin in a config error, and its place when it comes twice", function()
    local dirs = { ROOT .. "/plugins" }
    local _, err = plugins.load_chain({ { name = "ratelimit", config = { per_ip = { rate = 0, burst = 1 } } } },
                                      dirs, "routes[1]", "/ws")
    assert.equal('route /ws: plugin ratelimit: option "per_ip.rate" must be a number of events per second > 0, got 0', err)
    _, err = plugins.load_chain({ { name = "ratelimit", config = { per_ip = { rate = 1, burst = 1 } } },
                                  { name = "ratelimit", config = { per_ip = { rate = 1, burst = 0 } } } },
                                dirs, "routes[1]", "/ws")
    assert.equal('route /ws: plugin ratelimit (plugins[2]): option "per_ip.burst" must be a number >= 1, got 0', err)
  end)
end)

describe("moonpush with plugin schemas", function()
  it("--check-config names the route, the plugin and the option of a bad value", function()
    local out, rc = server.check_config(function(cfg)
      cfg.routes[#cfg.routes + 1] = { path = "/jwt", type = "websocket", plugins = {
        { name = "auth_jwt", config = { secret = string.rep("k", 32), leeway = "5" } } } }
    end)
    assert.equal(1, rc)
    assert.matches('route /jwt: plugin auth_jwt: option \\"leeway\\" must be a number >= 0, got \\"5\\"', out, 1, true)
  end)

  it("--check-config refuses a plugin whose schema is broken, naming it", function()
    local out, rc = server.check_config(function(cfg)
      cfg.plugin_path = { FIXTURES, ROOT .. "/plugins" }
      cfg.routes[#cfg.routes + 1] = { path = "/bad", type = "websocket", plugins = { { name = "bad_schema" } } }
    end)
    assert.equal(1, rc)
    assert.matches("plugin bad_schema has a bad schema", out, 1, true)
  end)
end)

describe("moonpush plugin schema at run time", function()
  local srv, dir, file
  local open = session.tracker()
  local TEMPLATE = util.read_file(FIXTURES .. "/schema_auth.lua")

  local function variant(from, to)
    local a, b = TEMPLATE:find(from, 1, true)
    assert(a, "template lacks " .. from)
    return TEMPLATE:sub(1, a - 1) .. to .. TEMPLATE:sub(b + 1)
  end

  before_each(function()
    dir = util.mkdtemp("moonpush-plugins")
    file = dir .. "/schema_auth.lua"
    util.write_file(file, TEMPLATE)
    srv = server.start({
      plugin_path = { dir, FIXTURES, ROOT .. "/plugins" },
      plugin_budget = 100000,
      routes = {
        { path = "/sch", type = "websocket", plugins = { { name = "schema_auth", config = { channels = { "news" } } } } },
        { path = "/nb", type = "websocket", plugins = { { name = "nested_boom" } } },
        { path = "/loop", type = "websocket", plugins = { { name = "loop_auth" } } },
        { path = "/health", type = "health" },
      },
    })
  end)

  after_each(function()
    open:close_all()
    local s = srv
    srv = nil
    session.stop_and_remove(s, dir)
  end)

  local function user_of(token)
    local w = open:ws(srv, { path = "/sch", token = token, device = client.unique("sch-") })
    return w.welcome.user
  end

  it("hands the hooks the config with the schema's defaults filled in", function()
    assert.equal("sd-tok", user_of("tok"))
  end)

  it("refuses a new version whose schema refuses the route's config, naming route, plugin and option", function()
    local before = srv:log_count("plugin reload refused")
    util.replace_file(file, variant("channels = { type", "rooms = { type"))
    local line = srv:wait_log("plugin reload refused", before)
    assert.matches('route /sch: plugin schema_auth: unknown option \\"channels\\"', line, 1, true)
    assert.equal("sd-tok", user_of("tok"))
  end)

  it("fills the config anew from the schema of a new version", function()
    local before = srv:log_count("plugin reloaded")
    util.replace_file(file, variant('default = "sd-"', 'default = "new-"'))
    srv:wait_log("plugin reloaded", before)
    assert.equal("new-tok", user_of("tok"))
  end)

  it("logs a raising hook's traceback, with the functions it passed, and never shows it to the client", function()
    local resp = client.handshake(srv, { path = "/nb", token = "boom", device = client.unique("nb-") })
    assert.equals(500, resp.status)
    assert.same({ error = "plugin_error", message = "plugin nested_boom failed" }, resp.json)
    assert.is_nil(resp.body:find("traceback", 1, true))
    assert.is_nil(resp.body:find("SECRET-NESTED", 1, true))
    local line = util.lines_with(srv:log(), "SECRET-NESTED-7")[1]
    assert.is_string(line)
    assert.matches("stack traceback", line, 1, true)
    assert.matches("in function 'deepest_helper'", line, 1, true)
    assert.matches("in function 'middle_helper'", line, 1, true)
    -- cut at the plugin's frames: the core's own are the same every time
    assert.is_nil(line:find("core.lua", 1, true))
  end)

  it("logs the traceback of a raising event hook too", function()
    local w = open:ws(srv, { path = "/nb", token = "connect", device = client.unique("nb-") })
    assert.equal("nb-connect", w.welcome.user)
    local line = srv:wait_log("nested_boom failed in on_connect", 0)
    assert.matches("stack traceback", line, 1, true)
    assert.matches("in function 'deepest_helper'", line, 1, true)
  end)

  it("still aborts a looping hook at its budget and logs it plainly", function()
    local before = srv:log_count("instruction budget exceeded")
    local resp = client.handshake(srv, { path = "/loop", token = "x", device = client.unique("lp-") }, 3)
    assert.equals(500, resp.status)
    assert.equals("plugin loop_auth ran past its instruction budget", resp.json and resp.json.message)
    srv:wait_log("instruction budget exceeded", before)
    assert.is_nil(srv:log():find("error in error handling", 1, true))
    assert.equals(200, (client.http(srv, "/health")))
  end)
end)
