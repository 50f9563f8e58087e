-- Clients for the integration specs: lua-http WebSocket + HTTP, and a raw
-- TCP client for malformed HTTP and hand-built WebSocket frames.
-- Every call is bounded by a timeout (default client.TIMEOUT seconds).

local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local errno = require "cqueues.errno"
local cjson = require "cjson.safe"
local websocket = require "http.websocket"
local http_request = require "http.request"
local digest = require "openssl.digest"
local rand = require "openssl.rand"
local basexx = require "basexx"
local bit = require "bit"
local ffi = require "ffi"

local server = require "helpers.server"

local M = {}

M.TIMEOUT = 3
M.json = cjson
M.null = cjson.null

pcall(ffi.cdef, [[
int setsockopt(int sockfd, int level, int optname, const void *optval, unsigned int optlen);
]])

local function now() return cqueues.monotime() end
M.now = now

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~:@,]", function(c) return string.format("%%%02X", c:byte()) end))
end

local function query_string(q)
  if type(q) == "string" then return q end
  local keys = {}
  for k in pairs(q) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = q[k]
    if type(v) == "table" then v = table.concat(v, ",") end
    parts[#parts + 1] = urlencode(k) .. "=" .. urlencode(v)
  end
  return table.concat(parts, "&")
end
M.query_string = query_string

-- Unique-ish names so tests sharing a server do not share channels/devices.
local counter = 0
-- The type and channel of a frame (or of each frame of a list): answers
-- such as `subscribed` carry more fields (epoch, seq) than a spec compares.
function M.pick(t)
  if type(t) ~= "table" then return t end
  if t.type == nil and t[1] ~= nil then
    local out = {}
    for i, v in ipairs(t) do out[i] = M.pick(v) end
    return out
  end
  return { type = t.type, channel = t.channel }
end

function M.unique(prefix)
  counter = counter + 1
  return string.format("%s%d", prefix or "x", counter)
end

---------------------------------------------------------------------------
-- WebSocket (lua-http)
---------------------------------------------------------------------------

-- Build the query for a ws connect from a token string or an opts table:
--   "alice-phone"  |  "token=alice-phone&device=x"  |
--   { token=, device=, channels={...}|"a,b", headers={...}, path="/ws", query=... }
local function ws_opts(q)
  if type(q) == "string" then
    if q:find("=", 1, true) then return { query = q } end
    return { token = q }
  end
  return q or {}
end

function M.ws_uri(srv, q)
  local o = ws_opts(q)
  local query = o.query
  if not query then
    local t = {}
    if o.token then t.token = o.token end
    if o.device then t.device = o.device end
    if o.channels then t.channels = o.channels end
    query = query_string(t)
  end
  local uri = "ws://127.0.0.1:" .. srv.port .. (o.path or "/ws")
  if query ~= "" then uri = uri .. "?" .. query end
  return uri, o
end

-- Connect; returns ws or nil, err (handshake failure, e.g. 401/403).
function M.ws_try(srv, q, timeout)
  local uri, o = M.ws_uri(srv, q)
  local ws = websocket.new_from_uri(uri)
  if o.headers then
    for k, v in pairs(o.headers) do ws.request.headers:upsert(k:lower(), v) end
  end
  local ok, err = ws:connect(timeout or M.TIMEOUT)
  if not ok then return nil, err end
  return ws
end

-- Connect or error. By default also reads the welcome frame (opts.welcome
-- = false to leave it unread); the welcome is stored in ws.welcome.
function M.ws(srv, q, timeout)
  local ws, err = M.ws_try(srv, q, timeout)
  if not ws then
    error("WebSocket connect to " .. (M.ws_uri(srv, q)) .. " failed: " .. tostring(err), 2)
  end
  local o = ws_opts(q)
  if o.welcome ~= false then
    local w = M.recv_json(ws, timeout)
    if w.type ~= "welcome" then
      error("first frame is not a welcome: " .. cjson.encode(w), 2)
    end
    ws.welcome = w
  end
  return ws
end

-- Next text frame, raw. Errors on timeout, close, or a non-text frame.
function M.recv_text(ws, timeout)
  local data, op_or_err, eno = ws:receive(timeout or M.TIMEOUT)
  if data == nil then
    if eno == errno.ETIMEDOUT then
      error("no frame within " .. (timeout or M.TIMEOUT) .. "s", 2)
    end
    error(string.format("connection ended while waiting for a frame: %s (close code %s %q)",
      tostring(op_or_err), tostring(ws.got_close_code), tostring(ws.got_close_message)), 2)
  end
  if op_or_err ~= "text" then
    error("expected a text frame, got " .. tostring(op_or_err), 2)
  end
  return data
end

function M.recv_json(ws, timeout)
  local data = M.recv_text(ws, timeout)
  local v, err = cjson.decode(data)
  if v == nil then error("frame is not JSON (" .. tostring(err) .. "): " .. data, 2) end
  return v, data
end

-- Frames of type "message" only, skipping nothing: errors if the next frame
-- is anything else.
function M.recv_message(ws, timeout)
  local v, raw = M.recv_json(ws, timeout)
  if v.type ~= "message" then
    error("expected a message frame, got " .. raw, 2)
  end
  return v, raw
end

-- Wait for the close; returns code, reason. Text frames before the close
-- are skipped (count returned third). Errors on timeout.
function M.expect_close(ws, timeout)
  local deadline = now() + (timeout or M.TIMEOUT)
  local skipped = 0
  while true do
    local left = deadline - now()
    if left <= 0 then error("connection not closed within " .. (timeout or M.TIMEOUT) .. "s", 2) end
    local data, _, eno = ws:receive(left)
    if data == nil then
      if eno == errno.ETIMEDOUT and ws.readyState < 2 then
        error("connection not closed within " .. (timeout or M.TIMEOUT) .. "s", 2)
      end
      return ws.got_close_code, ws.got_close_message, skipped
    end
    skipped = skipped + 1
  end
end

-- Assert that nothing arrives within `t` seconds (use sparingly: prefer
-- proving a negative with a later positive).
function M.expect_silence(ws, t)
  local data, op, eno = ws:receive(t or 0.2)
  if data ~= nil then
    error("expected no frame, got " .. tostring(op) .. ": " .. tostring(data), 2)
  end
  if eno ~= errno.ETIMEDOUT then
    error("connection ended: " .. tostring(op), 2)
  end
  return true
end

function M.send_json(ws, v, timeout)
  local s = type(v) == "string" and v or cjson.encode(v)
  local ok, err = ws:send(s, "text", timeout or M.TIMEOUT)
  if not ok then error("send failed: " .. tostring(err), 2) end
end

-- Send a frame, return the decoded answer.
function M.request(ws, v, timeout)
  M.send_json(ws, v, timeout)
  return M.recv_json(ws, timeout)
end

function M.close(ws)
  if ws and ws.readyState and ws.readyState < 3 then
    pcall(ws.close, ws, 1000, "done", 1)
  end
end

function M.close_all(list)
  for _, ws in pairs(list) do M.close(ws) end
end

---------------------------------------------------------------------------
-- HTTP (lua-http)
---------------------------------------------------------------------------

-- Generic request. opts: method, body (string), headers {name=value},
-- timeout. Returns status, decoded JSON body (or nil), headers, raw body.
function M.http(srv, path, opts)
  opts = opts or {}
  local req = http_request.new_from_uri("http://127.0.0.1:" .. srv.port .. path)
  req.version = 1.1
  req.headers:upsert(":method", opts.method or "GET")
  for k, v in pairs(opts.headers or {}) do
    if v == false then req.headers:delete(k:lower()) else req.headers:upsert(k:lower(), v) end
  end
  if opts.body then
    req:set_body(opts.body)
    -- lua-http adds "Expect: 100-continue" to bigger bodies and then waits
    -- 1 s for the 100; send the body at once unless a test asks for it
    if not (opts.headers and opts.headers.expect) then req.headers:delete("expect") end
  end
  local timeout = opts.timeout or M.TIMEOUT
  local headers, stream = req:go(timeout)
  if not headers then
    error(string.format("%s %s failed: %s", opts.method or "GET", path, tostring(stream)), 2)
  end
  local body, err = stream:get_body_as_string(timeout)
  if not body then error("reading body of " .. path .. " failed: " .. tostring(err), 2) end
  stream:shutdown()
  -- no pooling: close the connection so server-side counts stay exact
  if stream.connection then pcall(stream.connection.close, stream.connection) end
  return tonumber(headers:get(":status")), cjson.decode(body), headers, body
end

-- Publish. body: a table (JSON-encoded) or a raw string.
-- opts.token: publisher token (default server.PUBLISHER; false = none);
-- opts.query_token = true puts it in ?token= instead of Authorization;
-- opts.headers: extra/overriding headers; opts.path (default "/publish").
function M.publish(srv, body, opts)
  opts = opts or {}
  if type(body) == "table" then body = cjson.encode(body) end
  local token = opts.token
  if token == nil then token = server.PUBLISHER end
  local path = opts.path or "/publish"
  local headers = { ["content-type"] = "application/json" }
  if token and opts.query_token then
    path = path .. (path:find("?", 1, true) and "&" or "?") .. "token=" .. urlencode(token)
  elseif token then
    headers["authorization"] = "Bearer " .. token
  end
  for k, v in pairs(opts.headers or {}) do headers[k:lower()] = v end
  return M.http(srv, path, { method = "POST", body = body, headers = headers, timeout = opts.timeout })
end

-- Publish and insist on 200; returns the decoded answer.
function M.publish_ok(srv, body, opts)
  local status, answer, _, raw = M.publish(srv, body, opts)
  if status ~= 200 then
    error(string.format("publish answered %s: %s", tostring(status), tostring(raw)), 2)
  end
  return answer
end

function M.health(srv)
  return M.http(srv, "/health")
end

---------------------------------------------------------------------------
-- Raw TCP
---------------------------------------------------------------------------

local Raw = {}
Raw.__index = Raw

-- opts.rcvbuf: SO_RCVBUF set before connecting (bytes); opts.tls: a luaossl
-- client context: TLS from the start (srv.port is then the TLS port).
function M.tcp(srv, opts)
  opts = opts or {}
  local s = socket.connect { host = "127.0.0.1", port = srv.port, nodelay = true }
  s:onerror(function(_, _, why) return why end)
  if opts.rcvbuf then
    local v = ffi.new("int[1]", opts.rcvbuf)
    ffi.C.setsockopt(s:pollfd(), 1 --[[SOL_SOCKET]], 8 --[[SO_RCVBUF]], v, 4)
  end
  s:setmode("b", "b")
  local ok, err = s:connect(opts.timeout or M.TIMEOUT)
  if not ok then error("TCP connect failed: " .. tostring(err), 2) end
  if opts.tls then
    ok, err = s:starttls(opts.tls, opts.timeout or M.TIMEOUT)
    if not ok then error("TLS handshake failed: " .. tostring(err), 2) end
  end
  return setmetatable({ sock = s, srv = srv }, Raw)
end

-- Change SO_RCVBUF of a connected socket (e.g. to drain a throttled one fast).
function Raw:set_rcvbuf(n)
  local v = ffi.new("int[1]", n)
  return ffi.C.setsockopt(self.sock:pollfd(), 1 --[[SOL_SOCKET]], 8 --[[SO_RCVBUF]], v, 4) == 0
end

function Raw:send(bytes, timeout)
  self.sock:clearerr()
  local ok, err = self.sock:xwrite(bytes, "bn", timeout or M.TIMEOUT)
  if not ok then return nil, err end
  ok, err = self.sock:flush(timeout or M.TIMEOUT)
  if not ok then return nil, err end
  return true
end

-- Read exactly n bytes. Returns data, or nil and "timeout" / "eof" / errno
-- (partial data as third value).
function Raw:read(n, timeout)
  self.sock:clearerr()
  local deadline = now() + (timeout or M.TIMEOUT)
  local parts, got = {}, 0
  while got < n do
    local left = deadline - now()
    if left <= 0 then return nil, "timeout", table.concat(parts) end
    local data, err = self.sock:xread(-(n - got), "b", left)
    if data == nil then
      self.sock:clearerr()
      if err == nil then return nil, "eof", table.concat(parts) end
      if err == errno.ETIMEDOUT then return nil, "timeout", table.concat(parts) end
      if err == errno.ECONNRESET then return nil, "reset", table.concat(parts) end
      return nil, errno.strerror(err) or tostring(err), table.concat(parts)
    end
    parts[#parts + 1] = data
    got = got + #data
  end
  return table.concat(parts)
end

-- Read one line (CRLF or LF stripped).
function Raw:line(timeout)
  self.sock:clearerr()
  local data, err = self.sock:xread("*L", "b", timeout or M.TIMEOUT)
  if data == nil then
    self.sock:clearerr()
    if err == nil then return nil, "eof" end
    if err == errno.ETIMEDOUT then return nil, "timeout" end
    if err == errno.ECONNRESET then return nil, "reset" end
    return nil, tostring(err)
  end
  if not data:find("\n$") then return nil, "eof" end
  return (data:gsub("\r?\n$", ""))
end

-- Whatever is readable until EOF or timeout; returns data, "eof"|"timeout"|err.
function Raw:drain(timeout)
  self.sock:clearerr()
  local deadline = now() + (timeout or M.TIMEOUT)
  local parts = {}
  while true do
    local left = deadline - now()
    if left <= 0 then return table.concat(parts), "timeout" end
    local data, err = self.sock:xread(-65536, "b", left)
    if data == nil then
      self.sock:clearerr()
      if err == nil then return table.concat(parts), "eof" end
      if err == errno.ETIMEDOUT then return table.concat(parts), "timeout" end
      if err == errno.ECONNRESET then return table.concat(parts), "reset" end
      return table.concat(parts), tostring(err)
    end
    parts[#parts + 1] = data
  end
end

-- True when the peer closed (EOF or reset) within timeout, discarding data.
function Raw:closed_within(timeout)
  local _, why = self:drain(timeout)
  return why == "eof" or why == "reset", why
end

-- Read an HTTP response: { status=, reason=, headers={lower-name=value},
-- body=, json= }. Bodies by Content-Length or chunked; none for 101/204/304.
function Raw:response(timeout)
  local deadline = now() + (timeout or M.TIMEOUT)
  local function left() return math.max(0.001, deadline - now()) end
  local status_line, err = self:line(left())
  if not status_line then return nil, err end
  local status, reason = status_line:match("^HTTP/1%.[01] (%d%d%d) ?(.*)$")
  if not status then return nil, "bad status line: " .. status_line end
  local resp = { status = tonumber(status), reason = reason, headers = {}, header_list = {} }
  while true do
    local l, e = self:line(left())
    if not l then return nil, "headers: " .. tostring(e) end
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.-)%s*$")
    if k then
      k = k:lower()
      resp.header_list[#resp.header_list + 1] = { k, v }
      resp.headers[k] = resp.headers[k] and (resp.headers[k] .. ", " .. v) or v
    end
  end
  local s = resp.status
  if s == 101 or s == 204 or s == 304 or (s >= 100 and s < 200) then
    resp.body = ""
  elseif resp.headers["content-length"] then
    local n = tonumber(resp.headers["content-length"])
    local body, e = self:read(n, left())
    if not body then return nil, "body: " .. tostring(e) end
    resp.body = body
  elseif (resp.headers["transfer-encoding"] or ""):lower():find("chunked") then
    local parts = {}
    while true do
      local l, e = self:line(left())
      if not l then return nil, "chunk: " .. tostring(e) end
      local n = tonumber(l:match("^(%x+)"), 16)
      if not n then return nil, "bad chunk size: " .. l end
      if n == 0 then
        repeat l = self:line(left()) until l == "" or l == nil
        break
      end
      parts[#parts + 1] = self:read(n, left())
      self:line(left())
    end
    resp.body = table.concat(parts)
  else
    resp.body = self:drain(left())
  end
  resp.json = cjson.decode(resp.body)
  return resp
end

function Raw:close()
  pcall(self.sock.close, self.sock)
end

-- Send raw bytes on a new connection and read one response.
-- Returns resp (or nil, err), and the Raw connection (still open).
function M.raw_request(srv, bytes, timeout)
  local c = M.tcp(srv)
  local ok, err = c:send(bytes)
  if not ok then return nil, "send: " .. tostring(err), c end
  local resp, rerr = c:response(timeout)
  return resp, rerr, c
end

---------------------------------------------------------------------------
-- Raw WebSocket (hand-built frames)
---------------------------------------------------------------------------

M.OP = { cont = 0x0, text = 0x1, binary = 0x2, close = 0x8, ping = 0x9, pong = 0xA }

local function mask_bytes(payload, key)
  local out = {}
  local k = { key:byte(1, 4) }
  for i = 1, #payload do
    out[i] = string.char(bit.bxor(payload:byte(i), k[(i - 1) % 4 + 1]))
  end
  return table.concat(out)
end

-- Encode a frame. f: { opcode=1, payload="", fin=true, mask=true,
-- rsv=0 (bits 0..7 placed in RSV1..3), length=override, key=4 bytes }
function M.frame(f)
  local payload = f.payload or ""
  local op = f.opcode or 0x1
  local fin = f.fin == nil and true or f.fin
  local masked = f.mask == nil and true or f.mask
  local b1 = bit.bor(fin and 0x80 or 0, bit.lshift(bit.band(f.rsv or 0, 7), 4), bit.band(op, 0x0f))
  local len = f.length or #payload
  local hdr
  local mbit = masked and 0x80 or 0
  if len < 126 then
    hdr = string.char(b1, bit.bor(mbit, len))
  elseif len < 65536 then
    hdr = string.char(b1, bit.bor(mbit, 126), bit.rshift(len, 8), bit.band(len, 255))
  else
    local b = {}
    local v = len
    for i = 8, 1, -1 do b[i] = v % 256; v = math.floor(v / 256) end
    hdr = string.char(b1, bit.bor(mbit, 127)) .. string.char(unpack(b))
  end
  if masked then
    local key = f.key or rand.bytes(4)
    return hdr .. key .. mask_bytes(payload, key)
  end
  return hdr .. payload
end

function M.close_payload(code, reason)
  return string.char(bit.rshift(code, 8), bit.band(code, 255)) .. (reason or "")
end

local WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
function M.accept_key(key)
  return basexx.to_base64(digest.new("sha1"):final(key .. WS_GUID))
end

function M.ws_key()
  return basexx.to_base64(rand.bytes(16))
end

-- Bytes of an upgrade request. opts: path, query (string/table), token,
-- device, channels, key (false = omit), version (false = omit), headers
-- (extra lines as {name=value}), upgrade=false / connection=false to omit.
function M.upgrade_request(srv, opts)
  opts = opts or {}
  local q = opts.query
  if not q then
    local t = {}
    if opts.token then t.token = opts.token end
    if opts.device then t.device = opts.device end
    if opts.channels then t.channels = opts.channels end
    q = t
  end
  q = query_string(q)
  local target = (opts.path or "/ws") .. (q ~= "" and ("?" .. q) or "")
  local lines = {
    "GET " .. target .. " HTTP/1.1",
    "Host: 127.0.0.1:" .. srv.port,
  }
  if opts.upgrade ~= false then lines[#lines + 1] = "Upgrade: websocket" end
  if opts.connection ~= false then lines[#lines + 1] = "Connection: Upgrade" end
  if opts.key ~= false then lines[#lines + 1] = "Sec-WebSocket-Key: " .. (opts.key or M.ws_key()) end
  if opts.version ~= false then lines[#lines + 1] = "Sec-WebSocket-Version: " .. (opts.version or "13") end
  for k, v in pairs(opts.headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  return table.concat(lines, "\r\n") .. "\r\n\r\n"
end

local RawWS = setmetatable({}, { __index = Raw })
RawWS.__index = RawWS

-- Upgrade by hand. Returns the RawWS connection (errors unless 101 with a
-- correct Sec-WebSocket-Accept). opts as for upgrade_request, plus rcvbuf, tls,
-- and welcome=false to leave the welcome frame unread (else c.welcome).
function M.raw_ws(srv, opts)
  opts = opts or {}
  if type(opts) == "string" then opts = { token = opts } end
  local key = opts.key or M.ws_key()
  local c = M.tcp(srv, { rcvbuf = opts.rcvbuf, tls = opts.tls })
  setmetatable(c, RawWS)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.key = key
  assert(c:send(M.upgrade_request(srv, o)))
  local resp, err = c:response()
  if not resp then error("upgrade: no response: " .. tostring(err), 2) end
  if resp.status ~= 101 then
    error("upgrade answered " .. resp.status .. ": " .. tostring(resp.body), 2)
  end
  if resp.headers["sec-websocket-accept"] ~= M.accept_key(key) then
    error("bad Sec-WebSocket-Accept: " .. tostring(resp.headers["sec-websocket-accept"]), 2)
  end
  c.handshake = resp
  if opts.welcome ~= false then
    local w, e = c:read_json()
    if not w then error("no welcome frame: " .. tostring(e), 2) end
    if w.type ~= "welcome" then error("first frame is not a welcome: " .. cjson.encode(w), 2) end
    c.welcome = w
  end
  return c
end

function RawWS:send_frame(f, timeout)
  return self:send(M.frame(f), timeout)
end

function RawWS:send_text(s, timeout)
  return self:send_frame({ opcode = 0x1, payload = s }, timeout)
end

-- Read one server frame: { fin=, rsv=, opcode=, masked=, payload= } or
-- nil, "timeout"|"eof"|"reset"|err.
function RawWS:read_frame(timeout)
  local deadline = now() + (timeout or M.TIMEOUT)
  local function left() return math.max(0.001, deadline - now()) end
  local h, err = self:read(2, left())
  if not h then return nil, err end
  local b1, b2 = h:byte(1, 2)
  local f = {
    fin = bit.band(b1, 0x80) ~= 0,
    rsv = bit.rshift(bit.band(b1, 0x70), 4),
    opcode = bit.band(b1, 0x0f),
    masked = bit.band(b2, 0x80) ~= 0,
  }
  local len = bit.band(b2, 0x7f)
  if len == 126 then
    local e = self:read(2, left()); if not e then return nil, "eof in header" end
    len = e:byte(1) * 256 + e:byte(2)
  elseif len == 127 then
    local e = self:read(8, left()); if not e then return nil, "eof in header" end
    len = 0
    for i = 1, 8 do len = len * 256 + e:byte(i) end
  end
  local key
  if f.masked then
    key = self:read(4, left()); if not key then return nil, "eof in mask" end
  end
  local payload = ""
  if len > 0 then
    local p, e = self:read(len, left())
    if not p then return nil, "payload: " .. tostring(e) end
    payload = p
  end
  if key then payload = mask_bytes(payload, key) end
  f.payload = payload
  f.length = len
  return f
end

-- Next data frame decoded as JSON, answering nothing; pings are skipped
-- (and counted in self.pings). Returns value, raw or nil, err.
function RawWS:read_json(timeout)
  local deadline = now() + (timeout or M.TIMEOUT)
  while true do
    local f, err = self:read_frame(math.max(0.001, deadline - now()))
    if not f then return nil, err end
    if f.opcode == 0x9 then
      self.pings = (self.pings or 0) + 1
    elseif f.opcode == 0x8 then
      local code, reason = M.parse_close(f.payload)
      return nil, string.format("closed %s %q", tostring(code), tostring(reason))
    else
      local v = cjson.decode(f.payload)
      if v == nil then return nil, "not JSON: " .. f.payload end
      return v, f.payload
    end
  end
end

function M.parse_close(payload)
  if #payload < 2 then return nil, "" end
  return payload:byte(1) * 256 + payload:byte(2), payload:sub(3)
end

-- Read frames until a close frame: returns code, reason, frames_skipped.
-- Returns nil, "eof"/"timeout" when no close frame came.
function RawWS:expect_close(timeout)
  local deadline = now() + (timeout or M.TIMEOUT)
  local skipped = 0
  while true do
    local f, err = self:read_frame(math.max(0.001, deadline - now()))
    if not f then return nil, err, skipped end
    if f.opcode == 0x8 then
      local code, reason = M.parse_close(f.payload)
      self.close_frame = f
      return code, reason, skipped
    end
    skipped = skipped + 1
  end
end

---------------------------------------------------------------------------
-- "The server still serves": a fresh client connects, subscribes to a new
-- channel at connect, receives a publish to it. Errors with details if not.
---------------------------------------------------------------------------
function M.assert_serves(srv, timeout)
  if not srv:alive() then
    error("moonpush exited with code " .. tostring(srv:exit_code()) .. "\n" .. srv:log_tail(30), 2)
  end
  local ch = M.unique("alive-")
  local ws = M.ws(srv, { token = "bob", device = M.unique("probe-"), channels = { ch } }, timeout)
  local st, ans, _, raw = M.publish(srv, { channel = ch, data = { probe = true } })
  if st ~= 200 then
    M.close(ws)
    error("publish after bad input answered " .. tostring(st) .. ": " .. tostring(raw), 2)
  end
  local m = M.recv_json(ws, timeout)
  M.close(ws)
  if m.type ~= "message" or m.channel ~= ch or type(m.data) ~= "table" or m.data.probe ~= true then
    error("fresh client got " .. cjson.encode(m) .. " instead of the probe message", 2)
  end
  return ans
end

---------------------------------------------------------------------------
-- Shortcuts the delivery and plugin specs share
---------------------------------------------------------------------------

-- The raw HTTP answer (see Raw:response) to an upgrade request built from
-- opts (as for upgrade_request); the connection is closed. Fails the test
-- when no answer came.
function M.handshake(srv, opts, timeout)
  local resp, err, c = M.raw_request(srv, M.upgrade_request(srv, opts), timeout)
  c:close()
  require("luassert").is_table(resp, err)
  return resp
end

-- Next frame decoded (value, raw), or nil and "timeout" / "closed".
function M.next_frame(ws, timeout)
  local data, _, eno = ws:receive(timeout)
  if data == nil then
    if eno == errno.ETIMEDOUT and ws.readyState < 2 then return nil, "timeout" end
    return nil, "closed"
  end
  return cjson.decode(data), data
end

-- Read n message frames of channel ch; any other frame is an error.
-- Returns their seqs and the frames.
function M.recv_seqs(ws, ch, n, timeout)
  local seqs, msgs = {}, {}
  for i = 1, n do
    local m, raw = M.recv_json(ws, timeout)
    assert(m.type == "message" and m.channel == ch,
      string.format("frame %d of %d: expected a message on %s, got %s", i, n, ch, raw))
    seqs[i], msgs[i] = m.seq, m
  end
  return seqs, msgs
end

return M
