-- Integration: draining on SIGTERM (docs/operations.md "Signals": close the
-- listener, send close 1001 to every WebSocket, let queued frames drain,
-- exit 0 once every connection is gone or after 5 s; docs/protocol.md
-- "Health": status "stopping" while draining). A fresh server per test:
-- each one ends it. Every wait is bounded.
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"

local cjson = client.json
local GRACE = 5

-- admin expression through the client binary; returns the printed output
local function admin(srv, expr)
  local out, rc = srv:admin(expr)
  assert(rc == 0, "admin " .. expr .. " exited " .. tostring(rc) .. ": " .. out)
  return out
end

local QUEUED = "(function() local n = 0 for _, c in ipairs(clients()) do n = n + c.queued_bytes end return n end)()"

-- A TCP connect to the server's port, true when accepted.
local function can_connect(port)
  local s = socket.connect { host = "127.0.0.1", port = port }
  s:onerror(function(_, _, why) return why end)
  local ok = s:connect(0.5)
  s:close()
  return ok and true or false
end

local function health_request(srv)
  return "GET /health HTTP/1.1\r\nHost: 127.0.0.1:" .. srv.port .. "\r\n\r\n"
end

describe("moonpush drain on SIGTERM", function()
  local srv
  local open = session.tracker()

  after_each(function()
    open:close_all()
    local s = srv
    srv = nil
    if s and not s.stopped then s:stop(2) end
  end)

  local function start(over)
    srv = server.start(over or {
      -- small kernel send buffers, so a burst stays queued in the server
      limits = { socket_send_buffer = 8192 },
    })
    return srv
  end

  local function raw_ws(opts)
    return open:add(client.raw_ws(srv, opts))
  end

  -- Reads every client concurrently until its close frame (or the end);
  -- pace: seconds to sleep after each message. Returns one record per client:
  -- { messages = { n... }, reconnect = frame, code =, reason =, err =, after_close = frames }
  local function read_all(conns, pace, limit)
    local results = {}
    local t0 = client.now()
    local cq = cqueues.new()
    for i, c in ipairs(conns) do
      local r = { messages = {}, others = {} }
      results[i] = r
      cq:wrap(function()
        local deadline = client.now() + limit
        while true do
          local f, err = c:read_frame(math.max(0.01, deadline - client.now()))
          if not f then
            r.err = string.format("%s after %.2fs", tostring(err), client.now() - t0)
            return
          end
          if f.opcode == client.OP.close then
            r.code, r.reason = client.parse_close(f.payload)
            -- answer the close as a client does, then hang up
            c:send_frame({ opcode = client.OP.close, payload = client.close_payload(1001, "") })
            c:close()
            return
          elseif f.opcode == client.OP.text then
            local m = cjson.decode(f.payload) or { type = "not json", raw = f.payload }
            if m.type == "message" then
              if r.reconnect then r.others[#r.others + 1] = "message after the reconnect frame" end
              r.messages[#r.messages + 1] = m.data.n
              if pace > 0 then cqueues.sleep(pace) end
            elseif m.type == "reconnect" then
              r.reconnect = m
            else
              r.others[#r.others + 1] = f.payload
            end
          end
        end
      end)
    end
    local ok, err = cq:loop(limit + 2)
    assert(ok, err)
    return results
  end

  local function check_drained(results, n)
    for i, r in ipairs(results) do
      local what = string.format("client %d (got %d of %d messages, then %s)\n--- server log:\n%s", i, #r.messages, n,
        r.code and ("close " .. r.code) or ("no close: " .. tostring(r.err)), srv:log_tail(4))
      assert.equals(n, #r.messages, what)
      for k = 1, n do assert.equals(k, r.messages[k], what .. ": out of order at " .. k) end
      assert.same({}, r.others, what)
      assert.is_table(r.reconnect, what .. ": no reconnect frame before the close")
      assert.is_number(r.reconnect.after_ms)
      assert.is_true(r.reconnect.after_ms >= 500 and r.reconnect.after_ms <= 5500,
        "reconnect after_ms out of 0.5-5.5 s: " .. tostring(r.reconnect.after_ms))
      assert.equals(1001, r.code, what)
      assert.equals("server shutting down", r.reason, what)
    end
  end

  local function burst(ch, n, size)
    local pad = string.rep("p", size)
    local batch = {}
    for i = 1, n do batch[i] = { channel = ch, data = { n = i, pad = pad } } end
    return client.publish_ok(srv, batch)
  end

  it("delivers every message queued before the signal, then reconnect and close 1001, and exits 0", function()
    start()
    local ch = "drain-burst"
    local N, CLIENTS = 120, 4
    local conns = {}
    for i = 1, CLIENTS do
      conns[i] = raw_ws({ token = "bob", device = "reader" .. i, channels = { ch } })
    end
    -- ~3 KiB messages: 360 KiB per client, more than the socket buffers
    -- hold, well under max_outbound_bytes
    local answers = burst(ch, N, 3000)
    assert.equals(N, #answers)
    for _, a in ipairs(answers) do assert.equals(CLIENTS, a.recipients) end
    local queued = tonumber((admin(srv, QUEUED):gsub("%s+", "")))
    assert.is_true(queued > 100000, "only " .. tostring(queued) .. " bytes queued: the test proves nothing")

    local t0 = client.now()
    assert.is_true(srv:signal("TERM"))
    local results = read_all(conns, 0, GRACE)
    check_drained(results, N)
    local rc = srv:wait(GRACE + 2)
    local took = client.now() - t0
    assert.equals(0, rc, "exit code after the drain")
    assert.is_true(took < 2, string.format("took %.2fs to exit after every client hung up", took))
    assert.truthy(srv:log():find("shutting down", 1, true))
  end)

  it("lets a slow but reading client drain within timeouts.shutdown_ms", function()
    -- 200 messages of 3 KiB read at ~65 a second: about 3 s of draining,
    -- well inside the 8 s configured
    start({ limits = { socket_send_buffer = 8192 }, timeouts = { shutdown_ms = 8000 } })
    local ch = "drain-slow"
    local N = 200
    local conns = {
      raw_ws({ token = "bob", device = "slow1", channels = { ch } }),
      raw_ws({ token = "bob", device = "slow2", channels = { ch } }),
    }
    burst(ch, N, 3000)
    local queued = tonumber((admin(srv, QUEUED):gsub("%s+", "")))
    assert.is_true(queued > 300000, "only " .. tostring(queued) .. " bytes queued: the test proves nothing")
    local t0 = client.now()
    assert.is_true(srv:signal("TERM"))
    local results = read_all(conns, 0.015, 8)
    local read_for = client.now() - t0
    check_drained(results, N)
    local rc = srv:wait(4)
    assert.equals(0, rc)
    assert.is_true(client.now() - t0 < 8, "exited after shutdown_ms")
    assert.is_true(read_for > 2, "the clients drained too fast to be slow readers")
  end)

  it("exits 0 after timeouts.shutdown_ms when a client never reads", function()
    start({ limits = { socket_send_buffer = 8192 }, timeouts = { shutdown_ms = 1000 } })
    local ch = "drain-stuck"
    local stuck = raw_ws({ token = "bob", device = "never-reads", channels = { ch }, rcvbuf = 4096 })
    burst(ch, 100, 3000)
    local t0 = client.now()
    assert.is_true(srv:signal("TERM"))
    local rc = srv:wait(GRACE)
    local took = client.now() - t0
    assert.equals(0, rc, "exit code")
    assert.is_true(took >= 0.8, string.format("exited after %.2fs, before shutdown_ms", took))
    assert.is_true(took < 2, string.format("exited after %.2fs, long after shutdown_ms (1 s)", took))
    assert.truthy(srv:log():find("grace period over", 1, true), srv:log_tail(5))
    stuck:close()
  end)

  it("closes the listener: a new connection during the drain is refused", function()
    start()
    local port = srv.port
    -- a client that neither reads nor answers keeps the server draining
    local stuck = raw_ws({ token = "bob", device = "stuck" })
    assert.is_true(can_connect(port))
    local t0 = client.now()
    assert.is_true(srv:signal("TERM"))
    local deadline = client.now() + 1
    local refused = false
    while client.now() < deadline do
      if not can_connect(port) then refused = true break end
      server.sleep(0.02)
    end
    assert.is_true(refused, "the port still accepts connections during the drain")
    assert.is_true(srv:alive(), "the server exited before the drain was over")
    -- a WebSocket handshake is refused too
    local ok = pcall(client.raw_ws, srv, { token = "bob", device = "late" })
    assert.is_false(ok, "a new WebSocket got in during the drain")
    -- the stuck client hangs up: the server exits 0 soon, within the grace
    stuck:close()
    local rc = srv:wait(GRACE + 2)
    assert.equals(0, rc)
    assert.is_true(client.now() - t0 < GRACE, "the server waited out the grace period")
  end)

  it("answers /health with status stopping during the drain, on a connection opened before", function()
    start()
    local stuck = raw_ws({ token = "bob", device = "keeps-draining" })
    -- an HTTP keep-alive connection opened before the signal
    local http = open:add(client.tcp(srv))
    assert(http:send(health_request(srv)))
    local resp = assert(http:response())
    assert.equals(200, resp.status)
    assert.equals("ok", resp.json.status)

    assert.is_true(srv:signal("TERM"))
    local code = stuck:expect_close(2)
    assert.equals(1001, code, "no close 1001: the drain did not start")
    assert(http:send(health_request(srv)))
    local r2, err = http:response(2)
    assert.is_table(r2, "no /health answer during the drain: " .. tostring(err))
    assert.is_table(r2.json, r2.body)
    assert.equals("stopping", r2.json.status)
    stuck:close()
    http:close()
    assert.equals(0, srv:wait(GRACE + 2))
  end)

  it("refuses publishes and batches during the drain with 503 shutting_down and Retry-After", function()
    start()
    local ch = "drain-late"
    local stuck = raw_ws({ token = "bob", device = "keeps-draining-pub", channels = { ch } })
    -- keep-alive connections opened before the signal: new ones are refused
    local one = open:add(client.tcp(srv))
    local batch = open:add(client.tcp(srv))
    local function post(c, body)
      assert(c:send("POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " .. server.PUBLISHER ..
        "\r\nContent-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body))
      return c:response(2)
    end
    local before = assert(post(one, cjson.encode({ channel = ch, data = { n = 0 } })))
    assert.equals(200, before.status, before.body)
    assert(post(batch, cjson.encode({ { channel = ch, data = { n = 0 } } })))

    assert.is_true(srv:signal("TERM"))
    local code = stuck:expect_close(2)
    assert.equals(1001, code, "no close 1001: the drain did not start")
    for _, case in ipairs({ { one, { channel = ch, data = { n = 1 } } },
                            { batch, { { channel = ch, data = { n = 2 } }, { user = "bob", data = { n = 3 } } } } }) do
      local resp, err = post(case[1], cjson.encode(case[2]))
      assert.is_table(resp, "no answer to a publish during the drain: " .. tostring(err))
      assert.equals(503, resp.status, resp.body)
      assert.is_table(resp.json, resp.body)
      assert.equals("shutting_down", resp.json.error)
      assert.is_string(resp.json.message)
      assert.equals("5", resp.headers["retry-after"])   -- timeouts.shutdown_ms 5000
      assert.equals("close", resp.headers.connection)
    end
    stuck:close()
    one:close()
    batch:close()
    assert.equals(0, srv:wait(GRACE + 2))
  end)

  it("exits at once on a second signal", function()
    start()
    local stuck = raw_ws({ token = "bob", device = "stuck-twice" })
    local t0 = client.now()
    assert.is_true(srv:signal("TERM"))
    assert.equals(1001, (stuck:expect_close(2)))
    assert.is_true(srv:alive())
    assert.is_true(srv:signal("TERM"))
    local rc = srv:wait(3)
    assert.is_not_nil(rc, "still running after the second signal")
    assert.is_true(client.now() - t0 < 2.5, "the second signal did not end the drain")
    stuck:close()
  end)
end)
