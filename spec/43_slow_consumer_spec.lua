-- Integration: slow consumers among many healthy ones (docs/protocol.md
-- close 4001, limits.max_outbound_bytes). A tenth of the subscribers stop
-- reading: they are dropped (EOF or 4001) while the others get every seq
-- promptly; on an ack route a dropped device reconnects and resumes from its
-- cursor without losing anything.
local cqueues = require "cqueues"
local errno = require "cqueues.errno"
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local routes = require "helpers.routes"

local json = client.json

local MAX_OUT = 65536
local PAD = ("p"):rep(4000)   -- ~4 KB frames

local function add_routes(cfg)
  -- long timeout: the resend timer must not be what closes the stalled client
  table.insert(cfg.routes, routes.ack_route({ timeout_ms = 20000, factor = 2, max_tries = 5, jitter = 0 }, {
    ["stall"] = { user = "staller", kind = "pos", channels = { "*" } },
  }))
end

-- Read a stalled raw client after the fact: its messages must be in order
-- from `first`; it must end with close 4001 or EOF. Returns last seq read,
-- how it ended.
local function drain_stalled(c, ch, first, timeout)
  c:set_rcvbuf(4 * 1048576)
  local last = first - 1
  local deadline = client.now() + (timeout or 10)
  while client.now() < deadline do
    local f, err = c:read_frame(math.max(0.01, deadline - client.now()))
    if not f then
      -- the stream may end inside a frame the server had half written
      if tostring(err):find("eof") then return last, "eof" end
      if tostring(err):find("reset") then return last, "reset" end
      return last, "no close within the deadline (" .. tostring(err) .. ")"
    end
    if f.opcode == client.OP.close then
      local code, reason = client.parse_close(f.payload)
      return last, string.format("close %s %s", tostring(code), tostring(reason))
    elseif f.opcode == client.OP.text then
      local m = json.decode(f.payload)
      assert(m and m.type == "message", "stalled client got " .. f.payload:sub(1, 200))
      if m.channel == ch then
        assert(m.seq == last + 1, string.format("stalled client got seq %s after %d", tostring(m.seq), last))
        last = m.seq
      end
    end
  end
  return last, "no close within the deadline"
end

local function ended_as_slow_consumer(how)
  return how == "eof" or how == "reset" or how == "close 4001 slow consumer"
end

describe("moonpush slow consumers among many", function()
  local srv
  session.shared_server(function()
    srv = server.start({
      -- max_outbound_bytes must hold the largest publish body: keep bodies small
      limits = { max_outbound_bytes = MAX_OUT, max_body_bytes = 32768 },
      history = { max_messages = 10000 },
    }, { config_fn = add_routes })
    return srv
  end)

  it("drops the 3 stalled of 30 subscribers while the 27 others get every seq without stalling", function()
    local ch = client.unique("herd-")
    local N_HEALTHY, N_STALLED, N_MSG = 27, 3, 600
    local healthy, stalled = {}, {}
    for i = 1, N_HEALTHY do
      healthy[i] = client.ws(srv, { token = "bob", device = client.unique("h-"), channels = { ch } })
    end
    for i = 1, N_STALLED do
      stalled[i] = client.raw_ws(srv, { token = "bob", device = client.unique("s-"), channels = { ch }, rcvbuf = 4096 })
    end

    local published, pub_err, pub_done = 0, nil, false
    local min_recipients = N_HEALTHY + N_STALLED
    local received, errs = {}, {}
    local cq = cqueues.new()
    cq:wrap(function()
      local ok, err = pcall(function()
        for i = 1, N_MSG do
          local a = client.publish_ok(srv, { channel = ch, data = { i = i, pad = PAD } }, { timeout = 5 })
          assert(a.seq == i, "seq " .. tostring(a.seq) .. " for message " .. i)
          published = i
          if a.recipients < min_recipients then min_recipients = a.recipients end
        end
      end)
      if not ok then pub_err = err end
      pub_done = true
    end)
    for k = 1, N_HEALTHY do
      received[k] = 0
      cq:wrap(function()
        local ok, err = pcall(function()
          local w = healthy[k]
          local last_progress = client.now()
          while not pub_done or received[k] < published do
            local data, op, eno = w:receive(0.2)
            if data == nil then
              assert(eno == errno.ETIMEDOUT and client.now() - last_progress < 10, string.format(
                "healthy %d stopped after %d: %s (close %s)", k, received[k], tostring(op), tostring(w.got_close_code)))
            else
              last_progress = client.now()
              local m = json.decode(data)
              assert(m and m.type == "message" and m.channel == ch, "healthy got " .. data:sub(1, 200))
              assert(m.seq == received[k] + 1, string.format("healthy %d got seq %s after %d", k, tostring(m.seq), received[k]))
              received[k] = m.seq
            end
          end
        end)
        if not ok then errs[#errs + 1] = tostring(err) end
      end)
    end
    -- No deadline on the whole run (a loaded CI machine may take long to
    -- decode 16,200 frames in Lua): the run fails when nothing moves for
    -- 15 s, which a healthy client blocked behind the stalled ones would do.
    local function progress()
      local n = published
      for k = 1, N_HEALTHY do n = n + received[k] end
      return n
    end
    local last, last_change = progress(), client.now()
    while not cq:empty() and client.now() - last_change < 15 do
      local ok, err = cq:step(0.5)
      if not ok then error(err) end
      if progress() ~= last then last, last_change = progress(), client.now() end
    end
    assert.is_true(cq:empty(), string.format("no progress for 15 s: %d published", published))
    assert.is_nil(pub_err)
    assert.same({}, errs)
    for k = 1, N_HEALTHY do
      assert.equals(N_MSG, received[k], "healthy client " .. k)
    end
    assert.equals(N_HEALTHY, min_recipients, "the stalled clients were dropped from the channel")
    client.close_all(healthy)

    -- drain the stalled ones concurrently (the kernel pushes what the server
    -- had handed it, then the FIN, only as each one reads)
    local ends = {}
    local dq = cqueues.new()
    for i, c in ipairs(stalled) do
      dq:wrap(function()
        local ok, last, how = pcall(drain_stalled, c, ch, 1, 10)
        ends[i] = ok and { last = last, how = how } or { err = tostring(last) }
        c:close()
      end)
    end
    local ddl = client.now() + 12
    while not dq:empty() and client.now() < ddl do assert(dq:step(0.5)) end
    for i = 1, N_STALLED do
      local e = ends[i]
      assert.is_table(e, "stalled client " .. i .. " not drained")
      assert.is_nil(e.err)
      assert.is_true(e.last < N_MSG, "stalled client " .. i .. " got everything: it did not stall")
      assert.is_true(ended_as_slow_consumer(e.how), "stalled client " .. i .. " ended with: " .. e.how)
    end
    client.assert_serves(srv)
  end)

  it("on an ack route, a stalled-then-dropped device reconnects and resumes from its cursor, losing nothing", function()
    local ch = client.unique("stall-")
    local N_ACKED, N_MSG = 10, 400
    local c = client.raw_ws(srv, { token = "stall", device = "till", path = "/ws/acked", channels = { ch }, rcvbuf = 4096 })
    assert.is_true(c.welcome.acks)
    local watcher = client.ws(srv, { token = "bob", device = client.unique("w-"), channels = { ch } })

    -- read and ack the first 10
    for i = 1, N_ACKED do client.publish_ok(srv, { channel = ch, data = { i = i, pad = PAD } }) end
    for i = 1, N_ACKED do
      local m, err = c:read_json()
      assert.is_table(m, err)
      assert.equals(i, m.seq)
      assert.equals(i, client.recv_message(watcher).seq)
    end
    assert(c:send_text(json.encode({ type = "ack", channel = ch, seq = N_ACKED })))

    -- then stall while 400 more come
    local dropped_at
    for i = N_ACKED + 1, N_MSG do
      local a = client.publish_ok(srv, { channel = ch, data = { i = i, pad = PAD } })
      if a.recipients == 1 and not dropped_at then dropped_at = i end
      assert.equals(i, client.recv_message(watcher).seq)
    end
    assert.is_not_nil(dropped_at, "the stalled device was never dropped")
    local last, how = drain_stalled(c, ch, N_ACKED + 1, 8)
    c:close()
    assert.is_true(ended_as_slow_consumer(how), "stalled device ended with: " .. how)
    assert.is_true(last < N_MSG)

    -- reconnect, no since: from the cursor (10) on, every message once, in
    -- order. The backlog (~1.5 MB) is larger than max_outbound_bytes: a
    -- resuming device must still get it (it is reading), or it could never
    -- recover from a 4001.
    local w, err = client.ws_try(srv, { token = "stall", device = "till", path = "/ws/acked", channels = { ch } })
    assert.is_not_nil(w, "reconnect after the 4001 failed: " .. tostring(err))
    local wl = client.recv_json(w)
    assert.equals("welcome", wl.type)
    for i = N_ACKED + 1, N_MSG do
      local ok, m = pcall(client.recv_message, w)
      assert.is_true(ok, string.format("resume from the cursor broke off before seq %d: %s", i, tostring(m)))
      assert.equals(ch, m.channel)
      assert.equals(i, m.seq)
      assert.equals(i, m.data.i)
    end
    client.send_json(w, { type = "ack", channel = ch, seq = N_MSG })
    local a = client.publish_ok(srv, { channel = ch, data = { i = N_MSG + 1 } })
    local m = client.recv_message(w)
    assert.equals(a.seq, m.seq)
    client.close(w)
    client.close(watcher)
  end)

  it("replays a resume backlog larger than max_outbound_bytes to a client that reads it", function()
    local ch = client.unique("backlog-")
    local N_MSG = 100   -- ~400 KB, six times max_outbound_bytes
    for i = 1, N_MSG do client.publish_ok(srv, { channel = ch, data = { i = i, pad = PAD } }) end
    local probe = client.ws(srv, { token = "bob", device = client.unique("p-"), channels = { ch } })
    local epoch = probe.welcome.epochs[ch]
    client.close(probe)
    local q = client.query_string({ token = "bob", device = client.unique("r-"), channels = ch,
      ["since." .. ch] = 0, ["epoch." .. ch] = epoch })
    local w, err = client.ws_try(srv, { query = q })
    assert.is_not_nil(w, "resume connect failed: " .. tostring(err))
    local wl = client.recv_json(w)
    assert.equals("welcome", wl.type)
    for i = 1, N_MSG do
      local ok, m = pcall(client.recv_message, w)
      assert.is_true(ok, string.format("replay broke off before seq %d: %s", i, tostring(m)))
      assert.equals(i, m.seq)
    end
    client.publish_ok(srv, { channel = ch, data = "live" })
    assert.equals(N_MSG + 1, client.recv_message(w).seq)
    client.close(w)
    client.assert_serves(srv)
  end)
end)
