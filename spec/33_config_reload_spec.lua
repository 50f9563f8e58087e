-- Integration: config reload on SIGHUP (the whole config again, or nothing;
-- listeners and connections stay). Each test starts its own server, rewrites
-- its config file, sends SIGHUP and waits (bounded) for the log line.
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local routes = require "helpers.routes"
local util = require "helpers.util"

local ROOT = server.ROOT
local FIXTURES = ROOT .. "/spec/fixtures/plugins"
local PLUGIN_PATH = { FIXTURES, ROOT .. "/plugins" }

local RELOADED = "config reloaded"
local REFUSED = "config reload refused"

local cjson = client.json

local copy, count = util.copy, util.count
-- config and plugin files are replaced whole (temp file + rename)
local writefile, readfile = util.replace_file, util.read_file

-- The overrides for server.start; `tokens` for /ws, `extra_routes` go first.
local function overrides(opts)
  opts = opts or {}
  local list = {}
  for _, r in ipairs(opts.extra_routes or {}) do list[#list + 1] = copy(r) end
  local more = {
    { path = "/ev", type = "websocket", plugins = { routes.device_auth(), { name = "events" } } },
    { path = "/ws", type = "websocket", plugins = { routes.device_auth(opts.tokens) } },
    { path = "/publish", type = "publish", plugins = { routes.publisher_auth() } },
    { path = "/health", type = "health" },
  }
  for _, r in ipairs(more) do list[#list + 1] = r end
  return {
    plugin_path = copy(opts.plugin_path or PLUGIN_PATH),
    limits = { max_batch = opts.max_batch or 3 },
    routes = list,
  }
end

describe("moonpush config reload (SIGHUP)", function()
  local srv
  local open = session.tracker()

  local function ws(q) return open:ws(srv, q) end

  -- Writes `text` as the config file, sends SIGHUP, waits for `expect`
  -- (RELOADED or REFUSED) and returns that log line.
  local function reload_with_text(text, expect)
    local before = count(srv:log(), expect)
    local other = expect == RELOADED and REFUSED or RELOADED
    local before_other = count(srv:log(), other)
    writefile(srv.cfgfile, text)
    assert.is_true(srv:signal("HUP"))
    local line = srv:wait_log(expect, before)
    assert.equals(before_other, count(srv:log(), other), "unexpected " .. other .. ":\n" .. srv:log_tail(5))
    return line
  end

  -- a full config (defaults + overrides) on the running server's address
  local function reload_with(over, expect)
    local cfg = server.merge(server.default_config(), over)
    cfg.listen = srv.config.listen
    return reload_with_text("return " .. server.serialize(cfg) .. "\n", expect or RELOADED)
  end

  local function handshake(opts) return client.handshake(srv, opts) end

  before_each(function()
    srv = server.start(overrides())
  end)

  after_each(function()
    open:close_all()
    local s = srv
    srv = nil
    session.stop(s)
  end)

  it("adds a route and a token that work after the reload, without dropping open connections", function()
    local ch = client.unique("keep-")
    local old_ws = ws({ path = "/ws", token = "bob", device = client.unique("old-"), channels = { ch } })
    local old_ev = ws({ path = "/ev", token = "bob", device = client.unique("oldev-"), channels = { ch } })
    assert.equals(401, handshake({ path = "/ws", token = "erin" }).status)
    assert.equals(404, handshake({ path = "/extra", token = "dave" }).status)

    local tokens = copy(server.TOKENS)
    tokens.erin = { user = "erin", kind = "web", channels = { "*" } }
    local line = reload_with(overrides({
      tokens = tokens,
      -- inserted first: every old route moves to another index
      extra_routes = { { path = "/extra", type = "websocket", plugins = {
        { name = "auth_token", config = { tokens = { dave = { user = "dave", channels = { "*" } } } } },
        { name = "counting_format" } } } },
    }))
    assert.matches("+route /extra", line, 1, true)

    -- new route and new token
    local dave = ws({ path = "/extra", token = "dave", device = client.unique("dave-"), channels = { ch } })
    assert.equals("dave", dave.welcome.user)
    local erin = ws({ path = "/ws", token = "erin", device = client.unique("erin-"), channels = { ch } })
    assert.equals("erin", erin.welcome.user)

    -- the connections from before are still open and still receive
    local ans = client.publish_ok(srv, { channel = ch, data = "after reload" })
    assert.equals(4, ans.recipients)
    assert.equals("after reload", client.recv_message(old_ws).data)
    assert.equals("after reload", client.recv_message(old_ev).data)
    assert.equals("after reload", client.recv_message(erin).data)
    assert.matches("^FMT|/extra|", client.recv_text(dave))
    -- ... and keep their own route's chain (the events plugin of /ev)
    local r = client.request(old_ev, { type = "echo" })
    assert.equals("echo", r.type, cjson.encode(r))
    assert.equals("/ev", r.conn.route)
    r = client.request(old_ws, { type = "echo" })
    assert.equals("error", r.type)
    assert.equals("unknown_type", r.code)
  end)

  it("applies a revoked token to new handshakes only", function()
    local ch = client.unique("revoke-")
    local old = ws({ path = "/ws", token = "bob", device = client.unique("old-"), channels = { ch } })
    local tokens = copy(server.TOKENS)
    tokens.bob = nil
    reload_with(overrides({ tokens = tokens }))
    assert.equals(401, handshake({ path = "/ws", token = "bob" }).status)
    client.publish_ok(srv, { channel = ch, data = "still yours" })
    assert.equals("still yours", client.recv_message(old).data)
  end)

  it("applies a changed limits.max_batch after the reload", function()
    local ch = client.unique("batch-")
    local function batch(n)
      local b = {}
      for i = 1, n do b[i] = { channel = ch, data = i } end
      return b
    end
    local st, body = client.publish(srv, batch(4))
    assert.equals(400, st)
    assert.equals("batch_too_large", body and body.error)
    local line = reload_with(overrides({ max_batch = 10 }))
    assert.matches("limits.max_batch 3->10", line, 1, true)
    local st2, body2, _, raw = client.publish(srv, batch(4))
    assert.equals(200, st2, raw)
    assert.equals(4, #body2)
    reload_with(overrides({ max_batch = 2 }))
    st, body = client.publish(srv, batch(3))
    assert.equals(400, st)
    assert.equals("batch_too_large", body and body.error)
  end)

  it("removes a route: its path answers 404 after the reload", function()
    reload_with(overrides({ extra_routes = { { path = "/extra", type = "health" } } }))
    assert.equals(200, (client.http(srv, "/extra")))
    local line = reload_with(overrides())
    assert.matches("-route /extra", line, 1, true)
    local st, body = client.http(srv, "/extra")
    assert.equals(404, st)
    assert.equals("not_found", body and body.error)
  end)

  describe("refuses an invalid config and keeps the running one", function()
    local ch, old

    -- the old routes still serve, the open connection still receives
    local function assert_old_config_serves()
      assert.is_true(srv:alive())
      client.assert_serves(srv)
      local first = client.publish_ok(srv, { channel = ch, data = "old config" })
      assert.equals("old config", client.recv_message(old).data)
      local w = ws({ path = "/ev", token = "alice-phone", device = client.unique("ev-") })
      assert.equals("echo", client.request(w, { type = "echo" }).type)
      local st, body = client.publish(srv, { { channel = ch, data = 1 }, { channel = ch, data = 2 },
                                              { channel = ch, data = 3 }, { channel = ch, data = 4 } })
      assert.equals(400, st)   -- the old max_batch (3) still holds
      assert.equals("batch_too_large", body and body.error)
      -- nothing of the refused batch was published: the next message follows "old config"
      client.publish_ok(srv, { channel = ch, data = "next" })
      local m = client.recv_message(old)
      assert.equals("next", m.data)
      assert.equals(first.seq + 1, m.seq)
    end

    before_each(function()
      ch = client.unique("old-")
      old = ws({ path = "/ws", token = "bob", device = client.unique("old-"), channels = { ch } })
    end)

    it("with a syntax error", function()
      local text = readfile(srv.cfgfile):gsub("^", "this is not lua\n")
      local line = reload_with_text(text, REFUSED)
      assert.matches(srv.cfgfile, line, 1, true)
      assert_old_config_serves()
    end)

    it("with an unknown route type", function()
      local o = overrides({ max_batch = 50, extra_routes = { { path = "/odd", type = "carrier-pigeon" } } })
      local line = reload_with(o, REFUSED)
      assert.matches("carrier-pigeon", line, 1, true)
      assert_old_config_serves()
      assert.equals(404, (client.http(srv, "/odd")))
    end)

    it("with a missing plugin", function()
      local o = overrides({ max_batch = 50, extra_routes = { { path = "/odd", type = "websocket",
        plugins = { { name = "auth_token", config = { tokens = { x = { user = "x" } } } }, { name = "no_such_plugin" } } } } })
      local line = reload_with(o, REFUSED)
      assert.matches("no_such_plugin", line, 1, true)
      assert_old_config_serves()
    end)

    it("with a plugin config its validate() rejects", function()
      local o = overrides({ max_batch = 50, extra_routes = { { path = "/odd", type = "websocket",
        plugins = { { name = "ratelimit", config = { per_ip = { rate = 0, burst = 1 } } },
                    { name = "auth_token", config = { tokens = { x = { user = "x" } } } } } } } })
      local line = reload_with(o, REFUSED)
      assert.matches("ratelimit", line, 1, true)
      assert_old_config_serves()
    end)

    it("with a bad limit value", function()
      local o = overrides()
      o.limits.max_batch = -1
      local line = reload_with(o, REFUSED)
      assert.matches("max_batch", line, 1, true)
      assert_old_config_serves()
    end)
  end)

  it("keeps watching plugin files after a config reload", function()
    local dir = util.mkdtemp("moonpush-plugins")
    local file = dir .. "/switch_auth.lua"
    local template = readfile(FIXTURES .. "/switch_auth.lua")
    writefile(file, template)
    local with_switch = overrides({
      plugin_path = { dir, FIXTURES, ROOT .. "/plugins" },
      extra_routes = { { path = "/sw", type = "websocket", plugins = { { name = "switch_auth" } } } },
    })
    local ok, err = pcall(function()
      reload_with(with_switch)
      assert.equals(403, handshake({ path = "/sw", token = "later" }).status)
      reload_with(with_switch)   -- a second reload rebuilds the watches again
      local before = count(srv:log(), "plugin reloaded")
      local a, b = template:find('local MODE = "deny"', 1, true)
      writefile(file, template:sub(1, a - 1) .. 'local MODE = "allow"' .. template:sub(b + 1))
      srv:wait_log("plugin reloaded", before)
      assert.equals(101, handshake({ path = "/sw", token = "later" }).status)
    end)
    util.rm_rf(dir)
    assert(ok, err)
  end)
end)
