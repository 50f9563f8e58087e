-- Integration: TLS listeners (src/tls.c, net.c). The spec makes its own
-- self-signed certificates with the openssl command; the server listens on a
-- plain port and a TLS port side by side. https publish and wss delivery go
-- through lua-http (luaossl) with a client context that does not verify the
-- self-signed certificate; protocol versions and certificate fingerprints
-- are checked with `openssl s_client`.
local server = require "helpers.server"
local client = require "helpers.client"
local util = require "helpers.util"
local websocket = require "http.websocket"
local http_request = require "http.request"
local http_tls = require "http.tls"
local openssl_ctx = require "openssl.ssl.context"
local socket = require "cqueues.socket"
local cqueues = require "cqueues"

local cjson = client.json
local shq = util.shq

local sh_out = util.run

-- A self-signed P-256 certificate and key in dir, named name.pem/name.key.
local function make_cert(dir, name, cn)
  local cert, key = dir .. "/" .. name .. ".pem", dir .. "/" .. name .. ".key"
  local out, rc = sh_out(string.format(
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=%s -keyout %s -out %s",
    cn or "localhost", shq(key), shq(cert)))
  assert(rc == 0, "openssl req failed: " .. out)
  return cert, key
end

local function fingerprint_of_file(cert)
  local out = sh_out("openssl x509 -noout -fingerprint -sha256 -in " .. shq(cert))
  return out:match("Fingerprint=(%S+)")
end

-- The fingerprint of the certificate the server presents on port.
local function served_fingerprint(port)
  local out = sh_out(string.format(
    "echo | timeout 5 openssl s_client -connect 127.0.0.1:%d -servername localhost 2>/dev/null"
      .. " | openssl x509 -noout -fingerprint -sha256", port))
  return out:match("Fingerprint=(%S+)")
end

local function client_ctx()
  local ctx = http_tls.new_client_context()
  ctx:setVerify(openssl_ctx.VERIFY_NONE)   -- self-signed: trust what the spec made
  return ctx
end

local function https(port, path, opts)
  opts = opts or {}
  local req = http_request.new_from_uri("https://127.0.0.1:" .. port .. path)
  req.ctx = client_ctx()
  req.version = 1.1
  req.headers:upsert(":method", opts.method or "GET")
  for k, v in pairs(opts.headers or {}) do req.headers:upsert(k, v) end
  if opts.body then
    req:set_body(opts.body)
    req.headers:delete("expect")
  end
  local headers, stream = req:go(client.TIMEOUT)
  assert(headers, "https request failed: " .. tostring(stream))
  local body = assert(stream:get_body_as_string(client.TIMEOUT))
  stream:shutdown()
  if stream.connection then pcall(stream.connection.close, stream.connection) end
  return tonumber(headers:get(":status")), cjson.decode(body), body
end

local function https_publish(port, msg)
  return https(port, "/publish", {
    method = "POST", body = cjson.encode(msg),
    headers = { ["content-type"] = "application/json", authorization = "Bearer " .. server.PUBLISHER },
  })
end

local function wss(port, token, channels)
  local ws = websocket.new_from_uri(string.format("wss://127.0.0.1:%d/ws?token=%s&channels=%s&device=%s", port, token,
    channels, client.unique("dev")))
  ws.request.ctx = client_ctx()
  assert(ws:connect(client.TIMEOUT))
  local welcome = client.recv_json(ws)
  assert.equal("welcome", welcome.type)
  return ws
end

-- A raw TCP connection to port (cqueues), for silent and garbage clients.
local function raw(port)
  local s = socket.connect { host = "127.0.0.1", port = port, nodelay = true }
  s:setmode("b", "b")
  s:onerror(function(_, _, why) return why end)
  assert(s:connect(client.TIMEOUT))
  return s
end

-- Seconds until the server closes s (reads until EOF), or nil after limit.
local function closed_after(s, limit)
  local t0 = cqueues.monotime()
  while cqueues.monotime() - t0 < limit do
    local data, err = s:read(-4096, 0.1)
    if data == nil and err ~= nil and err ~= 110 then return cqueues.monotime() - t0 end   -- 110: ETIMEDOUT
    if data == nil and err == nil then return cqueues.monotime() - t0 end
  end
  return nil
end

local function start(cert, key, overrides)
  local tls_port = server.free_port()
  local srv = server.start(overrides, {
    listen = function(port)
      return { "127.0.0.1:" .. port, { addr = "127.0.0.1:" .. tls_port, tls = { cert = cert, key = key } } }
    end,
  })
  srv.tls_port = tls_port
  -- the TLS port listens once the plain one does (same start)
  assert(server.port_open(tls_port))
  return srv
end

-- A server with its own fresh certificate, stopped (and its directory
-- removed) when the test ends. Returns srv, dir, cert, key.
local function fresh_server(overrides)
  local dir = util.mkdtemp("moonpush-tls")
  local cert, key = make_cert(dir, "a")
  local srv = start(cert, key, overrides)
  finally(function() srv:stop(); util.rm_rf(dir) end)
  return srv, dir, cert, key
end

describe("TLS listener", function()
  local dir, cert, key, srv

  setup(function()
    dir = util.mkdtemp("moonpush-tls")
    cert, key = make_cert(dir, "a")
    srv = start(cert, key, { timeouts = { request_ms = 1500 } })
  end)

  teardown(function()
    if srv then srv:stop() end
    util.rm_rf(dir)
  end)

  it("answers https, and the plain listener beside it still works", function()
    local status, body = https(srv.tls_port, "/health")
    assert.equal(200, status)
    assert.equal("ok", body.status)
    local pstatus = client.health(srv)
    assert.equal(200, pstatus)
  end)

  it("delivers an https publish to a wss subscriber and to a plain ws one", function()
    local ch = client.unique("tls")
    local secure = wss(srv.tls_port, "bob", ch)
    local plain = client.ws(srv, { token = "bob", channels = ch, device = client.unique("dev") })
    local status, answer, raw_body = https_publish(srv.tls_port, { channel = ch, data = { n = 1 } })
    assert.equal(200, status, raw_body)
    assert.is_truthy(answer)
    local m = client.recv_message(secure)
    assert.equal(ch, m.channel)
    assert.same({ n = 1 }, m.data)
    assert.same({ n = 1 }, client.recv_message(plain).data)
    -- and a plain publish reaches the wss client
    client.publish_ok(srv, { channel = ch, data = "two" })
    assert.equal("two", client.recv_message(secure).data)
    client.close(secure)
    client.close(plain)
  end)

  it("delivers a burst bigger than a TLS record intact and in order", function()
    local ch = client.unique("burst")
    local secure = wss(srv.tls_port, "bob", ch)
    local big = string.rep("x", 20000)
    local items = {}
    for i = 1, 40 do items[i] = { channel = ch, data = { i = i, pad = big } } end
    for i = 1, 40 do client.publish_ok(srv, items[i]) end
    for i = 1, 40 do
      local m = client.recv_message(secure, 5)
      assert.equal(i, m.data.i)
      assert.equal(big, m.data.pad)
    end
    client.close(secure)
  end)

  it("accepts TLS 1.2 and 1.3 and refuses TLS 1.1", function()
    for _, v in ipairs({ "-tls1_2", "-tls1_3" }) do
      local out, rc = sh_out(string.format("echo | timeout 5 openssl s_client %s -connect 127.0.0.1:%d", v, srv.tls_port))
      assert.equal(0, rc, v .. ": " .. out)
    end
    local before = srv:log_count("tls handshake failed")
    -- SECLEVEL=0: the client itself would not offer TLS 1.1 otherwise
    local out, rc = sh_out(string.format(
      "echo | timeout 5 openssl s_client -tls1_1 -cipher DEFAULT@SECLEVEL=0 -connect 127.0.0.1:%d", srv.tls_port))
    assert.not_equal(0, rc, out)
    local line = srv:wait_log("tls handshake failed", before)
    assert.matches("unsupported protocol", line)
    assert.matches("remote=127.0.0.1:", line, 1, true)
  end)

  it("closes a client that connects and sends nothing after the handshake timeout", function()
    local before = srv:log_count("tls handshake timeout")
    local s = raw(srv.tls_port)
    local t = closed_after(s, 5)
    assert.is_truthy(t, "not closed within 5 s")
    assert.is_true(t > 1.0, "closed too early: " .. t)
    srv:wait_log("tls handshake timeout", before)
    s:close()
  end)

  it("closes a plain-HTTP client on the TLS port; others are unaffected", function()
    local ch = client.unique("garbage")
    local secure = wss(srv.tls_port, "bob", ch)
    local s = raw(srv.tls_port)
    assert(s:write("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert(s:flush())
    assert.is_truthy(closed_after(s, 3), "garbage client not closed")
    s:close()
    local s2 = raw(srv.tls_port)
    s2:write(string.rep("\255\0\22\3", 4000))   -- may meet EPIPE: the server closes early
    s2:flush()
    assert.is_truthy(closed_after(s2, 3), "garbage client not closed")
    s2:close()
    client.publish_ok(srv, { channel = ch, data = "still here" })
    assert.equal("still here", client.recv_message(secure).data)
    assert.equal(200, (https(srv.tls_port, "/health")))
    assert.is_true(srv:alive())
    client.close(secure)
  end)
end)

describe("TLS slow consumer", function()
  -- A client that stops reading: TLS records wait in the socket with
  -- messages behind them. The 4001 close drops queued messages but never
  -- bytes already inside a pending record, so the client, reading at last,
  -- sees well-formed frames up to the close frame.
  it("is closed with 4001 and its stream stays well-formed", function()
    local srv = fresh_server({ limits = { max_outbound_bytes = 65536, max_body_bytes = 8192, socket_send_buffer = 4096 } })
    local ch = client.unique("slow")
    local slow = client.raw_ws({ port = srv.tls_port }, { token = "bob", device = client.unique("slow"),
                                                          channels = ch, rcvbuf = 4096, tls = client_ctx() })
    local PAD = ("p"):rep(3000)
    local gone
    for i = 1, 2000 do
      local a = client.publish_ok(srv, { channel = ch, data = { i = i, pad = PAD } })
      if a.recipients == 0 then gone = i break end
    end
    assert.is_truthy(gone, "never closed as slow")
    slow:set_rcvbuf(1048576)
    local last = 0
    while true do
      local f, err = slow:read_frame(5)
      assert(f, "stream ended before a close frame: " .. tostring(err))
      if f.opcode == 0x8 then
        assert.equal(4001, (client.parse_close(f.payload)))
        break
      end
      local m = assert(cjson.decode(f.payload), "not JSON: " .. f.payload:sub(1, 80))
      assert.equal(last + 1, m.data.i)
      last = m.data.i
    end
    assert.is_true(last < gone)
    client.assert_serves(srv)
  end)
end)

describe("TLS shutdown", function()
  it("drains a wss client on SIGTERM: queued messages, the reconnect hint, close 1001, exit 0", function()
    local srv = fresh_server()
    local ch = client.unique("bye")
    local secure = wss(srv.tls_port, "bob", ch)
    for i = 1, 3 do client.publish_ok(srv, { channel = ch, data = i }) end
    srv:signal("TERM")
    local code, _, skipped = client.expect_close(secure, 5)
    assert.equal(1001, code)
    assert.equal(4, skipped, "the 3 messages and the reconnect hint before the close")
    assert.equal(0, srv:wait(5))
  end)
end)

describe("TLS certificate reload on SIGHUP", function()
  it("serves the new certificate to new connections; an open wss keeps receiving", function()
    local srv, dir, cert, key = fresh_server()
    local old_fp = fingerprint_of_file(cert)
    assert.equal(old_fp, served_fingerprint(srv.tls_port))

    local ch = client.unique("reload")
    local secure = wss(srv.tls_port, "bob", ch)
    -- a new pair under the same names (written aside, then renamed in)
    local ncert, nkey = make_cert(dir, "next")
    local new_fp = fingerprint_of_file(ncert)
    assert.not_equal(old_fp, new_fp)
    assert(os.rename(ncert, cert))
    assert(os.rename(nkey, key))
    local before = srv:log_count("config reloaded")
    srv:signal("HUP")
    srv:wait_log("config reloaded", before)

    assert.equal(new_fp, served_fingerprint(srv.tls_port))
    client.publish_ok(srv, { channel = ch, data = "after reload" })
    assert.equal("after reload", client.recv_message(secure).data)

    -- a broken certificate: the reload is refused, the last good one serves
    local f = assert(io.open(cert, "w"))
    f:write("not a certificate\n")
    f:close()
    local refused = srv:log_count("config reload refused")
    srv:signal("HUP")
    local line = srv:wait_log("config reload refused", refused)
    assert.matches(cert, line, 1, true)
    assert.equal(new_fp, served_fingerprint(srv.tls_port))
    client.publish_ok(srv, { channel = ch, data = "still open" })
    assert.equal("still open", client.recv_message(secure).data)
    client.close(secure)
  end)
end)

describe("TLS config", function()
  local dir, cert, key

  setup(function()
    dir = util.mkdtemp("moonpush-tls")
    cert, key = make_cert(dir, "a")
  end)
  teardown(function() util.rm_rf(dir) end)

  -- Runs `moonpush --check-config` on a config with the given listen value.
  local function check(listen)
    local cfg = server.default_config()
    cfg.listen = listen
    local file = dir .. "/check.lua"
    util.write_file(file, "return " .. server.serialize(cfg) .. "\n")
    return sh_out(shq(server.BIN) .. " --check-config " .. shq(file))
  end

  it("accepts a plain listener and a TLS one, paths relative to the config", function()
    local out, rc = check({ "127.0.0.1:1", { addr = "127.0.0.1:2", tls = { cert = "a.pem", key = "a.key" } } })
    assert.equal(0, rc, out)
  end)

  it("refuses a missing certificate file, naming it", function()
    local out, rc = check({ { addr = "127.0.0.1:2", tls = { cert = "missing.pem", key = "a.key" } } })
    assert.not_equal(0, rc)
    assert.matches(dir .. "/missing.pem", out, 1, true)
  end)

  it("refuses a file that is not a certificate, naming it and the reason", function()
    util.write_file(dir .. "/junk.pem", "junk\n")
    local out, rc = check({ { addr = "127.0.0.1:2", tls = { cert = "junk.pem", key = "a.key" } } })
    assert.not_equal(0, rc)
    assert.matches("cannot load the certificate chain " .. dir .. "/junk.pem", out, 1, true)
  end)

  it("refuses a key that does not match the certificate", function()
    make_cert(dir, "other")
    local out, rc = check({ { addr = "127.0.0.1:2", tls = { cert = "a.pem", key = "other.key" } } })
    assert.not_equal(0, rc)
    assert.matches("does not match", out, 1, true)
  end)

  it("refuses unknown keys and malformed listeners", function()
    local cases = {
      { { { addr = "127.0.0.1:2", tls = { cert = "a.pem", key = "a.key", ca = "x" } } }, "unknown key listen[1].tls.ca" },
      { { { addr = "127.0.0.1:2", tsl = {} } }, "unknown key listen[1].tsl" },
      { { { addr = "127.0.0.1:2", tls = { cert = "a.pem" } } }, "listen[1].tls.key must be a file path" },
      { { "127.0.0.1:2", "nonsense" }, "listen[2] must be" },
      { {}, "non-empty list" },
      { { "127.0.0.1:2", "127.0.0.1:2" }, "listed twice" },
    }
    for _, c in ipairs(cases) do
      local out, rc = check(c[1])
      assert.not_equal(0, rc, out)
      assert.matches(c[2], out, 1, true)
    end
  end)

  it("a bad certificate path stops the start with a message naming the file", function()
    local ok, err = pcall(server.start, nil, {
      listen = function(port)
        return { "127.0.0.1:" .. port, { addr = "127.0.0.1:" .. server.free_port(),
                                         tls = { cert = dir .. "/nope.pem", key = key } } }
      end,
    })
    assert.is_false(ok)
    assert.matches(dir .. "/nope.pem", tostring(err), 1, true)
    assert.matches("exit code 1", tostring(err), 1, true)
  end)
end)
