-- Integration: offline delivery through device cursors (docs/protocol.md
-- "Resume", device cursor on routes with `acks`) and duplicate logins
-- (close 4002, route `duplicate_devices`).
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local routes = require "helpers.routes"

local function add_routes(cfg)
  -- user "olive" has two devices on the ack route; "pat" is for cursor specs
  table.insert(cfg.routes, routes.ack_route({ timeout_ms = 10000, factor = 2, max_tries = 5, jitter = 0 }, {
    ["olive-phone"]  = { user = "olive", device = "phone", kind = "mobile", channels = { "*" } },
    ["olive-tablet"] = { user = "olive", device = "tablet", kind = "mobile", channels = { "*" } },
    ["pat"]          = { user = "pat", kind = "web", channels = { "*" } },
    ["dup"]          = { user = "dupa", device = "one", kind = "web", channels = { "*" } },
  }))
  table.insert(cfg.routes, {
    path = "/ws/multi",
    type = "websocket",
    duplicate_devices = "allow",
    plugins = { routes.device_auth({
      ["multi"] = { user = "mul", device = "same", kind = "web", channels = { "*" } },
      ["bob"]   = { user = "bob", kind = "web", channels = { "*" } },
    }) },
  })
end

-- next_frame(ws, timeout): the next frame decoded, or nil and "timeout" / "closed";
-- recv_seqs(ws, ch, n): n message frames of ch (anything else is an error)
local next_frame, recv_seqs = client.next_frame, client.recv_seqs

describe("moonpush offline delivery", function()
  local srv
  local ws = session.shared_server(function()
    srv = server.start({ history = { max_messages = 1000 } }, { config_fn = add_routes })
    return srv
  end)

  it("delivers messages sent while no device was online to each device when it connects", function()
    local answers = {}
    for i = 1, 3 do
      local a = client.publish_ok(srv, { user = "olive", data = { n = i } })
      assert.equals(0, a.recipients)
      assert.equals("user:olive", a.channel)
      answers[i] = a
    end

    -- the phone connects: personal channel, no cursor yet -> everything retained
    local phone = ws({ token = "olive-phone", path = "/ws/acked" })
    assert.is_true(phone.welcome.acks)
    local seqs, msgs = recv_seqs(phone, "user:olive", 3)
    assert.same({ 1, 2, 3 }, seqs)
    for i = 1, 3 do
      assert.equals(answers[i].id, msgs[i].id)
      assert.same({ n = i }, msgs[i].data)
    end
    client.send_json(phone, { type = "ack", channel = "user:olive", seq = 3 })
    -- the ack is processed before a later frame of the same connection
    assert.is_true(client.expect_silence(phone, 0.2))
    client.close(phone)

    -- the phone reconnects: nothing old, the first frame is the live 4
    local phone2 = ws({ token = "olive-phone", path = "/ws/acked" })
    local a4 = client.publish_ok(srv, { user = "olive", data = { n = 4 } })
    assert.equals(1, a4.recipients)
    local m = client.recv_message(phone2)
    assert.equals("user:olive", m.channel)
    assert.equals(4, m.seq)
    client.send_json(phone2, { type = "ack", channel = "user:olive", seq = 4 })

    -- the tablet never acked anything: it gets all of them
    local tablet = ws({ token = "olive-tablet", path = "/ws/acked" })
    assert.same({ 1, 2, 3, 4 }, (recv_seqs(tablet, "user:olive", 4)))
    -- partial ack, reconnect: resumes after the ack
    client.send_json(tablet, { type = "ack", channel = "user:olive", seq = 2 })
    assert.is_true(client.expect_silence(tablet, 0.2))
    client.close(tablet)
    local tablet2 = ws({ token = "olive-tablet", path = "/ws/acked" })
    assert.same({ 3, 4 }, (recv_seqs(tablet2, "user:olive", 2)))
    -- and nothing more
    client.publish_ok(srv, { user = "olive", data = { n = 5 } })
    assert.equals(5, client.recv_message(tablet2).seq)
  end)

  it("resumes a subscribed channel from the device cursor without since", function()
    local ch = client.unique("cur-")
    local w = ws({ token = "pat", device = "d1", path = "/ws/acked", channels = { ch } })
    for i = 1, 3 do client.publish_ok(srv, { channel = ch, data = i }) end
    assert.same({ 1, 2, 3 }, (recv_seqs(w, ch, 3)))
    client.send_json(w, { type = "ack", channel = ch, seq = 2 })
    assert.is_true(client.expect_silence(w, 0.2))
    client.close(w)
    client.publish_ok(srv, { channel = ch, data = 4 })
    local w2 = ws({ token = "pat", device = "d1", path = "/ws/acked", channels = { ch } })
    assert.same({ 3, 4 }, (recv_seqs(w2, ch, 2)))
    -- another device of the same user has its own cursor: none yet for a
    -- non-personal channel -> no replay without since
    local other = ws({ token = "pat", device = "d2", path = "/ws/acked", channels = { ch } })
    client.publish_ok(srv, { channel = ch, data = 5 })
    assert.equals(5, client.recv_message(other).seq)
    assert.equals(5, client.recv_message(w2).seq)
  end)

  -- "without since, a device receives what it has not acked on each
  -- channel": a device that was subscribed and got 1..3 without acking
  -- them has not acked them, so they come again (at least once).
  it("redelivers what a subscribed device received but never acked when it reconnects", function()
    local ch = client.unique("unacked-")
    local w = ws({ token = "pat", device = "d3", path = "/ws/acked", channels = { ch } })
    for i = 1, 3 do client.publish_ok(srv, { channel = ch, data = i }) end
    assert.same({ 1, 2, 3 }, (recv_seqs(w, ch, 3)))
    client.close(w)
    local w2 = ws({ token = "pat", device = "d3", path = "/ws/acked", channels = { ch } })
    local m, raw = next_frame(w2, 1)
    assert.is_table(m, "nothing redelivered: 1..3 were never acked (" .. tostring(raw) .. ")")
    assert.equals("message", m.type, raw)
    assert.equals(1, m.seq)
    assert.same({ 2, 3 }, (recv_seqs(w2, ch, 2)))
  end)

  it("replays nothing old on a route without acks (only explicit since does)", function()
    client.publish_ok(srv, { user = "carol", data = "while away" })
    local w = ws({ token = "carol" })
    assert.is_false(w.welcome.acks)
    local a = client.publish_ok(srv, { user = "carol", data = "live" })
    local m = client.recv_message(w)
    assert.equals(a.seq, m.seq)
    assert.equals("live", m.data)
  end)
end)

describe("moonpush duplicate logins", function()
  local srv
  local ws = session.shared_server(function()
    srv = server.start({ history = { max_messages = 1000 } }, { config_fn = add_routes })
    return srv
  end)

  it("closes the older connection with 4002 when the same user+device connects again", function()
    local dev = client.unique("dup-")
    local first = ws({ token = "bob", device = dev })
    local second = ws({ token = "bob", device = dev })
    local code, reason = client.expect_close(first)
    assert.equals(4002, code)
    assert.equals("replaced by a newer connection", reason)
    local a = client.publish_ok(srv, { user = "bob", data = "to the newer one" })
    assert.equals(1, a.recipients)
    local m = client.recv_message(second)
    assert.equals("to the newer one", m.data)
  end)

  it("keeps the same device of another user, and another device of the same user", function()
    local a1 = ws({ token = "alice-phone" })
    local a2 = ws({ token = "alice-laptop" })
    local b = ws({ token = "bob", device = "phone" })
    local ans = client.publish_ok(srv, { user = "alice", data = "both" })
    assert.equals(2, ans.recipients)
    assert.equals("both", client.recv_message(a1).data)
    assert.equals("both", client.recv_message(a2).data)
    client.publish_ok(srv, { user = "bob", data = "bob" })
    assert.equals("bob", client.recv_message(b).data)
  end)

  it("replaces on an ack route too", function()
    local first = ws({ token = "dup", path = "/ws/acked" })
    local second = ws({ token = "dup", path = "/ws/acked" })
    local code, reason = client.expect_close(first)
    assert.equals(4002, code)
    assert.equals("replaced by a newer connection", reason)
    client.publish_ok(srv, { user = "dupa", data = "x" })
    assert.equals("x", client.recv_message(second).data)
  end)

  it("keeps both connections open, both receiving, with duplicate_devices = allow", function()
    local first = ws({ token = "multi", path = "/ws/multi" })
    local second = ws({ token = "multi", path = "/ws/multi" })
    assert.equals(first.welcome.device, second.welcome.device)
    local a = client.publish_ok(srv, { user = "mul", data = "to both" })
    assert.equals(2, a.recipients)
    assert.equals("to both", client.recv_message(first).data)
    assert.equals("to both", client.recv_message(second).data)
    -- the first one was not closed in the meantime
    local f, why = next_frame(first, 0.2)
    assert.is_nil(f)
    assert.equals("timeout", why)
  end)

  it("does not replace a connection of the same user+device on another route", function()
    local dev = client.unique("cross-")
    local on_ws = ws({ token = "bob", device = dev })
    local on_multi = ws({ token = "bob", device = dev, path = "/ws/multi" })
    local a = client.publish_ok(srv, { user = "bob", data = "routes" })
    assert.equals(2, a.recipients)
    assert.equals("routes", client.recv_message(on_ws).data)
    assert.equals("routes", client.recv_message(on_multi).data)
  end)
end)
