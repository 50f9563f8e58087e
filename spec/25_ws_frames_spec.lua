-- Integration: WebSocket framing edge cases with hand-built frames
-- (docs/protocol.md "Close codes"). After each bad frame the server closes
-- that connection with the documented code and reason, and another client
-- still works.
local server = require "helpers.server"
local client = require "helpers.client"

local OP = client.OP

describe("moonpush WebSocket framing", function()
  local srv
  local MAX_MSG = 1024

  lazy_setup(function()
    srv = server.start({ limits = { max_message_bytes = MAX_MSG } })
  end)

  lazy_teardown(function()
    if srv then assert.equals(0, srv:stop()) end
  end)

  local function connect()
    return client.raw_ws(srv, { token = "bob", device = client.unique("fr-") })
  end

  -- Send the frames (a frame spec table or raw bytes); return the close
  -- code and reason the server answered with (nil, err without a close).
  local function close_for(frames)
    local c = connect()
    for _, f in ipairs(frames) do
      -- the server may already have closed: stop sending then
      if not c:send(type(f) == "string" and f or client.frame(f)) then break end
    end
    local got, why, skipped = c:expect_close(3)
    local closed = got and c:closed_within(2)
    local masked = got and c.close_frame.masked
    c:close()
    return got, why, skipped, closed, masked
  end

  -- Expect the close code (reason texts are checked in "close reasons"),
  -- the TCP close, then prove the server still serves.
  local function closes_with(frames, code)
    local got, why, skipped, closed, masked = close_for(frames)
    assert.equals(code, got, "no close " .. code .. " (" .. tostring(why) .. ", " .. tostring(skipped) .. " frames before)")
    assert.is_false(masked, "server close frame is masked")
    assert.is_true(closed, "TCP connection not closed after close " .. code)
    client.assert_serves(srv)
  end

  describe("close reasons", function()
    local cases = {
      { 1002, "protocol error", { { opcode = OP.text, payload = "{}", mask = false } } },
      { 1003, "binary messages not supported", { { opcode = OP.binary, payload = "\0" } } },
      { 1007, "invalid utf-8", { { opcode = OP.text, payload = "\255" } } },
      { 1009, "message too big", { { opcode = OP.text, payload = ("a"):rep(MAX_MSG + 1) } } },
    }
    for _, c in ipairs(cases) do
      it("sends close " .. c[1] .. " with the reason text " .. string.format("%q", c[2]), function()
        local code, reason = close_for(c[3])
        assert.equals(c[1], code)
        assert.equals(c[2], reason)
      end)
    end
  end)

  it("closes an unmasked client frame with 1002", function()
    closes_with({ { opcode = OP.text, payload = '{"type":"subscribe","channel":"a"}', mask = false } },
      1002)
  end)

  it("closes an unmasked client ping with 1002", function()
    closes_with({ { opcode = OP.ping, payload = "x", mask = false } }, 1002)
  end)

  it("closes a text message that is not valid UTF-8 with 1007", function()
    closes_with({ { opcode = OP.text, payload = '{"type":"subscribe","channel":"\255\254"}' } },
      1007)
  end)

  for _, c in ipairs({
    { "an overlong encoding", "\192\175" },
    { "a UTF-16 surrogate", "\237\160\128" },
    { "a code point past U+10FFFF", "\244\144\128\128" },
    { "a truncated sequence", "abc\226\130" },
  }) do
    it("closes a text message with " .. c[1] .. " with 1007", function()
      closes_with({ { opcode = OP.text, payload = c[2] } }, 1007)
    end)
  end

  it("closes a fragmented text message that is invalid UTF-8 across fragments with 1007", function()
    closes_with({
      { opcode = OP.text, payload = "ok \226", fin = false },
      { opcode = OP.cont, payload = "\40\161", fin = true },
    }, 1007)
  end)

  it("accepts a UTF-8 character split across fragments", function()
    local c = connect()
    -- "✓" = E2 9C 93 split between fragments, in an unknown-type frame
    local msg = '{"type":"x\226\156\147"}'
    local cut = msg:find("\156", 1, true)
    assert(c:send_frame({ opcode = OP.text, payload = msg:sub(1, cut - 1), fin = false }))
    assert(c:send_frame({ opcode = OP.cont, payload = msg:sub(cut), fin = true }))
    local ans, err = c:read_json()
    c:close()
    assert.is_table(ans, err)
    assert.equals("error", ans.type)
    assert.equals("unknown_type", ans.code)
  end)

  it("closes a message over max_message_bytes with 1009", function()
    closes_with({ { opcode = OP.text, payload = ("a"):rep(MAX_MSG + 1) } }, 1009)
  end)

  it("closes a frame that only declares a length over max_message_bytes with 1009", function()
    -- header claims 1 MiB, no payload sent: the server must not wait for it
    closes_with({ client.frame({ opcode = OP.text, payload = "", length = 1048576 }) }, 1009)
  end)

  it("closes a fragmented message adding up over max_message_bytes with 1009", function()
    local part = ("b"):rep(MAX_MSG / 2)
    closes_with({
      { opcode = OP.text, payload = part, fin = false },
      { opcode = OP.cont, payload = part, fin = false },
      { opcode = OP.cont, payload = part, fin = true },
    }, 1009)
  end)

  it("accepts a message of exactly max_message_bytes", function()
    local c = connect()
    local body = '{"type":"nope","pad":"'
    body = body .. ("p"):rep(MAX_MSG - #body - 2) .. '"}'
    assert.equals(MAX_MSG, #body)
    assert(c:send_text(body))
    local ans, err = c:read_json()
    c:close()
    assert.is_table(ans, err)
    assert.equals("unknown_type", ans.code)
  end)

  it("closes a binary message with 1003", function()
    closes_with({ { opcode = OP.binary, payload = "\0\1\2\3" } }, 1003)
  end)

  it("closes a fragmented binary message with 1003", function()
    closes_with({
      { opcode = OP.binary, payload = "\0\1", fin = false },
      { opcode = OP.cont, payload = "\2\3", fin = true },
    }, 1003)
  end)

  for _, op in ipairs({ 0x3, 0x7, 0xB, 0xF }) do
    it(string.format("closes a frame with the reserved opcode 0x%X with 1002", op), function()
      closes_with({ { opcode = op, payload = "x" } }, 1002)
    end)
  end

  it("closes a frame with RSV bits set with 1002", function()
    closes_with({ { opcode = OP.text, payload = "{}", rsv = 4 } }, 1002)
  end)

  it("closes a continuation frame without a started message with 1002", function()
    closes_with({ { opcode = OP.cont, payload = "orphan", fin = true } }, 1002)
  end)

  it("closes a new text frame in the middle of a fragmented message with 1002", function()
    closes_with({
      { opcode = OP.text, payload = "{", fin = false },
      { opcode = OP.text, payload = "}", fin = true },
    }, 1002)
  end)

  it("closes a fragmented control frame with 1002", function()
    closes_with({ { opcode = OP.ping, payload = "x", fin = false } }, 1002)
  end)

  it("closes a control frame with more than 125 bytes with 1002", function()
    closes_with({ { opcode = OP.ping, payload = ("p"):rep(126) } }, 1002)
  end)

  it("closes a close frame with a 1-byte payload with 1002", function()
    closes_with({ { opcode = OP.close, payload = "\3" } }, 1002)
  end)

  it("answers a close frame without a status code with a close", function()
    local c = connect()
    assert(c:send_frame({ opcode = OP.close, payload = "" }))
    local code, reason = c:expect_close()
    assert.is_true(code == 1000 or code == nil, "close code " .. tostring(code))
    if code then assert.equals("bye", reason) end
    assert.is_true((c:closed_within(2)))
    c:close()
  end)

  it("survives frames split into single bytes", function()
    local ch = client.unique("bytes-")
    local c = connect()
    local frame = client.frame({ opcode = OP.text, payload = '{"type":"subscribe","channel":"' .. ch .. '"}' })
    for i = 1, #frame do
      assert(c:send(frame:sub(i, i)))
    end
    local ans, err = c:read_json()
    assert.is_table(ans, err)
    assert.same({ type = "subscribed", channel = ch }, client.pick(ans))
    c:close()
  end)

  it("survives several frames in one TCP write", function()
    local a, b = client.unique("multi-"), client.unique("multi-")
    local c = connect()
    assert(c:send(
      client.frame({ opcode = OP.text, payload = '{"type":"subscribe","channel":"' .. a .. '"}' }) ..
      client.frame({ opcode = OP.ping, payload = "p" }) ..
      client.frame({ opcode = OP.text, payload = '{"type":"subscribe","channel":"' .. b .. '"}' })))
    local got = {}
    for _ = 1, 3 do
      local f, err = c:read_frame()
      assert.is_table(f, err)
      got[#got + 1] = f
    end
    c:close()
    -- the pong may come before, between or after the answers
    local answers, pongs = {}, 0
    for _, f in ipairs(got) do
      if f.opcode == OP.pong then
        pongs = pongs + 1
      else
        answers[#answers + 1] = client.json.decode(f.payload)
      end
    end
    assert.equals(1, pongs)
    assert.same({ { type = "subscribed", channel = a }, { type = "subscribed", channel = b } }, client.pick(answers))
  end)

  it("survives a client that disconnects in the middle of a frame", function()
    local c = connect()
    local frame = client.frame({ opcode = OP.text, payload = ("z"):rep(200) })
    assert(c:send(frame:sub(1, 50)))
    c:close()
    client.assert_serves(srv)
  end)

  it("survives a client that disconnects without a close frame", function()
    local c = connect()
    c:close()
    client.assert_serves(srv)
  end)

  it("keeps other clients' deliveries going while one is closed for a bad frame", function()
    local ch = client.unique("other-")
    local good = client.ws(srv, { token = "bob", device = client.unique("g-"), channels = { ch } })
    local bad = connect()
    assert(bad:send_frame({ opcode = OP.binary, payload = "\0" }))
    local code = bad:expect_close()
    bad:close()
    assert.equals(1003, code)
    client.publish_ok(srv, { channel = ch, data = "still" })
    local m = client.recv_message(good)
    client.close(good)
    assert.equals("still", m.data)
  end)
end)
