-- Integration: every bad HTTP input of docs/protocol.md "Errors over HTTP"
-- gets its status and JSON error code, and costs nothing else: after each,
-- a fresh client connects and receives a publish (client.assert_serves).
local server = require "helpers.server"
local client = require "helpers.client"

local PUB = server.PUBLISHER

-- A raw POST /publish with the given body and extra header lines.
local function post(body, opts)
  opts = opts or {}
  local lines = { (opts.request_line or "POST /publish HTTP/1.1"), "Host: 127.0.0.1" }
  if opts.auth ~= false then lines[#lines + 1] = "Authorization: Bearer " .. PUB end
  if opts.content_type ~= false then
    lines[#lines + 1] = "Content-Type: " .. (opts.content_type or "application/json")
  end
  if opts.content_length ~= false then
    lines[#lines + 1] = "Content-Length: " .. (opts.content_length or #body)
  end
  for _, h in ipairs(opts.headers or {}) do lines[#lines + 1] = h end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. body
end

describe("moonpush bad input", function()
  local srv
  local MAX_BATCH, MAX_BODY, MAX_HEADER = 5, 4096, 2048

  lazy_setup(function()
    srv = server.start({
      limits = { max_batch = MAX_BATCH, max_body_bytes = MAX_BODY, max_header_bytes = MAX_HEADER },
    })
  end)

  lazy_teardown(function()
    if srv then assert.equals(0, srv:stop()) end
  end)

  -- Publish `body` (string), expect status + error code, then prove the
  -- server still serves.
  local function rejects(body, status, code, opts)
    local st, ans, _, raw = client.publish(srv, body, opts)
    assert.equals(status, st, "answer: " .. tostring(raw))
    assert.is_table(ans, "error body is not JSON: " .. tostring(raw))
    assert.equals(code, ans.error, raw)
    assert.is_string(ans.message, raw)
    client.assert_serves(srv)
    return ans
  end

  describe("publish bodies", function()
    local cases = {
      { "invalid JSON", '{"channel":"news","data":', "bad_json" },
      { "JSON with a trailing comma", '{"channel":"news","data":1,}', "bad_json" },
      { "a body that is not JSON at all", "channel=news&data=1", "bad_json" },
      { "an empty body", "", "bad_json" },
      { "JSON followed by garbage", '{"channel":"news","data":1} xyz', "bad_json" },
      { "a JSON number", "42", "bad_message" },
      { "a JSON string", '"hello"', "bad_message" },
      { "a channel that is not a string", '{"channel":5,"data":1}', "bad_message" },
      { "a user that is not a string", '{"user":["alice"],"data":1}', "bad_message" },
      { "no channel and no user", '{"data":1}', "missing_target" },
      { "both channel and user", '{"channel":"news","user":"alice","data":1}', "missing_target" },
      { "no data", '{"channel":"news"}', "missing_data" },
      { "an empty channel name", '{"channel":"","data":1}', "bad_channel" },
      { "a channel name with a space", '{"channel":"bad name","data":1}', "bad_channel" },
      { "a channel name with a slash", '{"channel":"a/b","data":1}', "bad_channel" },
      { "a channel name over 128 bytes", '{"channel":"' .. ("c"):rep(129) .. '","data":1}', "bad_channel" },
      { "an empty user name", '{"user":"","data":1}', "bad_channel" },
      { "a user name with a space", '{"user":"al ice","data":1}', "bad_channel" },
      { "an empty batch", "[]", "empty_batch" },
      { "a batch item that is not an object", '[{"channel":"a","data":1}, 7]', "bad_message" },
    }
    for _, c in ipairs(cases) do
      it("rejects " .. c[1] .. " with 400 " .. c[3], function()
        rejects(c[2], 400, c[3])
      end)
    end

    it("says where invalid JSON broke in the message", function()
      local ans = rejects('{"channel":"news",\n"data": [1, 2,, 3]}', 400, "bad_json")
      assert.truthy(ans.message:find("%d"), "message does not name a position: " .. ans.message)
    end)

    it("accepts a channel name of exactly 128 bytes", function()
      local name = ("c"):rep(128)
      local a = client.publish_ok(srv, { channel = name, data = 1 })
      assert.equals(name, a.channel)
    end)

    it("rejects a batch of max_batch + 1 items with 400 batch_too_large", function()
      local items = {}
      for i = 1, MAX_BATCH + 1 do items[i] = { channel = "bt", data = i } end
      rejects(client.json.encode(items), 400, "batch_too_large")
      -- and accepts exactly max_batch, publishing none of the rejected batch
      items[#items] = nil
      local answers = client.publish_ok(srv, items)
      assert.equals(MAX_BATCH, #answers)
      assert.equals(1, answers[1].seq)
    end)

    it("rejects a whole batch for one bad item and names the item", function()
      local ch = client.unique("atomic-")
      local ans = rejects(client.json.encode({
        { channel = ch, data = 1 },
        { channel = ch, data = 2 },
        { channel = ch },
      }), 400, "missing_data")
      -- index 2 counting from 0, or 3 counting from 1
      assert.truthy(ans.message:find("item [23]"), "message does not name the item: " .. ans.message)
      -- nothing of it was published
      assert.equals(1, client.publish_ok(srv, { channel = ch, data = "first" }).seq)
    end)

    it("rejects a batch whose item has a bad channel, publishing none", function()
      local ch = client.unique("atomic2-")
      rejects(client.json.encode({
        { channel = ch, data = 1 },
        { channel = "no spaces allowed", data = 2 },
      }), 400, "bad_channel")
      assert.equals(1, client.publish_ok(srv, { channel = ch, data = "first" }).seq)
    end)
  end)

  describe("publish requests", function()
    it("rejects a body over max_body_bytes with 413 body_too_large and closes", function()
      local body = '{"channel":"big","data":"' .. ("x"):rep(MAX_BODY) .. '"}'
      local resp, err, c = client.raw_request(srv, post(body))
      assert.is_table(resp, err)
      assert.equals(413, resp.status)
      assert.equals("body_too_large", resp.json and resp.json.error)
      assert.is_true((c:closed_within(2)), "connection not closed after 413")
      c:close()
      client.assert_serves(srv)
    end)

    it("rejects a declared Content-Length over max_body_bytes with 413 before the body", function()
      -- only the headers are sent: the answer must not wait for the body
      local resp, err, c = client.raw_request(srv,
        post("", { content_length = tostring(MAX_BODY * 100) }))
      c:close()
      assert.is_table(resp, err)
      assert.equals(413, resp.status)
      assert.equals("body_too_large", resp.json and resp.json.error)
      client.assert_serves(srv)
    end)

    it("rejects a chunked body over max_body_bytes with 413", function()
      local chunk = ("x"):rep(1000)
      local req = post("", { content_length = false, headers = { "Transfer-Encoding: chunked" } })
      for _ = 1, 6 do req = req .. string.format("%x\r\n%s\r\n", #chunk, chunk) end
      req = req .. "0\r\n\r\n"
      local resp, err, c = client.raw_request(srv, req)
      c:close()
      assert.is_table(resp, err)
      assert.equals(413, resp.status)
      assert.equals("body_too_large", resp.json and resp.json.error)
      client.assert_serves(srv)
    end)

    it("rejects headers over max_header_bytes with 431 headers_too_large and closes", function()
      local resp, err, c = client.raw_request(srv,
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Filler: " .. ("f"):rep(MAX_HEADER + 100) .. "\r\n\r\n")
      assert.is_table(resp, err)
      assert.equals(431, resp.status)
      assert.equals("headers_too_large", resp.json and resp.json.error)
      assert.is_true((c:closed_within(2)), "connection not closed after 431")
      c:close()
      client.assert_serves(srv)
    end)

    it("rejects many small headers adding up over max_header_bytes with 431", function()
      local h = {}
      for i = 1, 200 do h[#h + 1] = "X-H" .. i .. ": v" end
      local resp, err, c = client.raw_request(srv,
        "GET /health HTTP/1.1\r\nHost: x\r\n" .. table.concat(h, "\r\n") .. "\r\n\r\n")
      c:close()
      assert.is_table(resp, err)
      assert.equals(431, resp.status)
      assert.equals("headers_too_large", resp.json and resp.json.error)
      client.assert_serves(srv)
    end)

    it("rejects a request line over max_header_bytes with 431", function()
      local resp, err, c = client.raw_request(srv,
        "GET /health?" .. ("q"):rep(MAX_HEADER + 10) .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      c:close()
      assert.is_table(resp, err)
      assert.equals(431, resp.status)
      assert.equals("headers_too_large", resp.json and resp.json.error)
      client.assert_serves(srv)
    end)

    it("rejects a publish with Content-Type text/plain with 415 unsupported_media_type", function()
      rejects('{"channel":"news","data":1}', 415, "unsupported_media_type",
        { headers = { ["content-type"] = "text/plain" } })
    end)

    it("rejects a publish with Content-Type application/x-www-form-urlencoded with 415", function()
      rejects('{"channel":"news","data":1}', 415, "unsupported_media_type",
        { headers = { ["content-type"] = "application/x-www-form-urlencoded" } })
    end)

    it("rejects a publish without Content-Length or chunked body with 411 length_required", function()
      local resp, err, c = client.raw_request(srv, post("", { content_length = false }))
      c:close()
      assert.is_table(resp, err)
      assert.equals(411, resp.status)
      assert.equals("length_required", resp.json and resp.json.error)
      client.assert_serves(srv)
    end)

    it("keeps the connection alive after a 400 on a well-formed request", function()
      local c = client.tcp(srv)
      assert(c:send(post('{"data":1}')))
      local r1, e1 = c:response()
      assert.is_table(r1, e1)
      assert.equals(400, r1.status)
      assert.equals("missing_target", r1.json and r1.json.error)
      local ch = client.unique("ka-")
      assert(c:send(post('{"channel":"' .. ch .. '","data":1}')))
      local r2, e2 = c:response()
      c:close()
      assert.is_table(r2, e2)
      assert.equals(200, r2.status)
      assert.equals(1, r2.json and r2.json.seq)
    end)
  end)

  describe("malformed HTTP", function()
    local cases = {
      { "a garbage request line", "GARBAGE\r\n\r\n" },
      { "a header without a colon", "GET /health HTTP/1.1\r\nHost x\r\n\r\n" },
      { "a bad Content-Length", "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n" },
      { "a bad chunk size", "POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " .. PUB ..
          "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n" },
      { "binary junk", "\0\1\2\3\255\254\r\n\r\n" },
    }
    for _, c in ipairs(cases) do
      it("answers " .. c[1] .. " with 400 bad_request and closes", function()
        local resp, err, conn = client.raw_request(srv, c[2])
        assert.is_table(resp, err)
        assert.equals(400, resp.status)
        assert.equals("bad_request", resp.json and resp.json.error)
        assert.is_true((conn:closed_within(2)), "connection not closed after an unparsable request")
        conn:close()
        client.assert_serves(srv)
      end)
    end

    it("survives a client that disconnects in the middle of a request", function()
      for _, partial in ipairs({ "GET /hea", "POST /publish HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"ch" }) do
        local c = client.tcp(srv)
        assert(c:send(partial))
        c:close()
      end
      client.assert_serves(srv)
    end)
  end)

  describe("WebSocket handshakes", function()
    local cases = {
      { "a missing Sec-WebSocket-Key", { key = false } },
      { "a Sec-WebSocket-Key that is not 16 bytes of base64", { key = "c2hvcnQ=" } },
      { "a Sec-WebSocket-Key that is not base64", { key = "!!!!not-base64!!!!!!!!==" } },
      { "a missing Sec-WebSocket-Version", { version = false } },
      { "Sec-WebSocket-Version 8", { version = "8" } },
    }
    for _, c in ipairs(cases) do
      it("rejects an upgrade with " .. c[1] .. " with 400 bad_handshake", function()
        local o = { token = "bob", device = client.unique("hs-") }
        for k, v in pairs(c[2]) do o[k] = v end
        local resp, err, conn = client.raw_request(srv, client.upgrade_request(srv, o))
        conn:close()
        assert.is_table(resp, err)
        assert.equals(400, resp.status)
        assert.equals("bad_handshake", resp.json and resp.json.error)
        client.assert_serves(srv)
      end)
    end

    it("answers a plain GET on the websocket route with 426 upgrade_required", function()
      local resp, err, conn = client.raw_request(srv,
        "GET /ws?token=bob HTTP/1.1\r\nHost: x\r\n\r\n")
      conn:close()
      assert.is_table(resp, err)
      assert.equals(426, resp.status)
      assert.equals("upgrade_required", resp.json and resp.json.error)
      client.assert_serves(srv)
    end)

    it("answers an unknown route with 404 and a wrong method with 405 plus Allow", function()
      local r1, e1, c1 = client.raw_request(srv, "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
      c1:close()
      assert.is_table(r1, e1)
      assert.equals(404, r1.status)
      assert.equals("not_found", r1.json and r1.json.error)
      local r2, e2, c2 = client.raw_request(srv, "DELETE /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
      c2:close()
      assert.is_table(r2, e2)
      assert.equals(405, r2.status)
      assert.equals("method_not_allowed", r2.json and r2.json.error)
      assert.matches("POST", r2.headers["allow"] or "")
      client.assert_serves(srv)
    end)
  end)
end)

describe("moonpush slow requests", function()
  local srv
  local REQUEST_MS = 300

  lazy_setup(function()
    srv = server.start({ timeouts = { request_ms = REQUEST_MS } })
  end)

  lazy_teardown(function()
    if srv then assert.equals(0, srv:stop()) end
  end)

  local slow = {
    { "headers that never finish", "GET /health HTTP/1.1\r\nHost: x\r\n" },
    { "a body that never finishes", post('{"channel":"slow"', { content_length = "40" }) },
    { "a connection that sends nothing", "" },
    { "an upgrade request that never finishes", "GET /ws?token=bob HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" },
  }
  for _, c in ipairs(slow) do
    it("answers " .. c[1] .. " with 408 request_timeout within request_ms and closes", function()
      local conn = client.tcp(srv)
      local t0 = client.now()
      if c[2] ~= "" then assert(conn:send(c[2])) end
      local resp, err = conn:response(REQUEST_MS / 1000 + 2)
      local elapsed = client.now() - t0
      if c[2] == "" and resp == nil then
        -- nothing was sent: closing without an answer is acceptable too
        assert.is_true(err == "eof" or err == "reset", "no answer and not closed: " .. tostring(err))
      else
        assert.is_table(resp, err)
        assert.equals(408, resp.status)
        assert.equals("request_timeout", resp.json and resp.json.error)
        assert.is_true((conn:closed_within(2)), "connection not closed after 408")
      end
      assert.is_true(elapsed >= REQUEST_MS / 1000 * 0.8, "answered too early: " .. elapsed .. "s")
      assert.is_true(elapsed < REQUEST_MS / 1000 + 1.5, "answered too late: " .. elapsed .. "s")
      conn:close()
      client.assert_serves(srv)
    end)
  end

  it("times out the whole request, not each byte (slowloris)", function()
    local conn = client.tcp(srv)
    local t0 = client.now()
    local req = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " .. ("a"):rep(40)
    local resp, err
    for i = 1, #req do
      if not conn:send(req:sub(i, i)) then break end
      -- stop sending as soon as the server answered (or closed)
      conn.sock:clearerr()
      local ready = conn.sock:fill(1, 0.05)
      conn.sock:clearerr()
      if ready then break end
      if client.now() - t0 > REQUEST_MS / 1000 + 1.5 then break end
    end
    resp, err = conn:response(REQUEST_MS / 1000 + 1)
    local elapsed = client.now() - t0
    conn:close()
    assert.is_table(resp, err)
    assert.equals(408, resp.status)
    assert.is_true(elapsed < REQUEST_MS / 1000 + 2, "took " .. elapsed .. "s")
    client.assert_serves(srv)
  end)

  it("sends nothing unasked on an idle keep-alive connection but a 408 or a close", function()
    local conn = client.tcp(srv)
    assert(conn:send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
    local r = conn:response()
    assert.equals(200, r and r.status)
    -- after the answer, waiting is not a slow request: the server may close
    -- the idle connection, but must not send an unsolicited 408 body
    local data = conn:drain(REQUEST_MS / 1000 + 0.5)
    conn:close()
    assert.is_true(data == "" or data:find("^HTTP/1%.1 408") ~= nil, "unexpected bytes: " .. data)
  end)
end)

describe("moonpush connection limit", function()
  local srv

  lazy_setup(function()
    srv = server.start({ max_connections = 3 })
  end)

  lazy_teardown(function()
    if srv then assert.equals(0, srv:stop()) end
  end)

  it("answers 503 too_many_connections past max_connections, then serves again", function()
    local held = {}
    for i = 1, 3 do
      held[i] = client.raw_ws(srv, { token = "bob", device = "held-" .. i })
    end
    local resp, err, c = client.raw_request(srv, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    if resp then
      assert.equals(503, resp.status)
      assert.equals("too_many_connections", resp.json and resp.json.error, "body: " .. tostring(resp.body))
    end
    assert.is_true((c:closed_within(2)), "connection over the limit not closed (" .. tostring(err) .. ")")
    c:close()
    assert.is_table(resp, "no 503 answer before the close: " .. tostring(err))
    for _, h in ipairs(held) do h:close() end
    -- the held ones are gone: poll (bounded) until a client is served again
    local deadline = client.now() + 3
    local ok, e
    repeat
      server.sleep(0.05)
      ok, e = pcall(client.assert_serves, srv)
    until ok or client.now() > deadline
    assert.is_true(ok, tostring(e))
  end)
end)
