-- Integration: chunked trailers and refused upgrades (issue 10, item 1).
--
-- A chunked body may end with trailer fields. The server ignores them
-- (docs/protocol.md, "Errors over HTTP"): a trailer never becomes a header,
-- so a lowercase `authorization:` trailer does not authenticate, and the
-- 67-byte request that once read past a heap buffer is answered like any
-- other. A refused WebSocket handshake leaves the connection speaking HTTP:
-- the bytes behind it are the next request, answered once.
local server = require "helpers.server"
local client = require "helpers.client"

local PUB = server.PUBLISHER

-- A chunked POST /publish: header lines, the body in one chunk, then the
-- trailer lines after the last chunk.
local function chunked_publish(headers, body, trailers)
  local lines = { "POST /publish HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked" }
  for _, h in ipairs(headers) do lines[#lines + 1] = h end
  local req = table.concat(lines, "\r\n") .. "\r\n\r\n"
  if #body > 0 then req = req .. string.format("%x\r\n%s\r\n", #body, body) end
  req = req .. "0\r\n"
  for _, t in ipairs(trailers) do req = req .. t .. "\r\n" end
  return req .. "\r\n"
end

describe("moonpush chunked trailers", function()
  local srv
  local MAX_HEADER = 2048

  lazy_setup(function()
    srv = server.start({ limits = { max_header_bytes = MAX_HEADER } })
  end)

  lazy_teardown(function()
    if srv then assert.equals(0, srv:stop()) end
  end)

  it("answers the 67-byte trailer request (no token) with 401 and keeps serving", function()
    local req = "POST /publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n"
    assert.equals(67, #req)
    local resp, err, c = client.raw_request(srv, req)
    c:close()
    assert.is_table(resp, err)
    assert.equals(401, resp.status, resp.body)
    assert.equals("unauthorized", resp.json.error)
    client.assert_serves(srv)
  end)

  it("does not authenticate a publish with an authorization trailer", function()
    local ch = client.unique("trailer-auth-")
    local ws = client.ws(srv, { token = "bob", device = client.unique("d-"), channels = { ch } })
    for _, name in ipairs({ "authorization", "Authorization" }) do
      local req = chunked_publish({ "Content-Type: application/json" },
        '{"channel":"' .. ch .. '","data":1}', { name .. ": Bearer " .. PUB, "X-T: 1" })
      local resp, err, c = client.raw_request(srv, req)
      c:close()
      assert.is_table(resp, err)
      assert.equals(401, resp.status, resp.body)
      assert.equals("unauthorized", resp.json.error)
    end
    client.expect_silence(ws, 0.3)
    client.close(ws)
    client.assert_serves(srv)
  end)

  it("publishes a chunked body that ends with trailers, and keeps the connection", function()
    local ch = client.unique("trailer-ok-")
    local ws = client.ws(srv, { token = "bob", device = client.unique("d-"), channels = { ch } })
    local c = client.tcp(srv)
    for i = 1, 2 do
      assert(c:send(chunked_publish({ "Authorization: Bearer " .. PUB, "Content-Type: application/json" },
        '{"channel":"' .. ch .. '","data":' .. i .. '}', { "X-T: 1", "X-Checksum: abc" })))
      local resp, err = c:response()
      assert.is_table(resp, err)
      assert.equals(200, resp.status, resp.body)
      assert.equals(ch, resp.json.channel)
      assert.equals(i, resp.json.seq)
      assert.equals("keep-alive", resp.headers.connection)
      local m = client.recv_json(ws)
      assert.equals(i, m.data)
    end
    c:close()
    client.close(ws)
  end)

  it("refuses trailers over max_header_bytes with 431 and closes", function()
    local big = {}
    for i = 1, 40 do big[#big + 1] = "X-Pad-" .. i .. ": " .. ("p"):rep(60) end
    local req = chunked_publish({ "Authorization: Bearer " .. PUB }, '{"channel":"x","data":1}', big)
    local resp, err, c = client.raw_request(srv, req)
    assert.is_table(resp, err)
    assert.equals(431, resp.status, resp.body)
    assert.equals("headers_too_large", resp.json.error)
    assert.is_true(c:closed_within(2))
    c:close()
    client.assert_serves(srv)
  end)

  it("does not open a WebSocket with a token sent as a trailer", function()
    local req = client.upgrade_request(srv, { headers = { ["Transfer-Encoding"] = "chunked" } }) ..
      "0\r\nauthorization: Bearer bob\r\nX-T: 1\r\n\r\n"
    local resp, err, c = client.raw_request(srv, req)
    c:close()
    assert.is_table(resp, err)
    assert.equals(401, resp.status, resp.body)
    client.assert_serves(srv)
  end)

  it("answers the request behind a refused handshake on the same connection", function()
    -- no Sec-WebSocket-Version: 400 bad_handshake, connection kept
    local c = client.tcp(srv)
    assert(c:send(client.upgrade_request(srv, { token = "bob", version = false }) ..
      "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
    local first, err = c:response()
    assert.is_table(first, err)
    assert.equals(400, first.status, first.body)
    local second, err2 = c:response()
    assert.is_table(second, "no answer to the request behind the refused handshake: " .. tostring(err2))
    assert.equals(200, second.status, second.body)
    assert.equals("ok", second.json.status)
    c:close()
  end)

  it("answers a refused handshake once, not again for each later read", function()
    local c = client.tcp(srv)
    assert(c:send(client.upgrade_request(srv, { path = "/nowhere" })))
    local first, err = c:response()
    assert.is_table(first, err)
    assert.equals(404, first.status)
    -- a request arriving in pieces: nothing is answered until it is whole
    assert(c:send("GET /hea"))
    server.sleep(0.1)
    assert(c:send("lth HTTP/1.1\r\nHo"))
    local early = c:drain(0.3)
    assert.equals("", early)
    assert(c:send("st: x\r\n\r\n"))
    local second, err2 = c:response()
    assert.is_table(second, err2)
    assert.equals(200, second.status, second.body)
    c:close()
    client.assert_serves(srv)
  end)
end)
