-- Integration: plugin errors are isolated (docs/plugins.md "Errors are
-- isolated", "Budget"): a hook that raises or loops fails its own request
-- only; the server keeps serving everybody else.
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local routes = require "helpers.routes"
local util = require "helpers.util"

local ROOT = server.ROOT
local PLUGIN_PATH = { ROOT .. "/spec/fixtures/plugins", ROOT .. "/plugins" }
local BUDGET = 100000
local SIDE = "side-channel"

local cjson = client.json

local ws_auth, pub_auth = routes.device_auth, routes.publisher_auth

local function all_routes()
  return {
    { path = "/boom", type = "websocket", plugins = { { name = "boom_auth" } } },
    { path = "/boom-publish", type = "publish", plugins = { { name = "boom_auth" } } },
    { path = "/loop", type = "websocket", plugins = { { name = "loop_auth" } } },
    { path = "/loop-publish", type = "publish", plugins = { { name = "loop_auth" } } },
    -- ~1M instructions of work: over the global budget, within the route's own
    { path = "/burn-global", type = "websocket", plugins = { { name = "burn_auth", config = { iterations = 200000 } } } },
    { path = "/burn-own", type = "websocket", budget = 20000000,
      plugins = { { name = "burn_auth", config = { iterations = 200000 } } } },
    { path = "/ev", type = "websocket", plugins = { ws_auth(), { name = "events" } } },
    { path = "/fmt-boom", type = "websocket", plugins = { ws_auth(), { name = "boom_format" } } },
    { path = "/fmt-pub", type = "websocket", plugins = { ws_auth(), { name = "publishing_format", config = { target = SIDE } } } },
    { path = "/conn-boom", type = "websocket", plugins = { ws_auth(), { name = "boom_connect" } } },
    { path = "/routed", type = "publish", plugins = { pub_auth(), { name = "router" } } },
    { path = "/ws", type = "websocket", plugins = { ws_auth() } },
    { path = "/publish", type = "publish", plugins = { pub_auth() } },
    { path = "/health", type = "health" },
  }
end

describe("moonpush plugin isolation", function()
  local srv
  local ws = session.shared_server(function()
    srv = server.start({ plugin_path = PLUGIN_PATH, plugin_budget = BUDGET, routes = all_routes() })
    return srv
  end)

  local function dev(path, token, extra)
    return ws(util.with({ path = path, token = token or "bob", device = client.unique("dev-") }, extra))
  end

  local function handshake(opts, timeout) return client.handshake(srv, opts, timeout) end

  -- /health answers 200 within `limit` seconds
  local function health_within(limit)
    local t0 = client.now()
    local st, body = client.http(srv, "/health", { timeout = limit + 1 })
    local dt = client.now() - t0
    assert.equals(200, st)
    assert.equals("ok", body and body.status)
    assert.is_true(dt < limit, string.format("/health took %.3f s", dt))
  end

  describe("an auth hook that raises", function()
    it("fails the handshake with 500 plugin_error naming the plugin, and nothing of the error", function()
      local resp = handshake({ path = "/boom", token = "bob" })
      assert.equals(500, resp.status)
      assert.same({ error = "plugin_error", message = "plugin boom_auth failed" }, resp.json)
      assert.is_nil(resp.body:find("SECRET-DETAIL", 1, true))
      assert.is_nil(resp.body:find("traceback", 1, true))
      -- the error goes to the log instead
      assert.matches("SECRET-DETAIL-42", srv:log(), 1, true)
    end)

    it("fails a publish with 500 plugin_error naming the plugin", function()
      local st, body, _, raw = client.publish(srv, { channel = "news", data = 1 }, { path = "/boom-publish" })
      assert.equals(500, st)
      assert.same({ error = "plugin_error", message = "plugin boom_auth failed" }, body)
      assert.is_nil(raw:find("SECRET-DETAIL", 1, true))
    end)

    it("leaves the next client on another route unaffected", function()
      handshake({ path = "/boom", token = "bob" })
      client.assert_serves(srv)
      local w = dev("/ws", "alice-phone")
      assert.equals("alice", w.welcome.user)
    end)
  end)

  describe("an auth hook that loops forever", function()
    it("is aborted at the budget: 500 plugin_error promptly", function()
      local t0 = client.now()
      local resp = handshake({ path = "/loop", token = "bob" }, 3)
      local dt = client.now() - t0
      assert.equals(500, resp.status)
      assert.equals("plugin_error", resp.json and resp.json.error)
      assert.is_true(dt < 1, string.format("the looping handshake took %.3f s", dt))
    end)

    it("names the plugin like any other error (the budget aborts the call like an error)", function()
      local st, body = client.publish(srv, { channel = "news", data = 1 }, { path = "/loop-publish" })
      assert.equals(500, st)
      assert.equals("plugin_error", body and body.error)
      assert.equals("plugin loop_auth ran past its instruction budget", body and body.message)
    end)

    it("keeps the server answering /health promptly, also between several looping requests", function()
      for _ = 1, 3 do
        local resp = handshake({ path = "/loop", token = "bob" }, 3)
        assert.equals(500, resp.status)
        health_within(0.5)
      end
      client.assert_serves(srv)
    end)

    it("counts the budget per route: a route's own budget overrides plugin_budget", function()
      local resp = handshake({ path = "/burn-global", token = "bob" })
      assert.equals(500, resp.status)
      assert.equals("plugin_error", resp.json and resp.json.error)
      local w = dev("/burn-own", "bob")
      assert.equals("burner", w.welcome.user)
    end)
  end)

  describe("an auth hook that catches the budget error with pcall and loops on", function()
    it("is still stopped: 500 plugin_error promptly and /health keeps answering", function()
      -- its own server: a hook that escapes the budget hangs the whole event loop
      local own = server.start({ plugin_path = PLUGIN_PATH, plugin_budget = BUDGET, routes = {
        { path = "/sneaky", type = "websocket", plugins = { { name = "sneaky_loop_auth" } } },
        { path = "/health", type = "health" },
      } })
      local ok, err = pcall(function()
        local t0 = client.now()
        local resp, rerr, c = client.raw_request(own, client.upgrade_request(own, { path = "/sneaky", token = "x" }), 2)
        c:close()
        assert.is_table(resp, "no answer within 2 s: " .. tostring(rerr))
        assert.equals(500, resp.status)
        assert.equals("plugin_error", resp.json and resp.json.error)
        assert.is_true(client.now() - t0 < 1)
        local hok, st = pcall(client.http, own, "/health", { timeout = 1 })
        assert.is_true(hok, "/health did not answer: " .. tostring(st))
        assert.equals(200, st)
      end)
      local rc, serr = own:stop(1)
      assert(ok, err)
      assert.equals(0, rc, serr)
    end)
  end)

  describe("a route hook that raises", function()
    it("fails the publish with 500 plugin_error naming the plugin and publishes nothing of the batch", function()
      local ch = client.unique("routeboom-")
      local w = dev("/ws", "bob", { channels = { ch } })
      local st, body, _, raw = client.publish(srv, { { channel = ch, data = "fine" }, { channel = ch, data = { action = "raise" } } },
        { path = "/routed" })
      assert.equals(500, st, raw)
      assert.equals("plugin_error", body and body.error)
      assert.equals("item 1: plugin router failed", body.message)   -- a batch names the item
      assert.is_nil(raw:find("exploded", 1, true))
      assert.matches("router exploded", srv:log(), 1, true)
      local ans = client.publish_ok(srv, { channel = ch, data = "next" }, { path = "/routed" })
      assert.equals(1, ans.seq)
      assert.equals("next", client.recv_message(w).data)
    end)
  end)

  describe("on_connect / on_close hooks that raise", function()
    it("are only logged: the connection opens, works and closes normally", function()
      local ch = client.unique("connboom-")
      local w = dev("/conn-boom", "bob", { channels = { ch } })
      assert.same({ type = "pong" }, client.request(w, { type = "ping" }))
      client.publish_ok(srv, { channel = ch, data = "hi" })
      assert.equals("hi", client.recv_message(w).data)
      assert.matches("boom_connect on_connect exploded", srv:log(), 1, true)
      w:close(1000, "done", 2)
      local deadline = client.now() + 2
      while not srv:log():find("boom_connect on_close exploded", 1, true) and client.now() < deadline do
        server.sleep(0.02)
      end
      assert.matches("boom_connect on_close exploded", srv:log(), 1, true)
      client.assert_serves(srv)
    end)
  end)

  -- These can take the server down: each test gets a server of its own so
  -- a crash shows here and does not spill into the other tests.
  describe("a hook on client messages", function()
    local own
    local own_open = session.tracker()

    local function own_dev(path, extra)
      return own_open:ws(own, util.with({ path = path, token = "bob", device = client.unique("dev-") }, extra))
    end

    local function assert_alive(s)
      if s:wait(0.3) ~= nil then   -- give a crash the time to show in the exit code
        s.death_reported = true
        error("moonpush died (exit code " .. tostring(s:exit_code()) .. ")\n" .. s:log_tail(10), 2)
      end
    end

    before_each(function()
      own = server.start({ plugin_path = PLUGIN_PATH, plugin_budget = BUDGET, routes = {
        { path = "/ev", type = "websocket", plugins = { ws_auth(), { name = "events" } } },
        { path = "/rl-boom", type = "websocket", plugins = { ws_auth(), { name = "boom_ratelimit" }, { name = "events" } } },
        { path = "/ws", type = "websocket", plugins = { ws_auth() } },
        { path = "/publish", type = "publish", plugins = { pub_auth() } },
        { path = "/health", type = "health" },
      } })
    end)

    after_each(function()
      own_open:close_all()
      if own then
        local s = own
        own = nil
        local rc, err = s:stop()
        if not s.death_reported then assert.equals(0, rc, err) end
      end
    end)

    -- Sends `frame` on a fresh raw connection of `path`; returns the close
    -- code the server sent (nil + why if none came) and the seconds it took.
    local function close_code_for(path, frame)
      local c = client.raw_ws(own, { path = path, token = "bob", device = client.unique("victim-") })
      local t0 = client.now()
      assert(c:send_text(cjson.encode(frame)))
      local code, why = c:expect_close(3)
      c:close()
      return code, why, client.now() - t0
    end

    it("on_message looping forever closes that client with 1011, and only that client", function()
      local ch = client.unique("evloop-")
      local other = own_dev("/ev", { channels = { ch } })
      local code, why, dt = close_code_for("/ev", { type = "loop" })
      assert_alive(own)
      assert.equals(1011, code, tostring(why))
      assert.is_true(dt < 1.5)
      -- the other client of the same route still works
      assert.equals("echo", client.request(other, { type = "echo", n = 1 }).type)
      client.publish_ok(own, { channel = ch, data = "after the loop" })
      assert.equals("after the loop", client.recv_message(other).data)
      local st = client.http(own, "/health")
      assert.equals(200, st)
    end)

    it("on_message raising closes that client with 1011, and only that client", function()
      local other = own_dev("/ev")
      local code, why = close_code_for("/ev", { type = "boom" })
      assert_alive(own)
      assert.equals(1011, code, tostring(why))
      assert.matches("events fixture exploded", own:log(), 1, true)
      assert.equals("echo", client.request(other, { type = "echo" }).type)
    end)

    it("a message-phase ratelimit hook raising closes that client with 1011, and only that client", function()
      local other = own_dev("/ws")
      local code, why = close_code_for("/rl-boom", { type = "echo" })
      assert_alive(own)
      assert.equals(1011, code, tostring(why))
      client.assert_serves(own)
      assert.equals(other.readyState, 1)
    end)
  end)

  describe("a format hook", function()
    it("that raises skips that route's clients, while other routes get the message and the server survives", function()
      local ch = client.unique("fmtboom-")
      local f = dev("/fmt-boom", "bob", { channels = { ch } })
      local p = dev("/ws", "bob", { channels = { ch } })
      local ans = client.publish_ok(srv, { channel = ch, data = { boom = true } })
      local m = client.recv_message(p)
      assert.equals(ans.id, m.id)
      assert.same({ boom = true }, m.data)
      -- the format route's first frame is the next message (seq 2): seq 1 was skipped
      client.publish_ok(srv, { channel = ch, data = { fine = true } })
      assert.equals("OK|" .. ch .. "|2", client.recv_text(f))
      assert.equals(2, client.recv_message(p).seq)
      assert.matches("boom_format exploded", srv:log(), 1, true)
      client.assert_serves(srv)
    end)

    it("may not publish: moonpush.publish raises inside a format hook and nothing is published", function()
      local ch = client.unique("fmtpub-")
      local side = dev("/ws", "bob", { channels = { SIDE } })
      local f = dev("/fmt-pub", "bob", { channels = { ch } })
      client.publish_ok(srv, { channel = ch, data = 1 })
      local text = client.recv_text(f)
      assert.equals("PUBLISH-REFUSED|", text:sub(1, 16), text)
      assert.matches("format hook", text, 1, true)
      -- the side channel got nothing: its first message is this one, seq 1
      local a = client.publish_ok(srv, { channel = SIDE, data = "direct" })
      assert.equals(1, a.seq)
      local m = client.recv_message(side)
      assert.equals(1, m.seq)
      assert.equals("direct", m.data)
      assert.is_true(srv:alive())
    end)
  end)
end)
