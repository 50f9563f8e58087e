-- Integration: idle timeout and server pings (docs/protocol.md: close 4000
-- "idle timeout" after timeouts.idle_ms without input; pings every
-- timeouts.ping_ms of silence; pongs count as input). The config requires
-- ping_ms < idle_ms, so a client that never answers also sees a ping first.
local server = require "helpers.server"
local client = require "helpers.client"

local OP = client.OP

describe("moonpush idle timeout", function()
  local srv
  local IDLE_MS, PING_MS = 400, 300

  lazy_setup(function()
    srv = server.start({ timeouts = { idle_ms = IDLE_MS, ping_ms = PING_MS } })
  end)

  lazy_teardown(function()
    if srv then assert.equals(0, srv:stop()) end
  end)

  it("closes a client that sends nothing with 4000 idle timeout after idle_ms", function()
    local t0 = client.now()
    local c = client.raw_ws(srv, { token = "bob", device = client.unique("idle-") })
    local code, reason = c:expect_close(IDLE_MS / 1000 + 3)
    local elapsed = client.now() - t0
    assert.equals(4000, code, "no close 4000: " .. tostring(reason))
    assert.equals("idle timeout", reason)
    assert.is_true(elapsed >= IDLE_MS / 1000 * 0.9, "closed too early: " .. elapsed .. "s")
    assert.is_true(elapsed < IDLE_MS / 1000 + 2, "closed too late: " .. elapsed .. "s")
    assert.is_true((c:closed_within(2)), "TCP not closed after 4000")
    c:close()
    client.assert_serves(srv)
  end)

  it("keeps a client that sends pings open past idle_ms", function()
    local ch = client.unique("alive-")
    local c = client.raw_ws(srv, { token = "bob", device = client.unique("ping-"), channels = { ch } })
    local t0 = client.now()
    local pongs = 0
    while client.now() - t0 < IDLE_MS / 1000 * 3 do
      assert(c:send_frame({ opcode = OP.ping, payload = "k" }))
      local f, err
      repeat -- the server's own pings may come in between; never answer them
        f, err = c:read_frame(1)
      until not f or f.opcode ~= OP.ping
      assert.is_table(f, "no pong: " .. tostring(err))
      assert.equals(OP.pong, f.opcode, "got opcode " .. f.opcode .. " " .. f.payload)
      pongs = pongs + 1
      server.sleep(IDLE_MS / 1000 / 4)
    end
    assert.is_true(pongs >= 8)
    client.publish_ok(srv, { channel = ch, data = "still open" })
    local m, err = c:read_json()
    c:close()
    assert.is_table(m, err)
    assert.equals("still open", m.data)
  end)

  it("keeps a client that sends text frames open past idle_ms", function()
    local ch = client.unique("talk-")
    local c = client.raw_ws(srv, { token = "bob", device = client.unique("talk-") })
    local t0 = client.now()
    local i = 0
    while client.now() - t0 < IDLE_MS / 1000 * 3 do
      i = i + 1
      local name = ch .. "-" .. i
      assert(c:send_text('{"type":"subscribe","channel":"' .. name .. '"}'))
      local ans, err = c:read_json(1)
      assert.is_table(ans, err)
      assert.equals("subscribed", ans.type)
      server.sleep(IDLE_MS / 1000 / 4)
    end
    client.publish_ok(srv, { user = "bob", data = "still open" })
    local m, err = c:read_json()
    c:close()
    assert.is_table(m, err)
    assert.equals("still open", m.data)
  end)

  it("does not count server-to-client traffic as activity", function()
    local ch = client.unique("deaf-")
    local c = client.raw_ws(srv, { token = "bob", device = client.unique("deaf-"), channels = { ch } })
    local t0 = client.now()
    -- publish to it every 100 ms; it never sends anything
    local code, reason
    while client.now() - t0 < IDLE_MS / 1000 + 2 do
      client.publish_ok(srv, { channel = ch, data = "tick" })
      local f = c:read_frame(0.1)
      if f and f.opcode == OP.close then
        code, reason = client.parse_close(f.payload)
        break
      end
    end
    c:close()
    assert.equals(4000, code)
    assert.equals("idle timeout", reason)
  end)
end)

describe("moonpush pings", function()
  local srv
  local IDLE_MS, PING_MS = 1200, 200

  lazy_setup(function()
    srv = server.start({ timeouts = { idle_ms = IDLE_MS, ping_ms = PING_MS } })
  end)

  lazy_teardown(function()
    if srv then assert.equals(0, srv:stop()) end
  end)

  it("pings a silent client every ping_ms and keeps it open while it answers pongs", function()
    local c = client.raw_ws(srv, { token = "bob", device = client.unique("pp-") })
    local t0 = client.now()
    local pings = 0
    local first
    while client.now() - t0 < IDLE_MS / 1000 * 2 do
      local f, err = c:read_frame(1)
      assert.is_table(f, "no ping from the server: " .. tostring(err))
      assert.equals(OP.ping, f.opcode, "unexpected opcode " .. f.opcode .. " " .. f.payload)
      assert.is_false(f.masked)
      first = first or (client.now() - t0)
      pings = pings + 1
      assert(c:send_frame({ opcode = OP.pong, payload = f.payload }))
    end
    c:close()
    assert.is_true(first >= PING_MS / 1000 * 0.8, "first ping too early: " .. first)
    assert.is_true(pings >= 3, "only " .. pings .. " pings")
  end)

  it("closes a client that does not answer the pings with 4000 after idle_ms", function()
    local t0 = client.now()
    local c = client.raw_ws(srv, { token = "bob", device = client.unique("np-") })
    local code, reason, skipped = c:expect_close(IDLE_MS / 1000 + 3)
    local elapsed = client.now() - t0
    c:close()
    assert.equals(4000, code)
    assert.equals("idle timeout", reason)
    assert.is_true(skipped >= 1, "no ping before the idle close")
    assert.is_true(elapsed >= IDLE_MS / 1000 * 0.9, "closed too early: " .. elapsed)
  end)

  it("keeps a lua-http client (which answers pings while receiving) open", function()
    local ch = client.unique("lh-")
    local w = client.ws(srv, { token = "bob", device = client.unique("lh-"), channels = { ch } })
    client.expect_silence(w, IDLE_MS / 1000 * 2)
    client.publish_ok(srv, { channel = ch, data = "ok" })
    local m = client.recv_message(w)
    client.close(w)
    assert.equals("ok", m.data)
  end)
end)
