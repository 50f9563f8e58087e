-- Integration: bad input to the delivery features (acks, since/epoch,
-- publish ttl/store). Each is refused as docs/protocol.md says, the
-- connection stays usable, and another client is still served.
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local routes = require "helpers.routes"

local json = client.json

local function add_routes(cfg)
  -- long timeout: no resend interferes with these specs
  table.insert(cfg.routes, routes.ack_route({ timeout_ms = 30000, factor = 2, max_tries = 5, jitter = 0 }, {
    ["acker"] = { user = "acker", kind = "web", channels = { "*" } },
  }))
end

describe("moonpush delivery: bad input", function()
  local srv
  local ws = session.shared_server(function()
    srv = server.start({ history = { max_messages = 1000 } }, { config_fn = add_routes })
    return srv
  end)

  local function acked(ch)
    return ws({ token = "acker", device = client.unique("ad-"), path = "/ws/acked", channels = { ch } })
  end

  -- The connection is still open and delivering on ch: a publish arrives
  -- as the next frame with the expected seq.
  local function still_delivers(w, ch, seq)
    local a = client.publish_ok(srv, { channel = ch, data = "still here" })
    if seq then assert.equals(seq, a.seq) end
    local m, raw = client.recv_json(w)
    assert.equals("message", m.type, raw)
    assert.equals(ch, m.channel)
    assert.equals(a.seq, m.seq)
  end

  -- after the connections of the test are closed: another client is still served
  after_each(function()
    client.assert_serves(srv)
  end)

  describe("ack frames", function()
    it("answers error bad_ack for a seq never sent on that channel; the connection stays and receives", function()
      local ch = client.unique("ba-")
      local w = acked(ch)
      client.publish_ok(srv, { channel = ch, data = 1 })
      assert.equals(1, client.recv_message(w).seq)
      local ans = client.request(w, { type = "ack", channel = ch, seq = 5 })
      assert.equals("error", ans.type, json.encode(ans))
      assert.equals("bad_ack", ans.code)
      assert.equals(ch, ans.channel)
      assert.is_string(ans.message)
      still_delivers(w, ch, 2)
      -- a valid ack afterwards is taken silently
      client.send_json(w, { type = "ack", channel = ch, seq = 2 })
      assert.is_true(client.expect_silence(w, 0.2))
    end)

    it("answers error bad_ack for an ack on a channel with nothing sent yet", function()
      local ch = client.unique("ba0-")
      local w = acked(ch)
      local ans = client.request(w, { type = "ack", channel = ch, seq = 1 })
      assert.equals("error", ans.type, json.encode(ans))
      assert.equals("bad_ack", ans.code)
      still_delivers(w, ch, 1)
    end)

    it("ignores an ack at or below the last one", function()
      local ch = client.unique("low-")
      local w = acked(ch)
      for i = 1, 3 do client.publish_ok(srv, { channel = ch, data = i }) end
      for i = 1, 3 do assert.equals(i, client.recv_message(w).seq) end
      client.send_json(w, { type = "ack", channel = ch, seq = 3 })
      client.send_json(w, { type = "ack", channel = ch, seq = 3 })
      client.send_json(w, { type = "ack", channel = ch, seq = 1 })
      -- no answer to any of them: the next frame is the next message
      still_delivers(w, ch, 4)
    end)

    it("answers error acks_disabled on a route without acks", function()
      local ch = client.unique("nd-")
      local w = ws({ token = "bob", device = client.unique("d-"), channels = { ch } })
      client.publish_ok(srv, { channel = ch, data = 1 })
      assert.equals(1, client.recv_message(w).seq)
      local ans = client.request(w, { type = "ack", channel = ch, seq = 1 })
      assert.equals("error", ans.type, json.encode(ans))
      assert.equals("acks_disabled", ans.code)
      still_delivers(w, ch, 2)
    end)

    it("answers error not_subscribed for an ack on a channel not subscribed", function()
      local ch = client.unique("ns-")
      local w = acked(ch)
      local ans = client.request(w, { type = "ack", channel = "other-" .. ch, seq = 1 })
      assert.equals("error", ans.type, json.encode(ans))
      assert.equals("not_subscribed", ans.code)
      still_delivers(w, ch, 1)
    end)

    for _, c in ipairs({
      { "a string seq", '"1"' },
      { "a fractional seq", "1.5" },
      { "seq 0", "0" },
      { "a negative seq", "-1" },
      { "a null seq", "null" },
      { "a boolean seq", "true" },
      { "no seq", nil },
    }) do
      it("answers error bad_frame for an ack with " .. c[1], function()
        local ch = client.unique("bf-")
        local w = acked(ch)
        client.publish_ok(srv, { channel = ch, data = 1 })
        assert.equals(1, client.recv_message(w).seq)
        local frame = '{"type":"ack","channel":"' .. ch .. '"' .. (c[2] and (',"seq":' .. c[2]) or "") .. "}"
        local ans = client.request(w, frame)
        assert.equals("error", ans.type, json.encode(ans))
        assert.equals("bad_frame", ans.code)
        still_delivers(w, ch, 2)
      end)
    end
  end)

  describe("since and epoch", function()
    it("answers reset ahead for a subscribe frame with since beyond the channel's head", function()
      local ch = client.unique("ah-")
      for i = 1, 3 do client.publish_ok(srv, { channel = ch, data = i }) end
      local w = ws({ token = "bob", device = client.unique("d-") })
      local sub = client.request(w, { type = "subscribe", channel = ch })
      local w2 = ws({ token = "bob", device = client.unique("d-") })
      local ans = client.request(w2, { type = "subscribe", channel = ch, since = 1000, epoch = sub.epoch })
      assert.equals("subscribed", ans.type, json.encode(ans))
      local r = client.recv_json(w2)
      assert.equals("reset", r.type, json.encode(r))
      assert.equals("ahead", r.reason)
      assert.equals(3, r.last_seq)
      still_delivers(w2, ch, 4)
    end)

    it("answers reset ahead for since.<channel> beyond the head at connect, and replays nothing", function()
      local ch = client.unique("ahc-")
      client.publish_ok(srv, { channel = ch, data = 1 })
      local w = ws({ query = client.query_string({ token = "bob", device = client.unique("d-"), channels = ch,
        ["since." .. ch] = 99 }) })
      local r = client.recv_json(w)
      assert.equals("reset", r.type, json.encode(r))
      assert.equals("ahead", r.reason)
      assert.equals(ch, r.channel)
      assert.equals(1, r.last_seq)
      still_delivers(w, ch, 2)
    end)

    -- "-3" is an integer but no position (seqs start at 1, since >= 0): it
    -- must not be read as a huge unsigned number (that would be "ahead")
    -- 1e23 does not fit 64 bits: no seq, not "ahead" either
    for _, bad in ipairs({ "abc", "-3", "1.5", "", "12abc", "99999999999999999999999" }) do
      it("answers error bad_since for since.<channel>=" .. string.format("%q", bad) .. " at connect; the connection stays", function()
        local ch = client.unique("bs-")
        client.publish_ok(srv, { channel = ch, data = 1 })
        local w = ws({ query = "token=bob&device=" .. client.unique("d-") .. "&channels=" .. ch ..
          "&since." .. ch .. "=" .. bad })
        local e = client.recv_json(w)
        assert.equals("error", e.type, json.encode(e))
        assert.equals("bad_since", e.code)
        assert.equals(ch, e.channel)
        -- still open: the personal channel delivers
        local a = client.publish_ok(srv, { user = "bob", data = "after bad since" })
        local m = client.recv_message(w)
        assert.equals("user:bob", m.channel)
        assert.equals(a.seq, m.seq)
        -- and the channel of channels= is subscribed (no replay: since was refused)
        local found = false
        for _, c in ipairs(w.welcome.channels) do if c == ch then found = true end end
        assert.is_true(found, "welcome lists " .. ch)
        still_delivers(w, ch, 2)
      end)
    end

    for _, c in ipairs({
      { "a negative since", "-1" },
      { "a string since", '"5"' },
      { "a fractional since", "2.5" },
      { "a boolean since", "true" },
    }) do
      it("answers error bad_frame to a subscribe with " .. c[1], function()
        local ch = client.unique("sbf-")
        client.publish_ok(srv, { channel = ch, data = 1 })
        local w = ws({ token = "bob", device = client.unique("d-") })
        local ans = client.request(w, '{"type":"subscribe","channel":"' .. ch .. '","since":' .. c[2] .. ',"epoch":"x"}')
        assert.equals("error", ans.type, json.encode(ans))
        assert.equals("bad_frame", ans.code)
        -- the connection stays: a later good subscribe works
        local ok = client.request(w, { type = "subscribe", channel = ch })
        assert.equals("subscribed", ok.type, json.encode(ok))
        still_delivers(w, ch, 2)
      end)
    end
  end)

  describe("epoch", function()
    -- An epoch is a string the server gave out. Read as "no epoch", a bad
    -- one would replay from since with no reset: it is refused instead.
    for _, c in ipairs({
      { "a number", "5" },
      { "a boolean", "true" },
      { "an object", "{}" },
      { "an array", '["e"]' },
      { "null", "null" },
      { "a string longer than any epoch", '"' .. string.rep("e", 40) .. '"' },
    }) do
      it("answers error bad_frame to a subscribe whose epoch is " .. c[1] .. ", and does not subscribe", function()
        local ch = client.unique("ebf-")
        for i = 1, 3 do client.publish_ok(srv, { channel = ch, data = i }) end
        local w = ws({ token = "bob", device = client.unique("d-") })
        local ans = client.request(w, '{"type":"subscribe","channel":"' .. ch .. '","since":1,"epoch":' .. c[2] .. '}')
        assert.equals("error", ans.type, json.encode(ans))
        assert.equals("bad_frame", ans.code)
        assert.equals(ch, ans.channel)
        assert.is_string(ans.message)
        -- nothing was replayed and the channel is not subscribed: the next
        -- frame is the answer to a good subscribe
        local ok, raw = client.request(w, { type = "subscribe", channel = ch })
        assert.equals("subscribed", ok.type, raw)
        still_delivers(w, ch, 4)
      end)
    end

    it("resumes by seq alone for an empty epoch (what the server gives for a channel never published)", function()
      local ch = client.unique("e0-")
      local w0 = ws({ token = "bob", device = client.unique("d-") })
      local first = client.request(w0, { type = "subscribe", channel = ch })
      assert.equals("", first.epoch)
      for i = 1, 3 do client.publish_ok(srv, { channel = ch, data = i }) end
      local w = ws({ token = "bob", device = client.unique("d-") })
      local ans = client.request(w, { type = "subscribe", channel = ch, since = 1, epoch = "" })
      assert.equals("subscribed", ans.type, json.encode(ans))
      assert.same({ 2, 3 }, (client.recv_seqs(w, ch, 2)))
      still_delivers(w, ch, 4)
    end)

    it("answers error bad_epoch for an epoch.<channel> longer than any epoch at connect; the connection stays", function()
      local ch = client.unique("ebc-")
      client.publish_ok(srv, { channel = ch, data = 1 })
      local w = ws({ query = client.query_string({ token = "bob", device = client.unique("d-"), channels = ch,
        ["since." .. ch] = 0, ["epoch." .. ch] = string.rep("e", 40) }) })
      local e = client.recv_json(w)
      assert.equals("error", e.type, json.encode(e))
      assert.equals("bad_epoch", e.code)
      assert.equals(ch, e.channel)
      -- subscribed (channels=), nothing replayed
      still_delivers(w, ch, 2)
    end)
  end)

  describe("publish options", function()
    for _, c in ipairs({
      { "ttl negative", { ttl = -1 } },
      { "ttl zero", { ttl = 0 } },
      { "ttl a string", { ttl = "10" } },
      { "ttl over a year", { ttl = 366 * 86400 } },
      { "ttl a boolean", { ttl = true } },
      { "store a string", { store = "false" } },
      { "store a number", { store = 0 } },
      { "store null", nil, '"store":null' },
    }) do
      it("answers 400 bad_message for " .. c[1] .. ", stores and delivers nothing", function()
        local ch = client.unique("po-")
        local w = ws({ token = "bob", device = client.unique("d-"), channels = { ch } })
        local body
        if c[3] then
          body = '{"channel":"' .. ch .. '","data":1,' .. c[3] .. "}"
        else
          local item = { channel = ch, data = 1 }
          for k, v in pairs(c[2]) do item[k] = v end
          body = json.encode(item)
        end
        local st, ans, _, raw = client.publish(srv, body)
        assert.equals(400, st, raw)
        assert.equals("bad_message", ans and ans.error)
        -- the channel did not take a seq: the next good publish is seq 1
        local a = client.publish_ok(srv, { channel = ch, data = "good" })
        assert.equals(1, a.seq)
        local m = client.recv_message(w)
        assert.equals("good", m.data)
      end)
    end

    it("rejects a whole batch with a bad ttl, naming the item", function()
      local ch = client.unique("pb-")
      local st, ans, _, raw = client.publish(srv, {
        { channel = ch, data = 1 },
        { channel = ch, data = 2, ttl = -5 },
      })
      assert.equals(400, st, raw)
      assert.equals("bad_message", ans and ans.error)
      -- the second item: "item 2" counting from 1, "item 1" from 0
      assert.truthy(tostring(ans.message):find("item [12]"), "message does not name the item: " .. tostring(ans.message))
      local a = client.publish_ok(srv, { channel = ch, data = "good" })
      assert.equals(1, a.seq)
    end)

    it("accepts ttl of a year and fractional-free positive ttl", function()
      local ch = client.unique("pok-")
      assert.equals(1, client.publish_ok(srv, { channel = ch, data = 1, ttl = 365 * 86400 }).seq)
      assert.equals(2, client.publish_ok(srv, { channel = ch, data = 2, ttl = 1 }).seq)
      assert.equals(3, client.publish_ok(srv, { channel = ch, data = 3, store = false }).seq)
    end)
  end)
end)
