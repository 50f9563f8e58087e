-- Integration: authentication hardening (issue 10, items 2, 4 and 5).
--   roles      a token minted for devices is refused on publisher routes
--              (publish, history, presence) and the reverse, with auth_jwt's
--              defaults and with a custom plugin's identities;
--   user:      a device's `*` never reaches another user's personal channel;
--   identity   an identity the core cannot read is a plugin error, never
--              "anonymous";
--   anonymous  a publish/history/presence route without auth is refused at
--              config check unless it says anonymous = true;
--   origins    a browser page of another origin may not open a WebSocket
--              unless the route lists it;
--   expiry     a connection whose token expired is closed with 4005 unless a
--              refresh frame with a good token of the same user came in time.
-- Docs: docs/protocol.md, docs/plugins.md ("Identities"), docs/operations.md.
local server = require "helpers.server"
local client = require "helpers.client"
local routes = require "helpers.routes"
local session = require "helpers.session"
local util = require "helpers.util"
local jwt_helper = require "helpers.jwt"

local cjson = client.json
local copy = util.copy

local SECRET = "0123456789abcdef0123456789abcdef-spec"
local PLUGIN_PATH = { server.ROOT .. "/spec/fixtures/plugins", server.ROOT .. "/plugins" }

local now = jwt_helper.now
local function jwt(claims) return jwt_helper.sign(SECRET, claims) end

local function jwt_auth() return { name = "auth_jwt", config = { secret = SECRET, leeway = 0 } } end

-- first_auth (spec/fixtures/plugins) hands out whatever identity its config
-- names for a token: the shapes a custom plugin could return.
local CUSTOM = {
  identities = {
    ["pub-role"] = { role = "publisher", name = "svc", channels = { "*" } },
    ["dev-role"] = { role = "device", user = "dora", channels = { "*" } },
    ["dev-user"] = { user = "dora", channels = { "*" } },
    ["pub-name"] = { name = "svc", channels = { "*" } },
    ["misspelt"] = { usr = "alice", channels = { "*" } },
    ["nobody"] = { channels = { "*" } },
    ["bad-role"] = { role = "admin", user = "x" },
    ["bad-expires"] = { user = "x", expires = "soon" },
    ["expired"] = { user = "x", expires = 1000 },
    ["all-users"] = { user = "eve", channels = { "user:*" } },
  },
}

local function all_routes()
  return {
    { path = "/ws", type = "websocket", plugins = { routes.device_auth() } },
    { path = "/publish", type = "publish", plugins = { routes.publisher_auth() } },
    { path = "/jws", type = "websocket", plugins = { jwt_auth() } },
    { path = "/jpublish", type = "publish", plugins = { jwt_auth() } },
    { path = "/jhistory", type = "history", plugins = { jwt_auth() } },
    { path = "/cws", type = "websocket", plugins = { { name = "first_auth", config = copy(CUSTOM) } } },
    { path = "/cpublish", type = "publish", plugins = { { name = "first_auth", config = copy(CUSTOM) } } },
    { path = "/open", type = "websocket", plugins = { routes.device_auth() },
      origins = { "https://app.example.com", "http://localhost:8000" } },
    { path = "/any", type = "websocket", plugins = { routes.device_auth() }, origins = { "*" } },
    { path = "/health", type = "health" },
  }
end

local function ws_status(srv, opts)
  local c = client.tcp(srv)
  assert(c:send(client.upgrade_request(srv, opts)))
  local resp = assert(c:response())
  c:close()
  return resp.status, resp.json, resp
end

local function jpublish(srv, token, body, path)
  return client.publish(srv, body or { channel = "news", data = 1 }, { path = path or "/jpublish", token = token })
end

describe("auth hardening", function()
  local srv

  lazy_setup(function()
    srv = server.start({ routes = all_routes(), plugin_path = PLUGIN_PATH })
  end)

  lazy_teardown(function()
    if srv then session.stop(srv) end
  end)

  describe("roles", function()
    it("auth_jwt: a device token (no role claim, or role device) may not publish", function()
      for _, claims in ipairs({ { sub = "alice", channels = { "news" } },
                                { sub = "alice", role = "device", channels = { "*" } } }) do
        local st, body = jpublish(srv, jwt(claims))
        assert.equals(403, st)
        assert.equals("forbidden", body.error)
        assert.matches("device token is not accepted on a publish route", body.message, 1, true)
      end
    end)

    it("auth_jwt: a publisher token publishes, reads history, and may not open a WebSocket", function()
      local t = jwt({ sub = "billing", role = "publisher", channels = { "*" } })
      local st = jpublish(srv, t)
      assert.equals(200, st)
      st = client.http(srv, "/jhistory?channel=news", { headers = { authorization = "Bearer " .. t } })
      assert.equals(200, st)
      local status, body = ws_status(srv, { path = "/jws", token = t, channels = "user:alice" })
      assert.equals(403, status)
      assert.equals("forbidden", body.error)
      status, body = ws_status(srv, { path = "/jws", token = t })
      assert.equals(403, status)
      assert.matches("publisher token is not accepted on a websocket route", body.message, 1, true)
    end)

    it("auth_jwt: a device token may not read history", function()
      local st, body = client.http(srv, "/jhistory?channel=news",
        { headers = { authorization = "Bearer " .. jwt({ sub = "alice", channels = { "*" } }) } })
      assert.equals(403, st)
      assert.equals("forbidden", body.error)
    end)

    it("a custom plugin's identities: role, or user / name alone, decide", function()
      assert.equals(403, (ws_status(srv, { path = "/cws", token = "pub-role" })))
      assert.equals(403, (ws_status(srv, { path = "/cws", token = "pub-name" })))
      assert.equals(101, (ws_status(srv, { path = "/cws", token = "dev-role" })))
      assert.equals(101, (ws_status(srv, { path = "/cws", token = "dev-user" })))
      assert.equals(403, (jpublish(srv, "dev-role", nil, "/cpublish")))
      assert.equals(403, (jpublish(srv, "dev-user", nil, "/cpublish")))
      assert.equals(200, (jpublish(srv, "pub-role", nil, "/cpublish")))
      assert.equals(200, (jpublish(srv, "pub-name", nil, "/cpublish")))
    end)
  end)

  describe("personal channels", function()
    it("a device's * does not cover another user's user: channel, its own stays", function()
      local ws = client.ws(srv, { token = "bob" })   -- channels { "*" }
      local e = client.request(ws, { type = "subscribe", channel = "user:alice" })
      assert.same({ type = "error", code = "forbidden", channel = "user:alice" }, { type = e.type, code = e.code, channel = e.channel })
      local ok = client.request(ws, { type = "subscribe", channel = "news" })
      assert.equals("subscribed", ok.type)
      client.close(ws)
      local status, body = ws_status(srv, { token = "bob", channels = "user:alice" })
      assert.equals(403, status)
      assert.equals("forbidden", body.error)
      assert.equals(101, (ws_status(srv, { token = "bob", channels = "user:bob" })))
    end)

    it("nor does auth_jwt's channels [\"*\"]; nothing is delivered to the stranger", function()
      local ws = client.ws(srv, { path = "/jws", token = jwt({ sub = "mallory", channels = { "*" } }) })
      local e = client.request(ws, { type = "subscribe", channel = "user:alice" })
      assert.equals("forbidden", e.code)
      client.publish_ok(srv, { user = "alice", data = { secret = 1 } })
      client.publish_ok(srv, { user = "mallory", data = { mine = 1 } })
      local m = client.recv_message(ws)
      assert.same({ mine = 1 }, m.data)
      client.close(ws)
    end)

    it("a pattern that names user: itself does reach other users' personal channels", function()
      local ws = client.ws(srv, { path = "/cws", token = "all-users" })
      assert.equals("subscribed", client.request(ws, { type = "subscribe", channel = "user:alice" }).type)
      client.close(ws)
    end)
  end)

  describe("identities the core cannot read", function()
    it("an unknown key is a plugin error naming the plugin and the key, not an anonymous user", function()
      local status, body = ws_status(srv, { path = "/cws", token = "misspelt" })
      assert.equals(500, status)
      assert.same({ error = "plugin_error", message = "plugin first_auth failed" }, body)
      local st, pbody = jpublish(srv, "misspelt", nil, "/cpublish")
      assert.equals(500, st)
      assert.equals("plugin_error", pbody.error)
      assert.is_string(srv:wait_log("auth plugin first_auth returned a bad identity: unknown key", 0, 5))
      assert.matches("usr", srv:log(), 1, true)
    end)

    it("no user (device) or name (publisher), a bad role or expires: plugin errors", function()
      for _, t in ipairs({ "nobody", "bad-role", "bad-expires" }) do
        assert.equals(500, (ws_status(srv, { path = "/cws", token = t })), t)
      end
    end)

    it("on a refresh, a bad identity closes the connection with 1011 and logs the plugin", function()
      local c = client.raw_ws(srv, { path = "/cws", token = "dev-user", device = client.unique("d-") })
      assert(c:send_text(cjson.encode({ type = "refresh", token = "dev-role" })))   -- same user: fine
      assert.equals("refreshed", assert(c:read_json(5)).type)
      local before = srv:log_count("auth plugin first_auth returned a bad identity")
      assert(c:send_text(cjson.encode({ type = "refresh", token = "misspelt" })))
      local code, reason = c:expect_close(5)
      assert.same({ 1011, "internal error" }, { code, reason })
      assert.is_string(srv:wait_log("auth plugin first_auth returned a bad identity", before, 5))
      c:close()
    end)

    it("an identity already expired is refused with 401", function()
      local status, body = ws_status(srv, { path = "/cws", token = "expired" })
      assert.equals(401, status)
      assert.equals("token expired", body.message)
    end)
  end)

  describe("origins", function()
    it("refuses a page of another origin with 403 origin_not_allowed", function()
      local status, body = ws_status(srv, { token = "bob", headers = { Origin = "https://evil.example" } })
      assert.equals(403, status)
      assert.equals("origin_not_allowed", body.error)
      -- same host, other port or scheme: another origin
      status = ws_status(srv, { token = "bob", headers = { Origin = "http://127.0.0.1:1" } })
      assert.equals(403, status)
    end)

    it("lets the server's own origin and clients without Origin in", function()
      assert.equals(101, (ws_status(srv, { token = "bob", headers = { Origin = "http://127.0.0.1:" .. srv.port } })))
      assert.equals(101, (ws_status(srv, { token = "bob" })))
    end)

    it("lets the origins a route lists in, and only those; \"*\" lets every one in", function()
      assert.equals(101, (ws_status(srv, { path = "/open", token = "bob", headers = { Origin = "https://app.example.com" } })))
      assert.equals(101, (ws_status(srv, { path = "/open", token = "bob", headers = { Origin = "http://localhost:8000" } })))
      assert.equals(403, (ws_status(srv, { path = "/open", token = "bob", headers = { Origin = "https://app.example.com:8443" } })))
      assert.equals(101, (ws_status(srv, { path = "/any", token = "bob", headers = { Origin = "https://evil.example" } })))
    end)

    it("checks the origin before the token", function()
      local status, body = ws_status(srv, { token = "no-such-token", headers = { Origin = "https://evil.example" } })
      assert.equals(403, status)
      assert.equals("origin_not_allowed", body.error)
    end)
  end)

  describe("token expiry", function()
    it("welcome carries expires_in_ms, and the connection is closed with 4005 when the token expires", function()
      local c = client.raw_ws(srv, { path = "/jws", token = jwt({ sub = "xavier", exp = now() + 2 }) })
      local left = c.welcome.expires_in_ms
      assert.is_number(left)
      assert.is_true(left > 0 and left <= 2000, tostring(left))
      local code, reason = c:expect_close(5)
      assert.equals(4005, code)
      assert.equals("token expired", reason)
      c:close()
    end)

    it("a token without exp never expires: no expires_in_ms", function()
      local ws = client.ws(srv, { path = "/jws", token = jwt({ sub = "yvonne" }) })
      assert.is_nil(ws.welcome.expires_in_ms)
      client.close(ws)
    end)

    it("a refresh with a good token of the same user moves the deadline", function()
      local ws = client.ws(srv, { path = "/jws", token = jwt({ sub = "zoe", exp = now() + 2, channels = { "news" } }) })
      local r = client.request(ws, { type = "refresh", token = jwt({ sub = "zoe", exp = now() + 60 }) })
      assert.equals("refreshed", r.type)
      assert.is_true(r.expires_in_ms > 50000 and r.expires_in_ms <= 60000, tostring(r.expires_in_ms))
      server.sleep(3)
      -- still open and subscribed past the first token's expiry
      client.publish_ok(srv, { user = "zoe", data = { after = true } })
      assert.same({ after = true }, client.recv_message(ws).data)
      client.close(ws)
    end)

    it("a refused refresh answers an error frame and the old deadline stays", function()
      local c = client.raw_ws(srv, { path = "/jws", token = jwt({ sub = "quinn", exp = now() + 2 }) })
      local function refresh(token)
        assert(c:send_text(cjson.encode({ type = "refresh", token = token })))
        return assert(c:read_json(5))
      end
      local e = refresh(jwt({ sub = "quinn", exp = now() - 10 }))
      assert.same({ "error", "unauthorized" }, { e.type, e.code })
      e = refresh("not-a-jwt")
      assert.same({ "error", "unauthorized" }, { e.type, e.code })
      e = refresh(jwt({ sub = "someone-else", exp = now() + 60 }))
      assert.same({ "error", "forbidden" }, { e.type, e.code })
      e = refresh(jwt({ sub = "quinn", role = "publisher", exp = now() + 60 }))
      assert.same({ "error", "forbidden" }, { e.type, e.code })
      assert(c:send_text(cjson.encode({ type = "refresh" })))
      e = assert(c:read_json(5))
      assert.same({ "error", "bad_frame" }, { e.type, e.code })
      local code, reason = c:expect_close(5)
      assert.equals(4005, code)
      assert.equals("token expired", reason)
      c:close()
    end)

    it("a refresh may end the expiry: a token without exp", function()
      local c = client.raw_ws(srv, { path = "/jws", token = jwt({ sub = "uma", exp = now() + 2, channels = { "news" } }) })
      assert(c:send_text(cjson.encode({ type = "refresh", token = jwt({ sub = "uma" }) })))
      local r = assert(c:read_json(5))
      assert.equals("refreshed", r.type)
      assert.is_nil(r.expires_in_ms)
      server.sleep(2.5)
      assert(c:send_text(cjson.encode({ type = "subscribe", channel = "news" })))
      assert.equals("subscribed", assert(c:read_json(5)).type)
      c:close()
    end)
  end)
end)

describe("anonymous routes", function()
  local check = server.check_config

  for _, kind in ipairs({ "publish", "history", "presence" }) do
    it("refuses a " .. kind .. " route without an auth plugin at --check-config, saying how to opt in", function()
      local out, rc = check(function(cfg)
        table.insert(cfg.routes, { path = "/open-" .. kind, type = kind })
      end)
      assert.equals(1, rc, out)
      assert.matches("without an auth plugin", out, 1, true)
      assert.matches("anonymous = true", out, 1, true)
      assert.matches("/open-" .. kind, out, 1, true)
    end)
  end

  it("accepts anonymous = true and then takes anonymous publishes", function()
    local out, rc = check(function(cfg)
      table.insert(cfg.routes, { path = "/open", type = "publish", anonymous = true })
    end)
    assert.equals(0, rc, out)
    local routes_ = server.default_config().routes
    table.insert(routes_, { path = "/open", type = "publish", anonymous = true })
    local srv = server.start({ routes = routes_ })
    local st, body = client.publish(srv, { channel = "news", data = 1 }, { path = "/open", token = false })
    srv:stop()
    assert.equals(200, st, cjson.encode(body))
  end)

  it("refuses anonymous = true next to an auth plugin, or on a websocket route", function()
    local out, rc = check(function(cfg) cfg.routes[2].anonymous = true end)
    assert.equals(1, rc, out)
    assert.matches("anonymous", out, 1, true)
    out, rc = check(function(cfg) cfg.routes[1].anonymous = true end)
    assert.equals(1, rc, out)
  end)

  it("refuses origins that are not origins", function()
    local out, rc = check(function(cfg) cfg.routes[1].origins = { "https://app.example.com/path" } end)
    assert.equals(1, rc, out)
    assert.matches("is not an origin", out, 1, true)
    out, rc = check(function(cfg) cfg.routes[2].origins = { "*" } end)
    assert.equals(1, rc, out)
    assert.matches("websocket routes only", out, 1, true)
  end)
end)
