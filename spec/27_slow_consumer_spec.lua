-- Integration: a consumer that stops reading is closed once its outbound
-- queue passes limits.max_outbound_bytes (close 4001 "slow consumer"),
-- while a healthy subscriber of the same channel receives every message and
-- the publisher's answers keep coming.
local cqueues = require "cqueues"
local errno = require "cqueues.errno"
local server = require "helpers.server"
local client = require "helpers.client"
local ffi = require "ffi"

pcall(ffi.cdef, "long recv(int fd, void *buf, unsigned long len, int flags);")

-- Reads a socket's fd until it ends (plain recv: the end's errno matters,
-- a reset is not an EOF). Returns the bytes read and "eof", "reset" or
-- "timeout".
local function recv_all(fd, timeout)
  local buf, total = ffi.new("char[65536]"), 0
  local deadline = client.now() + timeout
  while client.now() < deadline do
    local n = tonumber(ffi.C.recv(fd, buf, 65536, 0x40 --[[MSG_DONTWAIT]]))
    if n > 0 then
      total = total + n
    elseif n == 0 then
      return total, "eof"
    else
      local e = ffi.errno()
      if e == errno.ECONNRESET then return total, "reset" end
      if e ~= errno.EAGAIN and e ~= errno.EINTR then return total, "errno " .. e end
      cqueues.sleep(0.02)
    end
  end
  return total, "timeout"
end

describe("moonpush slow consumer", function()
  local srv
  local MAX_OUT = 16384

  lazy_setup(function()
    -- max_outbound_bytes must hold the largest publish body: keep bodies small
    srv = server.start({ limits = { max_outbound_bytes = MAX_OUT, max_body_bytes = 8192 } })
  end)

  lazy_teardown(function()
    if srv then assert.equals(0, srv:stop()) end
  end)

  it("closes a client that stops reading with 4001 while a healthy one gets everything", function()
    local ch = client.unique("firehose-")
    local healthy = client.ws(srv, { token = "bob", device = client.unique("healthy-"), channels = { ch } })
    -- tiny receive buffer so the kernel absorbs little on the client side
    local slow = client.raw_ws(srv, { token = "bob", device = client.unique("slow-"), channels = { ch }, rcvbuf = 4096 })

    local PAD = ("p"):rep(4000)   -- each frame ~4 KB, well under MAX_OUT
    local LIMIT = 4000            -- at most ~16 MB before we give up
    local published, slow_gone_at, pub_err = 0, nil, nil
    local received, recv_err = 0, nil
    local done_publishing = false

    local cq = cqueues.new()
    cq:wrap(function()
      local ok, err = pcall(function()
        for i = 1, LIMIT do
          local a = client.publish_ok(srv, { channel = ch, data = { i = i, pad = PAD } }, { timeout = 5 })
          assert(a.seq == i, "seq " .. tostring(a.seq) .. " for message " .. i)
          published = i
          if a.recipients == 1 and not slow_gone_at then
            slow_gone_at = i
            -- a few more after the close, to see the healthy one unaffected
          end
          if slow_gone_at and i >= slow_gone_at + 20 then break end
          assert(a.recipients == 2 or a.recipients == 1, "recipients " .. tostring(a.recipients))
        end
      end)
      if not ok then pub_err = err end
      done_publishing = true
    end)
    cq:wrap(function()
      local ok, err = pcall(function()
        local last_progress = client.now()
        while not done_publishing or received < published do
          local data, op, eno = healthy:receive(0.2)
          if data == nil and eno == errno.ETIMEDOUT and client.now() - last_progress < 10 then
            data = false -- nothing yet: check the loop condition again
          end
          assert(data ~= nil, "healthy client stopped after " .. received .. ": " .. tostring(op) ..
            " (close " .. tostring(healthy.got_close_code) .. ")")
          if data then
            last_progress = client.now()
            local m = client.json.decode(data)
            assert(m and m.type == "message", "unexpected frame " .. data:sub(1, 200))
            assert(m.seq == received + 1, "healthy got seq " .. tostring(m.seq) .. " after " .. received)
            received = m.seq
          end
        end
      end)
      if not ok then recv_err = err end
    end)
    local deadline = client.now() + 30
    while not cq:empty() and client.now() < deadline do
      local ok, err = cq:step(0.5)
      if not ok then error(err) end
    end
    assert.is_true(cq:empty(), string.format(
      "publisher/reader did not finish within 30 s: %d published, %d received by the healthy client, slow dropped at %s",
      published, received, tostring(slow_gone_at)))
    assert.is_nil(pub_err)
    assert.is_nil(recv_err)
    assert.is_not_nil(slow_gone_at, "the slow client was never dropped after " .. published ..
      " messages of ~4 KB (recipients stayed 2)")
    assert.equals(published, received)
    client.close(healthy)

    -- Now read what the slow client was given: in-order messages, then the
    -- close 4001 (or, if the queue was too full for it, EOF with the 4001
    -- in the server log).
    local last, code, reason, ended = 0, nil, nil, nil
    slow:set_rcvbuf(4 * 1048576) -- the tiny window would make draining slow
    local rdeadline = client.now() + 15
    while client.now() < rdeadline do
      local f, err = slow:read_frame(3)
      if not f then ended = err break end
      ended = "no close frame or EOF within 15 s after " .. last .. " messages"
      if f.opcode == client.OP.close then
        code, reason = client.parse_close(f.payload)
        break
      elseif f.opcode == client.OP.text then
        local m = client.json.decode(f.payload)
        assert.is_table(m, "slow client got a broken frame")
        assert.equals(last + 1, m.seq, "slow client got seq out of order")
        last = m.seq
      end
    end
    assert.is_true(last < published, "slow client got everything: it was not slow")
    if code then
      assert.equals(4001, code)
      assert.equals("slow consumer", reason)
      -- the server gave up on this client: it must not keep the socket open
      -- waiting for a close reply the client may never send
      local closed, why = slow:closed_within(3)
      local note = ""
      if not closed then
        slow:send_frame({ opcode = client.OP.close, payload = client.close_payload(1000) })
        note = slow:closed_within(2) and " (it closed only after the client's close reply)" or " (not even after a close reply)"
      end
      slow:close()
      assert.is_true(closed, "TCP connection left open after the 4001 close frame: " .. tostring(why) .. note)
    else
      slow:close()
      assert.is_true(ended == "eof" or ended == "reset", "slow client neither got a close frame nor EOF: " .. tostring(ended))
      local log = srv:log()
      assert.truthy(log:find("4001", 1, true) or log:lower():find("slow consumer", 1, true),
        "no close frame and no 4001 / slow consumer in the server log")
    end
    client.assert_serves(srv)
  end)

  it("resets a dropped consumer that took nothing during the linger period", function()
    -- A plain close would leave the kernel holding the bytes it has for
    -- the client, probing a zero window for minutes: the client would see
    -- neither the rest nor an end (spec/43 flaked on it). The server resets
    -- a closing connection whose peer took none of its bytes for 2 s.
    local ch = client.unique("deaf-")
    local deaf = client.raw_ws(srv, { token = "bob", device = client.unique("deaf-"), channels = { ch }, rcvbuf = 4096 })
    local before = srv:log_count("slow consumer closed")
    local PAD = ("d"):rep(4000)
    for i = 1, 400 do
      client.publish_ok(srv, { channel = ch, data = { i = i, pad = PAD } })
      if srv:log_count("slow consumer closed") > before then break end
    end
    assert.is_true(srv:log_count("slow consumer closed") > before, "the deaf client was never dropped")
    server.sleep(3)   -- past the linger period (2 s), reading nothing
    deaf:set_rcvbuf(4 * 1048576)
    local got, why = recv_all(deaf.sock:pollfd(), 5)
    deaf:close()
    -- before: the kernel's whole buffer for it (~128 KB), then EOF, or nothing for minutes
    assert.equals("reset", why, "after " .. got .. " bytes")
    client.assert_serves(srv)
  end)

  it("lets the dropped device reconnect and receive again", function()
    local ch = client.unique("again-")
    local w = client.ws(srv, { token = "bob", device = "slow-again", channels = { ch } })
    client.publish_ok(srv, { channel = ch, data = "back" })
    local m = client.recv_message(w)
    client.close(w)
    assert.equals("back", m.data)
  end)
end)
