-- Integration: plugin chains per route (docs/plugins.md "Rules of the game",
-- "Hooks"): chain order, denials, rate limits per phase, route hooks,
-- format hooks, connection events. Test plugins: spec/fixtures/plugins/.
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local routes = require "helpers.routes"
local util = require "helpers.util"

local ROOT = server.ROOT
local PLUGIN_PATH = { ROOT .. "/spec/fixtures/plugins", ROOT .. "/plugins" }

local cjson = client.json
local copy = util.copy

-- Device tokens for the routes of this spec: the default ones plus two of
-- known kinds that may subscribe anything.
local function device_tokens()
  local t = copy(server.TOKENS)
  t["pos-dev"] = { user = "till", kind = "pos", channels = { "*" } }
  t["web-dev"] = { user = "webby", kind = "web", channels = { "*" } }
  return t
end

local function ws_auth() return routes.device_auth(device_tokens()) end
local function pub_auth() return routes.publisher_auth(routes.publishers()) end

-- Two auth plugins: which one decided shows in the identity's user/name.
local FIRST = {
  identities = {
    ["tok-a"] = { user = "from-first", name = "pub-first", channels = { "*" } },
    ["both"] = { user = "first-wins", name = "pub-first-wins", channels = { "*" } },
  },
  denials = {
    ["deny-first"] = { status = 403, code = "first_says_no", message = "the first plugin refuses" },
    ["string-deny"] = "go away, says the first plugin",
  },
}
local SECOND = {
  identities = {
    ["tok-b"] = { user = "from-second", name = "pub-second", channels = { "*" } },
    ["both"] = { user = "second-loses", name = "pub-second-loses", channels = { "*" } },
    ["deny-first"] = { user = "never", name = "never", channels = { "*" } },
    ["string-deny"] = { user = "never", name = "never", channels = { "*" } },
  },
}

local function all_routes()
  return {
    { path = "/chain", type = "websocket", plugins = {
        { name = "first_auth", config = copy(FIRST) },
        { name = "second_auth", config = copy(SECOND) },
    } },
    { path = "/chain-publish", type = "publish", plugins = {
        { name = "first_auth", config = copy(FIRST) },
        { name = "second_auth", config = copy(SECOND) },
    } },
    { path = "/rl-connect", type = "websocket", plugins = {
        { name = "ratelimit", config = { per_ip = { rate = 0.01, burst = 2 }, phases = { "connect" } } },
        ws_auth(),
    } },
    { path = "/rl-publish", type = "publish", plugins = {
        pub_auth(),
        { name = "ratelimit", config = { per_publisher = { rate = 0.01, burst = 2 }, phases = { "publish" } } },
    } },
    { path = "/rl-message", type = "websocket", plugins = {
        { name = "ratelimit", config = { per_user = { rate = 0.01, burst = 3 }, phases = { "message" } } },
        ws_auth(),
        { name = "events" },
    } },
    { path = "/routed", type = "publish", plugins = { pub_auth(), { name = "router" } } },
    { path = "/routed-data", type = "publish", plugins = { pub_auth(), { name = "data_router" } } },
    { path = "/routed-default", type = "publish", plugins = { pub_auth(),
        { name = "route_default", config = { require_fields = { "a" }, max_data_bytes = 64 } } } },
    { path = "/fmt", type = "websocket", plugins = { ws_auth(), { name = "counting_format" } } },
    { path = "/fmt2", type = "websocket", plugins = { ws_auth(), { name = "counting_format" } } },
    { path = "/ev", type = "websocket", plugins = { ws_auth(), { name = "events" } } },
    { path = "/ws", type = "websocket", plugins = { ws_auth() } },
    { path = "/publish", type = "publish", plugins = { pub_auth() } },
    { path = "/health", type = "health" },
  }
end

describe("moonpush plugin chains", function()
  local srv
  local ws = session.shared_server(function()
    srv = server.start({ plugin_path = PLUGIN_PATH, routes = all_routes() })
    return srv
  end)

  -- a device on `path` with its own device id
  local function dev(path, token, extra)
    return ws(util.with({ path = path, token = token or "bob", device = client.unique("dev-") }, extra))
  end

  -- the raw HTTP answer to an upgrade request
  local function handshake(opts) return client.handshake(srv, opts) end

  local function wait_until(fn, timeout)
    local deadline = client.now() + (timeout or 2)
    while client.now() < deadline do
      local v = fn()
      if v then return v end
      server.sleep(0.02)
    end
    return fn()
  end


  -------------------------------------------------------------------------
  describe("auth chain order", function()
    it("lets the first plugin that returns an identity decide the handshake", function()
      local w = dev("/chain", "both")
      assert.equals("first-wins", w.welcome.user)
    end)

    it("passes to the next plugin when the first returns nothing", function()
      local w = dev("/chain", "tok-b")
      assert.equals("from-second", w.welcome.user)
      local w2 = dev("/chain", "tok-a")
      assert.equals("from-first", w2.welcome.user)
    end)

    it("answers 401 unauthorized when no plugin of the chain decides", function()
      local resp = handshake({ path = "/chain", token = "nobody-knows-me" })
      assert.equals(401, resp.status)
      assert.equals("unauthorized", resp.json and resp.json.error)
    end)

    it("turns a table denial of the first plugin into its HTTP status and JSON error, without asking the next", function()
      local resp = handshake({ path = "/chain", token = "deny-first" })
      assert.equals(403, resp.status)
      assert.is_table(resp.json, resp.body)
      assert.equals("first_says_no", resp.json.error)
      assert.equals("the first plugin refuses", resp.json.message)
      assert.matches("application/json", resp.headers["content-type"] or "")
    end)

    it("reads a plain string denial as 401 with that message", function()
      local resp = handshake({ path = "/chain", token = "string-deny" })
      assert.equals(401, resp.status)
      assert.is_table(resp.json, resp.body)
      assert.equals("unauthorized", resp.json.error)
      assert.equals("go away, says the first plugin", resp.json.message)
    end)

    it("applies the same chain order on a publish route", function()
      local ch = client.unique("chainpub-")
      local a = client.publish_ok(srv, { channel = ch, data = 1 }, { path = "/chain-publish", token = "both" })
      assert.equals(1, a.seq)
      local st, body = client.publish(srv, { channel = ch, data = 2 }, { path = "/chain-publish", token = "tok-b" })
      assert.equals(200, st)
      assert.equals(2, body.seq)
      st, body = client.publish(srv, { channel = ch, data = 3 }, { path = "/chain-publish", token = "deny-first" })
      assert.equals(403, st)
      assert.same({ error = "first_says_no", message = "the first plugin refuses" }, body)
      st, body = client.publish(srv, { channel = ch, data = 4 }, { path = "/chain-publish", token = "string-deny" })
      assert.equals(401, st)
      assert.equals("unauthorized", body and body.error)
      assert.equals("go away, says the first plugin", body and body.message)
      -- the denied publishes did not advance the channel
      local last = client.publish_ok(srv, { channel = ch, data = 5 })
      assert.equals(3, last.seq)
    end)
  end)

  -------------------------------------------------------------------------
  describe("ratelimit hook", function()
    it("denies a handshake past the connect limit with 429, Retry-After and JSON rate_limited", function()
      for _ = 1, 2 do
        local c = client.raw_ws(srv, { path = "/rl-connect", token = "bob", device = client.unique("rl-") })
        c:close()
      end
      local resp = handshake({ path = "/rl-connect", token = "bob", device = client.unique("rl-") })
      assert.equals(429, resp.status)
      assert.is_table(resp.json, resp.body)
      assert.equals("rate_limited", resp.json.error)
      assert.is_string(resp.json.message)
      local ra = tonumber(resp.headers["retry-after"])
      assert.is_number(ra, "no numeric Retry-After header: " .. tostring(resp.headers["retry-after"]))
      assert.is_true(ra >= 1)
      -- other routes are not limited by it
      local w = dev("/ws")
      assert.equals("bob", w.welcome.user)
    end)

    it("denies a publish past the publish limit with 429 and Retry-After", function()
      local ch = client.unique("rlpub-")
      for i = 1, 2 do
        local st, body = client.publish(srv, { channel = ch, data = i }, { path = "/rl-publish" })
        assert.equals(200, st, cjson.encode(body))
      end
      local st, body, headers = client.publish(srv, { channel = ch, data = 3 }, { path = "/rl-publish" })
      assert.equals(429, st)
      assert.equals("rate_limited", body and body.error)
      local ra = tonumber(headers:get("retry-after"))
      assert.is_number(ra)
      assert.is_true(ra >= 1)
      -- the denied publish was not published: the next one on another route is seq 3
      assert.equals(3, client.publish_ok(srv, { channel = ch, data = 4 }).seq)
    end)

    it("answers a client frame past the message limit with an error frame rate_limited and keeps the connection", function()
      local ch = client.unique("rlmsg-")
      local w = dev("/rl-message", "bob", { channels = { ch } })
      -- burst 3: three frames pass
      for i = 1, 3 do
        local r = client.request(w, { type = "echo", n = i })
        assert.equals("echo", r.type)
        assert.equals(i, r.got.n)
      end
      local r = client.request(w, { type = "echo", n = 4 })
      assert.equals("error", r.type)
      assert.equals("rate_limited", r.code)
      r = client.request(w, { type = "subscribe", channel = client.unique("other-") })
      assert.equals("error", r.type)
      assert.equals("rate_limited", r.code)
      -- still open: deliveries are not client messages
      client.publish_ok(srv, { channel = ch, data = "still here" })
      local m = client.recv_message(w)
      assert.equals("still here", m.data)
    end)
  end)

  -------------------------------------------------------------------------
  describe("route hook", function()
    it("may rewrite the channel", function()
      local from, to = client.unique("rw-in-"), client.unique("rw-out-")
      local w_in = dev("/ws", "bob", { channels = { from } })
      local w_out = dev("/ws", "bob", { channels = { to } })
      local st, ans = client.publish(srv, { channel = from, data = { action = "rewrite", to = to } }, { path = "/routed" })
      assert.equals(200, st, cjson.encode(ans))
      assert.equals(to, ans.channel)
      assert.equals(1, ans.seq)
      assert.equals(1, ans.recipients)
      local m = client.recv_message(w_out)
      assert.equals(to, m.channel)
      assert.equals("rewrite", m.data.action)
      -- the original channel got nothing: its first message is a later plain one
      client.publish_ok(srv, { channel = from, data = "plain" })
      local m2 = client.recv_message(w_in)
      assert.equals("plain", m2.data)
      assert.equals(1, m2.seq)
    end)

    it("fans one message out to several channels, answering one result per channel", function()
      local chans = { client.unique("fan-a-"), client.unique("fan-b-"), client.unique("fan-c-") }
      local subs = {}
      for i, ch in ipairs(chans) do subs[i] = dev("/ws", "bob", { channels = { ch } }) end
      local st, ans, _, raw = client.publish(srv, { channel = chans[1], data = { action = "fanout", to = chans } },
        { path = "/routed" })
      assert.equals(200, st, raw)
      assert.is_table(ans, raw)
      assert.equals(3, #ans, raw)
      local ids = {}
      for i, ch in ipairs(chans) do
        assert.equals(ch, ans[i].channel)
        assert.equals(1, ans[i].seq)
        assert.equals(1, ans[i].recipients)
        assert.is_string(ans[i].id)
        ids[ans[i].id] = true
        local m = client.recv_message(subs[i])
        assert.equals(ch, m.channel)
        assert.equals(ans[i].id, m.id)
        assert.equals("fanout", m.data.action)
      end
    end)

    it("restricts delivery to msg.kinds: a connection of another kind on the same channel does not get it", function()
      local ch = client.unique("kinds-")
      local pos = dev("/ws", "pos-dev", { channels = { ch } })
      local web = dev("/ws", "web-dev", { channels = { ch } })
      assert.equals("pos", pos.welcome.kind)
      assert.equals("web", web.welcome.kind)
      local st, ans, _, raw = client.publish(srv, { channel = ch, data = { action = "kinds", kinds = { "pos" } } },
        { path = "/routed" })
      assert.equals(200, st, raw)
      assert.equals(1, ans.recipients)
      local m = client.recv_message(pos)
      assert.equals(1, m.seq)
      assert.equals("kinds", m.data.action)
      -- the web device's first message is the next, unrestricted one
      client.publish_ok(srv, { channel = ch, data = "for all" }, { path = "/routed" })
      local m2 = client.recv_message(web)
      assert.equals(2, m2.seq)
      assert.equals("for all", m2.data)
      assert.equals(2, client.recv_message(pos).seq)
    end)

    it("rejects a request with the denial's status and JSON error, publishing nothing of a batch", function()
      local ch = client.unique("deny-")
      local w = dev("/ws", "bob", { channels = { ch } })
      local st, body, _, raw = client.publish(srv, {
        { channel = ch, data = "first is fine" },
        { channel = ch, data = { action = "deny", status = 403 } },
        { channel = ch, data = "third is fine" },
      }, { path = "/routed" })
      assert.equals(403, st, raw)
      assert.equals("route_denied", body and body.error)
      assert.matches("item 1", body.message, 1, true)
      st, body, _, raw = client.publish(srv, { channel = ch, data = { action = "deny", status = 400 } },
        { path = "/routed" })
      assert.equals(400, st, raw)
      assert.equals("route_denied", body and body.error)
      assert.matches("backend", body.message, 1, true)   -- ctx.publisher reached the hook
      -- seq did not advance: the next publish is seq 1 and is the first frame the device sees
      local ok = client.publish_ok(srv, { channel = ch, data = "after" }, { path = "/routed" })
      assert.equals(1, ok.seq)
      local m = client.recv_message(w)
      assert.equals(1, m.seq)
      assert.equals("after", m.data)
    end)

    it("publishes unchanged when the route hook returns nothing", function()
      local ch = client.unique("pass-")
      local w = dev("/ws", "bob", { channels = { ch } })
      local ans = client.publish_ok(srv, { channel = ch, data = { x = 1 } }, { path = "/routed" })
      assert.equals(ch, ans.channel)
      local m = client.recv_message(w)
      assert.same({ x = 1 }, m.data)
    end)

    -- Key order and an integer past 14 digits show whether the core kept the
    -- published bytes or re-encoded the data with lua-cjson.
    local EXACT = '{"z":1,"a":2,"big":12345678901234567}'

    -- publishes EXACT as data to channel ch on route path; the frame's raw text
    local function publish_exact(path, ch)
      local w = dev("/ws", "bob", { channels = { ch } })
      local st, ans, _, raw = client.publish(srv, '{"channel":"' .. ch .. '","data":' .. EXACT .. '}', { path = path })
      assert.equals(200, st, raw)
      assert.equals(ch, ans.channel)
      local m, text = client.recv_message(w)
      return m, text
    end

    it("keeps the published bytes of data that no hook touched", function()
      local _, text = publish_exact("/routed-data", client.unique("keep-"))
      assert.matches('"data":' .. EXACT .. '}', text, 1, true)
    end)

    it("gives hooks msg.data_json, the data's text, until they touch msg.data", function()
      local _, text = publish_exact("/routed-data", client.unique("json-"))
      assert.matches('"data":' .. EXACT .. '}', text, 1, true)
    end)

    it("re-encodes data a hook changed in place, and drops data_json once data is read", function()
      local m, text = publish_exact("/routed-data", client.unique("inplace-"))
      assert.matches('"big":1.2345678901235e+16', text, 1, true)   -- 14 significant digits
      m.data.big = nil
      assert.same({ z = 1, a = 2, json_before_read = true, json_after_read = false }, m.data)
    end)

    -- The core formats a connection's address once and reuses it while the
    -- same connection asks again (auth, then route hooks): requests from two
    -- keep-alive publishers, interleaved, must each see their own address.
    it("gives route hooks the remote address of the connection that published", function()
      local ch = client.unique("remote-")
      local w = dev("/ws", "bob", { channels = { ch } })
      local function request()
        local body = '{"channel":"' .. ch .. '","data":1}'
        return "POST /routed-data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" ..
               "Authorization: Bearer " .. server.PUBLISHER .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
      end
      local conns = { client.tcp(srv), client.tcp(srv) }
      for _, c in ipairs({ 1, 2, 1, 2, 1 }) do
        local conn = conns[c]
        assert(conn:send(request()))
        assert.equals(200, assert(conn:response()).status)
        local _, ip, port = conn.sock:localname()
        local m = client.recv_message(w)
        assert.equals(ip .. ":" .. port, m.data.remote)
      end
      for _, conn in ipairs(conns) do conn:close() end
    end)

    it("publishes data a hook assigned, or null when it set msg.data = nil", function()
      local m = publish_exact("/routed-data", client.unique("assign-"))
      assert.same({ replaced = true }, m.data)
      local _, text = publish_exact("/routed-data", client.unique("nil-"))
      assert.matches('"data":null}', text, 1, true)
    end)

    it("re-encodes the data of a message table a hook returned in place of msg", function()
      local m, text = publish_exact("/routed-data", client.unique("copy-"))
      assert.matches('"big":1.2345678901235e+16', text, 1, true)
      m.data.big = nil
      assert.same({ z = 1, a = 2 }, m.data)
    end)

    it("route_default checks fields and size without changing the published bytes", function()
      local _, text = publish_exact("/routed-default", client.unique("rd-"))
      assert.matches('"data":' .. EXACT .. '}', text, 1, true)
      local st, body = client.publish(srv, { channel = client.unique("rd-"), data = { b = 1 } }, { path = "/routed-default" })
      assert.equals(400, st)
      assert.equals("bad_message", body.error)
      st, body = client.publish(srv, { channel = client.unique("rd-"), data = { a = string.rep("x", 60) } },
        { path = "/routed-default" })
      assert.equals(413, st)
      assert.equals("data_too_large", body.error)
    end)
  end)

  -------------------------------------------------------------------------
  describe("format hook", function()
    local function format_calls(w)
      local r = client.request(w, { type = "format_calls" })
      assert.equals("format_calls", r.type, cjson.encode(r))
      return r.count
    end

    it("gives a format route the formatted text and a plain route the standard envelope of the same message", function()
      local ch = client.unique("fmt-")
      local f = dev("/fmt", "bob", { channels = { ch } })
      local p = dev("/ws", "bob", { channels = { ch } })
      local ans = client.publish_ok(srv, { channel = ch, data = { hello = "world" } })
      assert.equals(2, ans.recipients)
      local text = client.recv_text(f)
      assert.equals(table.concat({ "FMT", "/fmt", ch, tostring(ans.seq), ans.id, '{"hello":"world"}' }, "|"), text)
      local m = client.recv_message(p)
      assert.equals(ch, m.channel)
      assert.equals(ans.seq, m.seq)
      assert.equals(ans.id, m.id)
      assert.same({ hello = "world" }, m.data)
    end)

    it("is called once per message per route, not once per recipient", function()
      local ch = client.unique("fmtcount-")
      local subs = {}
      for i = 1, 5 do subs[i] = dev("/fmt", "bob", { channels = { ch } }) end
      local before = format_calls(subs[1])
      local ans = client.publish_ok(srv, { channel = ch, data = "five" })
      assert.equals(5, ans.recipients)
      local first
      for i = 1, 5 do
        local text = client.recv_text(subs[i])
        first = first or text
        assert.equals(first, text)
        assert.matches("^FMT|/fmt|", text)
      end
      assert.equals(before + 1, format_calls(subs[1]))
      -- a second message: one more call
      client.publish_ok(srv, { channel = ch, data = "again" })
      for i = 1, 5 do client.recv_text(subs[i]) end
      assert.equals(before + 2, format_calls(subs[3]))
    end)

    it("is called once for each format route with subscribers, each getting its own audience", function()
      local ch = client.unique("fmt2-")
      local a = { dev("/fmt", "bob", { channels = { ch } }), dev("/fmt", "bob", { channels = { ch } }) }
      local b = { dev("/fmt2", "bob", { channels = { ch } }), dev("/fmt2", "bob", { channels = { ch } }) }
      local before_a, before_b = format_calls(a[1]), format_calls(b[1])
      local ans = client.publish_ok(srv, { channel = ch, data = 7 })
      assert.equals(4, ans.recipients)
      for _, w in ipairs(a) do
        local text = client.recv_text(w)
        assert.equals("FMT|/fmt|" .. ch .. "|", text:sub(1, #("FMT|/fmt|" .. ch .. "|")))
      end
      for _, w in ipairs(b) do
        local text = client.recv_text(w)
        assert.equals("FMT|/fmt2|" .. ch .. "|", text:sub(1, #("FMT|/fmt2|" .. ch .. "|")))
      end
      assert.equals(before_a + 1, format_calls(a[2]))
      assert.equals(before_b + 1, format_calls(b[2]))
    end)

    it("hands a route's format hook the same audience table on every call", function()
      local ch = client.unique("fmtaud-")
      local a, b = dev("/fmt", "bob", { channels = { ch } }), dev("/fmt2", "bob", { channels = { ch } })
      -- each route loads its own instance of the fixture, which counts the
      -- distinct audience tables it was handed
      local function audiences(w) return client.request(w, { type = "format_calls" }).audiences end
      for i = 1, 3 do
        client.publish_ok(srv, { channel = ch, data = i })
        assert.matches("^FMT|/fmt|", client.recv_text(a))
        assert.matches("^FMT|/fmt2|", client.recv_text(b))
      end
      assert.equals(1, audiences(a))
      assert.equals(1, audiences(b))
    end)

    it("is not called for a message no connection of the route subscribes to", function()
      local f = dev("/fmt", "bob")
      local before = format_calls(f)
      local ch = client.unique("nobody-")
      local p = dev("/ws", "bob", { channels = { ch } })
      client.publish_ok(srv, { channel = ch, data = "x" })
      client.recv_message(p)
      assert.equals(before, format_calls(f))
    end)

    it("sends the standard envelope when the hook returns nil", function()
      local ch = client.unique("fmtnil-")
      local f = dev("/fmt", "bob", { channels = { ch } })
      local ans = client.publish_ok(srv, { channel = ch, data = { raw = true } })
      local m = client.recv_message(f)
      assert.equals(ans.id, m.id)
      assert.same({ raw = true }, m.data)
    end)
  end)

  -------------------------------------------------------------------------
  describe("connection events", function()
    local function events(w)
      local r = client.request(w, { type = "events" })
      assert.equals("events", r.type, cjson.encode(r))
      return r.list
    end

    local function find(list, event, id)
      for _, e in ipairs(list) do
        if e.event == event and tostring(e.id) == tostring(id) then return e end
      end
    end

    it("sends back the table on_message returns as a JSON frame", function()
      local w = dev("/ev", "alice-phone")
      local r = client.request(w, { type = "echo", payload = { 1, "two" } })
      assert.equals("echo", r.type)
      assert.same({ type = "echo", payload = { 1, "two" } }, r.got)
      assert.equals("alice", r.conn.user)
      assert.equals("phone", r.conn.device)
      assert.equals("mobile", r.conn.kind)
      assert.equals("/ev", r.conn.route)
      assert.equals(tostring(w.welcome.conn), tostring(r.conn.id))
    end)

    it("turns an on_message denial into an error frame with its code and message, keeping the connection", function()
      local ch = client.unique("evdeny-")
      local w = dev("/ev", "bob", { channels = { ch } })
      local r = client.request(w, { type = "deny", what = "thanks" })
      assert.equals("error", r.type)
      assert.equals("not_allowed_here", r.code)
      assert.equals("no thanks", r.message)
      r = client.request(w, { type = "deny_string" })
      assert.equals("error", r.type)
      assert.equals("plain denial", r.message)
      client.publish_ok(srv, { channel = ch, data = "open" })
      assert.equals("open", client.recv_message(w).data)
    end)

    it("answers unknown_type when no on_message hook decides", function()
      local w = dev("/ev", "bob")
      local r = client.request(w, { type = "pass" })
      assert.equals("error", r.type)
      assert.equals("unknown_type", r.code)
      -- and the core's own frames still work on a route with on_message
      local ch = client.unique("evsub-")
      r = client.request(w, { type = "subscribe", channel = ch })
      assert.same({ type = "subscribed", channel = ch }, client.pick(r))
    end)

    it("calls on_connect once per connection with the identity and route", function()
      local w = dev("/ev", "alice-laptop")
      local list = events(w)
      local e = find(list, "connect", w.welcome.conn)
      assert.is_table(e, "no connect event for conn " .. tostring(w.welcome.conn) .. ": " .. cjson.encode(list))
      assert.equals("alice", e.user)
      assert.equals("laptop", e.device)
      assert.equals("web", e.kind)
      assert.equals("/ev", e.route)
      local n = 0
      for _, x in ipairs(list) do
        if x.event == "connect" and tostring(x.id) == tostring(w.welcome.conn) then n = n + 1 end
      end
      assert.equals(1, n)
      assert.matches("events-fixture on_connect " .. tostring(w.welcome.conn), srv:log(), 1, true)
    end)

    it("calls on_close once when the client closes, with the close code of the handshake (1000)", function()
      local watcher = dev("/ev", "bob")
      local c = client.raw_ws(srv, { path = "/ev", token = "bob", device = client.unique("leaving-") })
      local id = c.welcome.conn
      assert(c:send_frame({ opcode = client.OP.close, payload = client.close_payload(1000, "done") }))
      local code, reason = c:expect_close()
      assert.equals(1000, code)       -- the server answered the close handshake
      assert.equals("bye", reason)
      c:close()
      local e = wait_until(function() return find(events(watcher), "close", id) end, 2)
      assert.is_table(e, "no close event for conn " .. tostring(id))
      assert.equals("/ev", e.route)
      local n = 0
      for _, x in ipairs(events(watcher)) do
        if x.event == "close" and tostring(x.id) == tostring(id) then n = n + 1 end
      end
      assert.equals(1, n)
      assert.equals(1, srv:log_count("events-fixture on_close " .. tostring(id) .. " "))
      -- docs/plugins.md: on_close gets info = { code = 1000, reason = "bye" }
      assert.equals(1000, e.code)
      assert.equals("bye", e.reason)
    end)

    it("gives on_close the code the server answered (1000 bye) when the client closed with 3000", function()
      local watcher = dev("/ev", "bob")
      local c = client.raw_ws(srv, { path = "/ev", token = "bob", device = client.unique("leaving-") })
      local id = c.welcome.conn
      assert(c:send_frame({ opcode = client.OP.close, payload = client.close_payload(3000, "app says bye") }))
      local code, reason = c:expect_close()
      assert.equals(1000, code)
      assert.equals("bye", reason)
      c:close()
      local e = wait_until(function() return find(events(watcher), "close", id) end, 2)
      assert.is_table(e, "no close event for conn " .. tostring(id))
      assert.equals(1000, e.code)
      assert.equals("bye", e.reason)
    end)

    it("calls on_close when the TCP connection just drops", function()
      local watcher = dev("/ev", "bob")
      local c = client.raw_ws(srv, { path = "/ev", token = "bob", device = client.unique("drop-") })
      local id = c.welcome.conn
      c:close()
      local e = wait_until(function() return find(events(watcher), "close", id) end, 2)
      assert.is_table(e, "no close event for dropped conn " .. tostring(id))
      assert.is_number(e.code)
    end)
  end)
end)
