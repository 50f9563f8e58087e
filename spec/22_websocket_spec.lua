-- Integration: the WebSocket side (docs/protocol.md "WebSocket").
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local util = require "helpers.util"

describe("moonpush WebSocket", function()
  local srv
  -- connect and remember, so every test's sockets get closed
  local ws = session.shared_server(function()
    srv = server.start()
    return srv
  end)

  local function bob(extra)
    return ws(util.with({ token = "bob", device = client.unique("dev-") }, extra))
  end

  local function contains(list, v)
    for _, x in ipairs(list) do if x == v then return true end end
    return false
  end

  describe("handshake", function()
    it("answers 101 with the RFC 6455 Sec-WebSocket-Accept", function()
      local c = client.raw_ws(srv, { token = "bob", device = client.unique("hs-") })
      assert.equals(101, c.handshake.status)
      assert.matches("[Ww]eb[Ss]ocket", c.handshake.headers["upgrade"])
      assert.matches("[Uu]pgrade", c.handshake.headers["connection"])
      c:close()
    end)

    it("rejects a connect without a token with 401 unauthorized", function()
      local resp, err, c = client.raw_request(srv, client.upgrade_request(srv, {}))
      c:close()
      assert.is_table(resp, err)
      assert.equals(401, resp.status)
      assert.equals("unauthorized", resp.json and resp.json.error)
    end)

    it("rejects an unknown token with 401 unauthorized", function()
      local resp, err, c = client.raw_request(srv, client.upgrade_request(srv, { token = "mallory" }))
      c:close()
      assert.is_table(resp, err)
      assert.equals(401, resp.status)
      assert.equals("unauthorized", resp.json and resp.json.error)
    end)

    it("rejects the publisher token on the websocket route with 401", function()
      local resp, err, c = client.raw_request(srv, client.upgrade_request(srv, { token = server.PUBLISHER }))
      c:close()
      assert.is_table(resp, err)
      assert.equals(401, resp.status)
    end)

    it("fails the lua-http client's connect on 401", function()
      local w, err = client.ws_try(srv, { token = "mallory" })
      assert.is_nil(w)
      assert.is_not_nil(err)
    end)

    it("accepts the token as Authorization: Bearer", function()
      local w = ws({ headers = { authorization = "Bearer alice-phone" } })
      assert.equals("alice", w.welcome.user)
      assert.equals("phone", w.welcome.device)
    end)

    it("rejects an unknown Authorization: Bearer token with 401", function()
      local resp, err, c = client.raw_request(srv, client.upgrade_request(srv,
        { headers = { Authorization = "Bearer mallory" } }))
      c:close()
      assert.is_table(resp, err)
      assert.equals(401, resp.status)
      assert.equals("unauthorized", resp.json and resp.json.error)
    end)

    it("subscribes the channels= of the query at connect", function()
      local w = bob({ channels = { "news", "sports" } })
      assert.is_true(contains(w.welcome.channels, "news"))
      assert.is_true(contains(w.welcome.channels, "sports"))
      client.publish_ok(srv, { channel = "sports", data = "goal" })
      local m = client.recv_message(w)
      assert.equals("sports", m.channel)
      assert.equals("goal", m.data)
    end)

    it("fails the handshake with 403 forbidden for a channel the token may not subscribe", function()
      local resp, err, c = client.raw_request(srv, client.upgrade_request(srv,
        { token = "alice-laptop", channels = { "news", "orders:1" } }))
      c:close()
      assert.is_table(resp, err)
      assert.equals(403, resp.status)
      assert.equals("forbidden", resp.json and resp.json.error)
    end)

    it("fails the handshake with 400 bad_channel for a malformed channel in channels=", function()
      local resp, err, c = client.raw_request(srv, client.upgrade_request(srv,
        { token = "bob", query = "token=bob&channels=" .. ("x"):rep(129) }))
      c:close()
      assert.is_table(resp, err)
      assert.equals(400, resp.status)
      assert.equals("bad_channel", resp.json and resp.json.error)
    end)
  end)

  describe("welcome frame", function()
    it("is the first frame and names conn, user, device, kind and channels", function()
      local w = ws({ token = "alice-phone", channels = { "news" } })
      local wl = w.welcome
      assert.equals("welcome", wl.type)
      assert.is_not_nil(wl.conn)
      assert.is_true(type(wl.conn) == "string" or type(wl.conn) == "number")
      assert.equals("alice", wl.user)
      assert.equals("phone", wl.device)
      assert.equals("mobile", wl.kind)
      assert.is_table(wl.channels)
      assert.is_true(contains(wl.channels, "news"))
      -- nothing but the personal channel and the requested ones
      for _, ch in ipairs(wl.channels) do
        assert.is_true(ch == "news" or ch == "user:alice", "unexpected channel " .. tostring(ch))
      end
    end)

    it("takes the device from the query when the token has none", function()
      local w = ws({ token = "bob", device = "kiosk-7" })
      assert.equals("bob", w.welcome.user)
      assert.equals("kiosk-7", w.welcome.device)
      assert.equals("web", w.welcome.kind)
    end)

    it("prefers the token's device over the query's", function()
      local w = ws({ token = "alice-laptop", device = "not-this" })
      assert.equals("laptop", w.welcome.device)
    end)

    it("names the device default when neither token nor query gives one", function()
      local w = ws({ token = "carol" })
      assert.equals("default", w.welcome.device)
      assert.equals("pos", w.welcome.kind)
    end)

    it("gives each connection a distinct conn", function()
      local a = bob()
      local b = bob()
      assert.are_not.equal(a.welcome.conn, b.welcome.conn)
    end)
  end)

  describe("messages", function()
    it("carry type, channel, seq, id and data", function()
      local ch = client.unique("m-")
      local w = bob({ channels = { ch } })
      local a = client.publish_ok(srv, { channel = ch, data = { title = "hello" } })
      local m = client.recv_message(w)
      assert.equals(ch, m.channel)
      assert.equals(a.seq, m.seq)
      assert.equals(a.id, m.id)
      assert.same({ title = "hello" }, m.data)
    end)

    it("re-serialise data compactly, keeping key order", function()
      local ch = client.unique("ko-")
      local w = bob({ channels = { ch } })
      client.publish_ok(srv, '{"channel":"' .. ch .. '", "data" : { "z" : 1, "a" : [ 1 , 2 ], "m" : { "y" : null , "b" : "s" } } }')
      local m, raw = client.recv_message(w)
      assert.equals(ch, m.channel)
      assert.truthy(raw:find('"data":{"z":1,"a":[1,2],"m":{"y":null,"b":"s"}}', 1, true),
        "data not compact or key order lost: " .. raw)
    end)

    it("reach every connection of a user through user:<name>", function()
      local w = ws({ token = "alice-phone" })
      local a = client.publish_ok(srv, { user = "alice", data = "hi alice" })
      local m = client.recv_message(w)
      assert.equals("user:alice", m.channel)
      assert.equals(a.seq, m.seq)
      assert.equals("hi alice", m.data)
    end)

    it("pass unicode data through unchanged", function()
      local ch = client.unique("u-")
      local w = bob({ channels = { ch } })
      client.publish_ok(srv, { channel = ch, data = "héllo ✓ 😀" })
      local m = client.recv_message(w)
      assert.equals("héllo ✓ 😀", m.data)
    end)
  end)

  describe("subscribe", function()
    it("answers subscribed and then delivers the channel", function()
      local ch = client.unique("sub-")
      local w = bob()
      local ans = client.request(w, { type = "subscribe", channel = ch })
      assert.same({ type = "subscribed", channel = ch }, client.pick(ans))
      client.publish_ok(srv, { channel = ch, data = 1 })
      local m = client.recv_message(w)
      assert.equals(ch, m.channel)
    end)

    it("allows a channel matching a prefix pattern", function()
      local w = ws({ token = "alice-phone" })
      local ans = client.request(w, { type = "subscribe", channel = "orders:42" })
      assert.same({ type = "subscribed", channel = "orders:42" }, client.pick(ans))
    end)

    it("answers error forbidden for a channel the token may not subscribe", function()
      local w = ws({ token = "alice-laptop" })
      local ans = client.request(w, { type = "subscribe", channel = "orders:42" })
      assert.equals("error", ans.type)
      assert.equals("forbidden", ans.code)
      assert.equals("orders:42", ans.channel)
      assert.is_string(ans.message)
      -- and does not deliver it: the next frame is the later user message
      client.publish_ok(srv, { channel = "orders:42", data = "secret" })
      client.publish_ok(srv, { user = "alice", data = "marker" })
      local m = client.recv_message(w)
      assert.equals("user:alice", m.channel)
      assert.equals("marker", m.data)
    end)

    it("does not let a prefix pattern match a shorter name", function()
      local w = ws({ token = "alice-phone" })
      local ans = client.request(w, { type = "subscribe", channel = "orders" })
      assert.equals("error", ans.type)
      assert.equals("forbidden", ans.code)
    end)

    for _, bad in ipairs({ "", "has space", "semi;colon", "slash/x", "é", ("x"):rep(129) }) do
      it("answers error bad_channel for the channel name " .. string.format("%q", bad:sub(1, 20)), function()
        local w = bob()
        local ans = client.request(w, { type = "subscribe", channel = bad })
        assert.equals("error", ans.type)
        assert.equals("bad_channel", ans.code)
      end)
    end

    it("accepts a 128-byte name with every allowed character class", function()
      local name = ("Az09_-.:@"):rep(15):sub(1, 128)
      assert.equals(128, #name)
      local w = bob()
      local ans = client.request(w, { type = "subscribe", channel = name })
      assert.same({ type = "subscribed", channel = name }, client.pick(ans))
    end)

    it("is idempotent: subscribing twice answers subscribed and delivers once", function()
      local ch = client.unique("twice-")
      local w = bob()
      assert.same({ type = "subscribed", channel = ch }, client.pick(client.request(w, { type = "subscribe", channel = ch })))
      assert.same({ type = "subscribed", channel = ch }, client.pick(client.request(w, { type = "subscribe", channel = ch })))
      local a = client.publish_ok(srv, { channel = ch, data = 1 })
      assert.equals(1, a.recipients)
      client.publish_ok(srv, { user = "bob", data = "marker" })
      local m1 = client.recv_message(w)
      local m2 = client.recv_message(w)
      assert.equals(ch, m1.channel)
      assert.equals("user:bob", m2.channel)
      assert.equals("marker", m2.data)
    end)
  end)

  describe("unsubscribe", function()
    it("answers unsubscribed and stops delivery", function()
      local ch = client.unique("uns-")
      local w = bob({ channels = { ch } })
      assert.same({ type = "unsubscribed", channel = ch }, client.request(w, { type = "unsubscribe", channel = ch }))
      client.publish_ok(srv, { channel = ch, data = "gone" })
      client.publish_ok(srv, { user = "bob", data = "marker" })
      local m = client.recv_message(w)
      assert.equals("user:bob", m.channel)
      assert.equals("marker", m.data)
    end)

    it("answers error not_subscribed for a channel not subscribed", function()
      local w = bob()
      local ans = client.request(w, { type = "unsubscribe", channel = "never-subscribed" })
      assert.equals("error", ans.type)
      assert.equals("not_subscribed", ans.code)
      assert.equals("never-subscribed", ans.channel)
    end)

    it("refuses to leave the personal channel user:<me> with error forbidden", function()
      local w = bob()
      local ans = client.request(w, { type = "unsubscribe", channel = "user:bob" })
      assert.equals("error", ans.type)
      assert.equals("forbidden", ans.code)
      assert.equals("user:bob", ans.channel)
      -- still on it
      client.publish_ok(srv, { user = "bob", data = "still here" })
      local m = client.recv_message(w)
      assert.equals("user:bob", m.channel)
    end)
  end)

  describe("bad client frames", function()
    local cases = {
      { "text that is not JSON", "hello there", "bad_frame" },
      { "truncated JSON", '{"type":"subscribe"', "bad_frame" },
      { "a JSON array", '["subscribe","news"]', "bad_frame" },
      { "a JSON string", '"subscribe"', "bad_frame" },
      { "a JSON number", "42", "bad_frame" },
      { "an object without type", '{"channel":"news"}', "bad_frame" },
      { "an object with a numeric type", '{"type":7}', "bad_frame" },
      { "an unknown type", '{"type":"dance"}', "unknown_type" },
      { "an empty text frame", "", "bad_frame" },
    }
    for _, c in ipairs(cases) do
      it("answers error " .. c[3] .. " to " .. c[1] .. " and stays open", function()
        local w = bob()
        local ans = client.request(w, c[2])
        assert.equals("error", ans.type)
        assert.equals(c[3], ans.code)
        assert.is_string(ans.message)
        client.publish_ok(srv, { user = "bob", data = "after" })
        local m = client.recv_message(w)
        assert.equals("after", m.data)
      end)
    end

    it("answers error bad_channel (or bad_frame) to a subscribe without a channel", function()
      local w = bob()
      local ans = client.request(w, { type = "subscribe" })
      assert.equals("error", ans.type)
      assert.is_true(ans.code == "bad_channel" or ans.code == "bad_frame", "code " .. tostring(ans.code))
    end)
  end)

  describe("control frames", function()
    it("answers a ping with a pong carrying the same payload", function()
      local c = client.raw_ws(srv, { token = "bob", device = client.unique("p-") })
      assert(c:send_frame({ opcode = client.OP.ping, payload = "are you there" }))
      local f, err = c:read_frame()
      assert.is_table(f, err)
      assert.equals(client.OP.pong, f.opcode)
      assert.equals("are you there", f.payload)
      assert.is_false(f.masked)
      c:close()
    end)

    it("answers a client close with close 1000 bye", function()
      local c = client.raw_ws(srv, { token = "bob", device = client.unique("c-") })
      assert(c:send_frame({ opcode = client.OP.close, payload = client.close_payload(1000, "done") }))
      local code, reason = c:expect_close()
      assert.equals(1000, code)
      assert.equals("bye", reason)
      assert.is_true((c:closed_within(2)))
      c:close()
    end)

    -- docs/protocol.md: the answer to a client close is 1000 "bye", whatever
    -- code it carried (RFC 6455 lets the answer choose; echoing would send
    -- a client's 1001 or 4000 back with "server shutting down" or "idle
    -- timeout", things that did not happen).
    for _, code in ipairs({ 3000, 4999, 1001, 4000, 1011 }) do
      it("answers a client close with code " .. code .. " with 1000 bye, not an echo", function()
        local c = client.raw_ws(srv, { token = "bob", device = client.unique("c-") })
        assert(c:send_frame({ opcode = client.OP.close, payload = client.close_payload(code, "mine") }))
        local got, reason = c:expect_close()
        assert.equals(1000, got)
        assert.equals("bye", reason)
        assert.is_true((c:closed_within(2)))
        c:close()
      end)
    end

    it("answers a client close without a code with 1000 bye", function()
      local c = client.raw_ws(srv, { token = "bob", device = client.unique("c-") })
      assert(c:send_frame({ opcode = client.OP.close, payload = "" }))
      local got, reason = c:expect_close()
      assert.equals(1000, got)
      assert.equals("bye", reason)
      c:close()
    end)

    it("answers a client close with an invalid code (999) with 1002 protocol error", function()
      local c = client.raw_ws(srv, { token = "bob", device = client.unique("c-") })
      assert(c:send_frame({ opcode = client.OP.close, payload = client.close_payload(999, "") }))
      local got, reason = c:expect_close()
      assert.equals(1002, got)
      assert.equals("protocol error", reason)
      c:close()
    end)

    it("answers a lua-http client's close with 1000", function()
      local w = client.ws(srv, { token = "bob", device = client.unique("c-") })
      assert.is_true(w:close(1000, "done", 2))
      assert.equals(1000, w.got_close_code)
    end)

    it("reassembles a fragmented text message", function()
      local ch = client.unique("frag-")
      local c = client.raw_ws(srv, { token = "bob", device = client.unique("f-") })
      local msg = '{"type":"subscribe","channel":"' .. ch .. '"}'
      assert(c:send_frame({ opcode = client.OP.text, payload = msg:sub(1, 5), fin = false }))
      -- a ping may be interleaved between fragments
      assert(c:send_frame({ opcode = client.OP.ping, payload = "mid" }))
      assert(c:send_frame({ opcode = client.OP.cont, payload = msg:sub(6, 12), fin = false }))
      assert(c:send_frame({ opcode = client.OP.cont, payload = msg:sub(13), fin = true }))
      local pong = c:read_frame()
      assert.equals(client.OP.pong, pong and pong.opcode)
      local ans, err = c:read_json()
      assert.is_table(ans, err)
      assert.same({ type = "subscribed", channel = ch }, client.pick(ans))
      c:close()
    end)
  end)
end)

describe("moonpush WebSocket subscription limit", function()
  local srv
  local MAX_SUBS = 2

  lazy_setup(function()
    srv = server.start({ limits = { max_subscriptions = MAX_SUBS } })
  end)

  lazy_teardown(function()
    if srv then assert.equals(0, srv:stop()) end
  end)

  it("answers error too_many_subscriptions past max_subscriptions, not counting user:<me>", function()
    local w = client.ws(srv, { token = "bob", device = "subs" })
    for i = 1, MAX_SUBS do
      local ans = client.request(w, { type = "subscribe", channel = "s" .. i })
      assert.same({ type = "subscribed", channel = "s" .. i }, client.pick(ans))
    end
    local ans = client.request(w, { type = "subscribe", channel = "s-extra" })
    assert.equals("error", ans.type)
    assert.equals("too_many_subscriptions", ans.code)
    assert.equals("s-extra", ans.channel)
    -- re-subscribing a channel it has is not a new subscription
    assert.same({ type = "subscribed", channel = "s1" }, client.pick(client.request(w, { type = "subscribe", channel = "s1" })))
    -- after leaving one there is room again
    assert.same({ type = "unsubscribed", channel = "s1" }, client.request(w, { type = "unsubscribe", channel = "s1" }))
    assert.same({ type = "subscribed", channel = "s-extra" }, client.pick(client.request(w, { type = "subscribe", channel = "s-extra" })))
    client.close(w)
  end)
end)
