-- Integration: acks (docs/protocol.md "Acks", route `acks`): an unacked
-- message is resent with every later unacked one of its channel, the wait
-- growing by `factor`; after `max_tries` sends the connection is closed
-- with 4004 and the device resumes from its cursor on reconnect.
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local routes = require "helpers.routes"

local TIMEOUT_MS, FACTOR, MAX_TRIES = 200, 2, 4

-- Device tokens of the ack route: one user per token, so no test sees
-- another test's personal-channel messages (a device with no cursor gets
-- everything retained on its user: channel).
local function ack_tokens()
  local t = {}
  for i = 1, 20 do
    t["ack-" .. i] = { user = "acker" .. i, kind = "web", channels = { "*" } }
  end
  return t
end

local function add_routes(cfg)
  table.insert(cfg.routes, routes.ack_route(
    { timeout_ms = TIMEOUT_MS, factor = FACTOR, max_tries = MAX_TRIES, jitter = 0 }, ack_tokens()))
end

-- Next frame, or nil and "timeout" / "closed".
local next_frame = client.next_frame

-- Frames of a resend round that crossed our ack: read what arrives within
-- 0.1 s (messages of `ch` only), return their seqs.
local function drain_crossed(ws, ch)
  local seqs = {}
  while true do
    local f, raw = next_frame(ws, 0.1)
    if not f then return seqs end
    assert(f.type == "message" and f.channel == ch, "unexpected frame " .. tostring(raw))
    seqs[#seqs + 1] = f.seq
  end
end

describe("moonpush acks", function()
  local srv
  local ws = session.shared_server(function()
    srv = server.start({ history = { max_messages = 1000 } }, { config_fn = add_routes })
    return srv
  end)
  local next_token = 0

  -- a connection on the ack route with a user nobody else uses
  local function acked(extra)
    next_token = next_token + 1
    local q = { token = "ack-" .. next_token, device = client.unique("dev-"), path = "/ws/acked" }
    for k, v in pairs(extra or {}) do q[k] = v end
    return ws(q), q
  end

  it("says acks = true in the welcome of an ack route and false elsewhere", function()
    local w = acked()
    assert.is_true(w.welcome.acks)
    local plain = ws({ token = "bob", device = client.unique("p-") })
    assert.is_false(plain.welcome.acks)
  end)

  it("resends a never-acked message after 200, 400, 800 ms, then closes with 4004 ack timeout", function()
    local ch = client.unique("nack-")
    local w = acked({ channels = { ch } })
    local a = client.publish_ok(srv, { channel = ch, data = "ack me" })
    local arrivals = {}
    local code, reason
    local deadline = client.now() + 6
    while client.now() < deadline do
      local m, raw = next_frame(w, deadline - client.now())
      if m == nil then
        if raw == "closed" then code, reason = w.got_close_code, w.got_close_message end
        break
      end
      assert.equals("message", m.type, raw)
      assert.equals(ch, m.channel, raw)
      assert.equals(a.seq, m.seq, raw)
      assert.equals(a.id, m.id, "a resend carries the same id")
      assert.equals("ack me", m.data)
      arrivals[#arrivals + 1] = client.now()
    end
    local closed_at = client.now()
    assert.equals(MAX_TRIES, #arrivals, "sends of the unacked message (max_tries)")
    local expected = { 0.2, 0.4, 0.8 }
    local gaps = {}
    for i = 2, #arrivals do gaps[i - 1] = arrivals[i] - arrivals[i - 1] end
    for i, want in ipairs(expected) do
      local got = gaps[i]
      assert.is_true(got >= want * 0.85 and got <= want * 1.35 + 0.05,
        string.format("gap %d is %.3f s, expected about %.3f s (all gaps: %s)", i, got, want,
          table.concat((function() local t = {} for _, g in ipairs(gaps) do t[#t + 1] = string.format("%.3f", g) end return t end)(), ", ")))
    end
    assert.equals(4004, code, "close code after max_tries sends")
    assert.equals("ack timeout", reason)
    -- not closed before the last send's wait could have run out
    assert.is_true(closed_at - arrivals[#arrivals] >= 0.8 * 0.85,
      string.format("closed %.3f s after the last send", closed_at - arrivals[#arrivals]))
  end)

  it("does not resend a message that was acked (silence for more than 2x timeout_ms)", function()
    local ch = client.unique("ack-")
    local w = acked({ channels = { ch } })
    local a = client.publish_ok(srv, { channel = ch, data = 1 })
    local m = client.recv_message(w)
    assert.equals(a.seq, m.seq)
    client.send_json(w, { type = "ack", channel = ch, seq = m.seq })
    assert.is_true(client.expect_silence(w, 3 * TIMEOUT_MS / 1000))
    -- still open and delivering
    local b = client.publish_ok(srv, { channel = ch, data = 2 })
    assert.equals(b.seq, client.recv_message(w).seq)
    client.send_json(w, { type = "ack", channel = ch, seq = b.seq })
    assert.is_true(client.expect_silence(w, 3 * TIMEOUT_MS / 1000))
  end)

  it("acks cumulatively: an ack of seq N covers every earlier seq", function()
    local ch = client.unique("cum-")
    local w = acked({ channels = { ch } })
    for i = 1, 5 do client.publish_ok(srv, { channel = ch, data = i }) end
    for i = 1, 5 do assert.equals(i, client.recv_message(w).seq) end
    client.send_json(w, { type = "ack", channel = ch, seq = 5 })
    assert.is_true(client.expect_silence(w, 3 * TIMEOUT_MS / 1000))
  end)

  it("resends every unacked seq of the channel, in order, and only those", function()
    local ch = client.unique("multi-")
    local w = acked({ channels = { ch } })
    local t0 = client.now()
    local batch = {}
    for i = 1, 3 do batch[i] = { channel = ch, data = i } end
    client.publish_ok(srv, batch)
    for i = 1, 3 do assert.equals(i, client.recv_message(w).seq) end
    client.send_json(w, { type = "ack", channel = ch, seq = 1 })
    -- first resend round: 2 then 3 (1 was acked)
    local round = {}
    for i = 1, 2 do
      local m = client.recv_message(w, 2)
      assert.equals(ch, m.channel)
      round[i] = m.seq
    end
    local t1 = client.now()
    assert.same({ 2, 3 }, round)
    assert.is_true(t1 - t0 >= 0.2 * 0.85, string.format("resend after %.3f s", t1 - t0))
    -- second round: again 2, 3
    round = {}
    for i = 1, 2 do round[i] = client.recv_message(w, 2).seq end
    assert.same({ 2, 3 }, round)
    -- ack 2: the next round holds only 3
    client.send_json(w, { type = "ack", channel = ch, seq = 2 })
    local m = client.recv_message(w, 2)
    assert.equals(3, m.seq)
    client.send_json(w, { type = "ack", channel = ch, seq = 3 })
    -- a frame of the round may have crossed the ack; after that, silence
    drain_crossed(w, ch)
    assert.is_true(client.expect_silence(w, 3 * TIMEOUT_MS / 1000))
  end)

  it("tracks channels separately: acking one channel does not stop resends of another", function()
    local c1, c2 = client.unique("sep-a-"), client.unique("sep-b-")
    local w = acked({ channels = { c1, c2 } })
    client.publish_ok(srv, { channel = c1, data = "a" })
    client.publish_ok(srv, { channel = c2, data = "b" })
    local got = {}
    for _ = 1, 2 do local m = client.recv_message(w); got[m.channel] = m.seq end
    assert.same({ [c1] = 1, [c2] = 1 }, got)
    client.send_json(w, { type = "ack", channel = c1, seq = 1 })
    local m = client.recv_message(w, 2)
    assert.equals(c2, m.channel, "the resend is for the unacked channel")
    assert.equals(1, m.seq)
    client.send_json(w, { type = "ack", channel = c2, seq = 1 })
    drain_crossed(w, c2)
    assert.is_true(client.expect_silence(w, 3 * TIMEOUT_MS / 1000))
  end)

  -- At least once: a device closed with 4004 because it never acked must
  -- get the message again on reconnect ("the device resumes from its
  -- cursor"), even though it never acked anything on that channel.
  it("after a 4004 close of a device that never acked, the reconnect (no since) gets the message again", function()
    local ch = client.unique("cur0-")
    local w, q = acked({ channels = { ch } })
    local a = client.publish_ok(srv, { channel = ch, data = "must arrive" })
    assert.equals(a.seq, client.recv_message(w).seq)
    local code = client.expect_close(w, 5)
    assert.equals(4004, code)
    local w2 = ws({ token = q.token, device = q.device, path = "/ws/acked", channels = { ch } })
    local m, raw = next_frame(w2, 1)
    assert.is_table(m, "nothing replayed after the 4004: the unacked message is lost (" .. tostring(raw) .. ")")
    assert.equals("message", m.type, raw)
    assert.equals(a.seq, m.seq)
    assert.equals("must arrive", m.data)
  end)

  it("after a 4004 close, the device's reconnect (no since) resumes from its cursor", function()
    local ch = client.unique("cur-")
    local w, q = acked({ channels = { ch } })
    for i = 1, 3 do client.publish_ok(srv, { channel = ch, data = i }) end
    for i = 1, 3 do assert.equals(i, client.recv_message(w).seq) end
    client.send_json(w, { type = "ack", channel = ch, seq = 1 })
    local code, reason = client.expect_close(w, 5)
    assert.equals(4004, code)
    assert.equals("ack timeout", reason)
    client.publish_ok(srv, { channel = ch, data = 4 })
    -- same token and device, no since: what it has not acked (2, 3) then 4
    local w2 = ws({ token = q.token, device = q.device, path = "/ws/acked", channels = { ch } })
    local seqs = {}
    for i = 1, 3 do
      local m = client.recv_message(w2)
      assert.equals(ch, m.channel)
      seqs[i] = m.seq
    end
    assert.same({ 2, 3, 4 }, seqs)
    client.send_json(w2, { type = "ack", channel = ch, seq = 4 })
    drain_crossed(w2, ch)
    assert.is_true(client.expect_silence(w2, 3 * TIMEOUT_MS / 1000))
  end)
end)
