-- Integration: SSE routes (docs/protocol.md, SSE) over raw TCP, read the way
-- an EventSource reads them: live messages with an id each, a reconnect with
-- Last-Event-ID (header or query) that gets exactly what was missed on every
-- channel, `reset` events where history does not reach back, 401 / 403 JSON
-- answers, heartbeats, the slow-consumer close beside a healthy stream, the
-- admin kick and the shutdown `retry:`; and curl as a real client.
local server = require "helpers.server"
local client = require "helpers.client"
local routes = require "helpers.routes"
local session = require "helpers.session"
local util = require "helpers.util"

local json = client.json

local function sse_route(path, extra)
  local r = { path = path or "/sse", type = "sse", plugins = { routes.device_auth() } }
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

local function add_sse(cfg)
  table.insert(cfg.routes, sse_route())
  table.insert(cfg.routes, { path = "/metrics", type = "metrics" })
end

-- GET path on a raw connection. Returns the connection and the response
-- head { status, headers } (for a non-200, the whole response with body/json).
local function sse_get(srv, path, headers, opts)
  local c = client.tcp(srv, opts)
  c.sock:setmaxline(1048576)   -- data lines are as long as the messages (4 KB default)
  local lines = { "GET " .. path .. " HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  assert(c:send(table.concat(lines, "\r\n") .. "\r\n\r\n"))
  local status_line = assert(c:line())
  local status = tonumber(status_line:match("^HTTP/1%.1 (%d+)"))
  local head = { status = status, headers = {} }
  while true do
    local l = assert(c:line())
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.-)%s*$")
    head.headers[k:lower()] = v
  end
  if status ~= 200 then
    head.body = assert(c:read(tonumber(head.headers["content-length"])))
    head.json = json.decode(head.body)
  end
  return c, head
end

-- The next event as an EventSource parses it: { event, id, data (decoded
-- JSON), comment, retry }. Comments come back as events of their own
-- (heartbeats) only when want_comments is set; otherwise they are skipped.
local function next_event(c, timeout, want_comments)
  local deadline = client.now() + (timeout or client.TIMEOUT)
  local ev = {}
  while true do
    local l, err = c:line(math.max(0.01, deadline - client.now()))
    if not l then return nil, err end
    if l == "" then
      if ev.data or ev.retry or ev.event then
        if ev.data then ev.raw, ev.data = ev.data, json.decode(ev.data) end
        return ev
      end
      if ev.comment and want_comments then return ev end
      ev = {}
    elseif l:sub(1, 1) == ":" then
      ev.comment = l:sub(2):gsub("^ ", "")
    else
      local k, v = l:match("^(%w+): ?(.*)$")
      assert(k, "bad SSE line: " .. l)
      ev[k] = v
    end
  end
end

local function expect_event(c, kind, timeout)
  local ev, err = next_event(c, timeout)
  assert(ev, "no " .. kind .. " event: " .. tostring(err))
  assert.equals(kind, ev.event or "message", ev.raw)
  return ev
end

-- No event (comments aside) within t seconds.
local function expect_no_event(c, t)
  local ev, err = next_event(c, t)
  assert.is_nil(ev, ev and ev.raw)
  assert.equals("timeout", err)
end

local function publish(srv, ch, n)
  return client.publish_ok(srv, { channel = ch, data = { n = n } })
end

local function stream_path(token, channels, extra)
  local q = "/sse?token=" .. token
  if channels then q = q .. "&channels=" .. table.concat(channels, ",") end
  return q .. (extra or "")
end

describe("moonpush SSE", function()
  local srv
  local _, track = session.shared_server(function()
    srv = server.start({
      timeouts = { ping_ms = 400, idle_ms = 60000 },
      history = { max_messages = 100, channels = { { pattern = "tiny-*", max_messages = 2, max_age_ms = 0 } } },
    }, { config_fn = add_sse })
    return srv
  end)

  local function open(path, headers, opts)
    local c, head = sse_get(srv, path, headers, opts)
    track(c)
    return c, head
  end

  it("answers 200 text/event-stream, welcome first, then each live message with an id", function()
    local ch = client.unique("live-")
    local c, head = open(stream_path("bob", { ch }))
    assert.equals(200, head.status)
    assert.equals("text/event-stream", head.headers["content-type"])
    assert.equals("no-cache", head.headers["cache-control"])
    assert.is_nil(head.headers["content-length"])
    local w = expect_event(c, "welcome")
    assert.equals("welcome", w.data.type)
    assert.equals("bob", w.data.user)
    assert.same({ "user:bob", ch }, w.data.channels)
    assert.is_false(w.data.acks)
    assert.truthy(w.id and #w.id > 0)
    for i = 1, 3 do publish(srv, ch, i) end
    local ids = { [w.id] = true }
    for i = 1, 3 do
      local ev = expect_event(c, "message")
      assert.same({ type = "message", channel = ch, seq = i, id = ev.data.id, data = { n = i } }, ev.data)
      assert.truthy(ev.id and not ids[ev.id], "each message has a new id")
      assert.truthy(#ev.id <= 1024)
      ids[ev.id] = true
    end
    -- the personal channel too
    client.publish_ok(srv, { user = "bob", data = "hi" })
    local ev = expect_event(c, "message")
    assert.equals("user:bob", ev.data.channel)
  end)

  it("resumes every channel from Last-Event-ID: exactly the missed messages, in order, then live", function()
    local a, b = client.unique("ra-"), client.unique("rb-")
    local c = open(stream_path("bob", { a, b }))
    expect_event(c, "welcome")
    publish(srv, a, 1)
    publish(srv, b, 1)
    expect_event(c, "message")
    local last = expect_event(c, "message").id
    c:close()
    -- missed while away: 2 on a, 2..3 on b
    publish(srv, a, 2)
    publish(srv, b, 2)
    publish(srv, b, 3)
    local c2 = open(stream_path("bob", { a, b }), { ["Last-Event-ID"] = last })
    local w = expect_event(c2, "welcome")
    assert.equals(last, w.id, "the welcome carries the position the stream starts from")
    local got = {}
    for _ = 1, 3 do
      local ev = expect_event(c2, "message")
      got[#got + 1] = ev.data.channel .. ":" .. ev.data.seq
      last = ev.id
    end
    table.sort(got)
    assert.same({ a .. ":2", b .. ":2", b .. ":3" }, got)
    expect_no_event(c2, 0.5)
    publish(srv, a, 3)
    local ev = expect_event(c2, "message")
    assert.equals(a .. ":3", ev.data.channel .. ":" .. ev.data.seq)
    c2:close()
    -- the query parameter works like the header (EventSource polyfills send it)
    publish(srv, b, 4)
    local c3 = open(stream_path("bob", { a, b }, "&last_event_id=" .. ev.id))
    expect_event(c3, "welcome")
    local e3 = expect_event(c3, "message")
    assert.equals(b .. ":4", e3.data.channel .. ":" .. e3.data.seq)
    expect_no_event(c3, 0.5)
  end)

  it("sends nothing old to a resume that missed nothing", function()
    local ch = client.unique("none-")
    local c = open(stream_path("bob", { ch }))
    expect_event(c, "welcome")
    publish(srv, ch, 1)
    local id = expect_event(c, "message").id
    c:close()
    local c2 = open(stream_path("bob", { ch }), { ["Last-Event-ID"] = id })
    expect_event(c2, "welcome")
    expect_no_event(c2, 0.5)
  end)

  it("a resume from the welcome's id (before any message) gets what came after the connect", function()
    local ch = client.unique("early-")
    publish(srv, ch, 1)
    local c = open(stream_path("bob", { ch }))
    local id = expect_event(c, "welcome").id
    c:close()
    publish(srv, ch, 2)
    local c2 = open(stream_path("bob", { ch }), { ["Last-Event-ID"] = id })
    expect_event(c2, "welcome")
    assert.equals(2, expect_event(c2, "message").data.seq)
    expect_no_event(c2, 0.5)
  end)

  it("sends reset (gap) where history no longer reaches back, then what is retained", function()
    local ch = client.unique("tiny-")
    local c = open(stream_path("bob", { ch }))
    expect_event(c, "welcome")
    publish(srv, ch, 1)
    local id = expect_event(c, "message").id
    c:close()
    for i = 2, 6 do publish(srv, ch, i) end   -- history keeps 5 and 6
    local c2 = open(stream_path("bob", { ch }), { ["Last-Event-ID"] = id })
    expect_event(c2, "welcome")
    local r = expect_event(c2, "reset")
    assert.same({ "reset", ch, "gap", 5, 6 }, { r.data.type, r.data.channel, r.data.reason, r.data.first_seq, r.data.last_seq })
    assert.equals(5, expect_event(c2, "message").data.seq)
    local last = expect_event(c2, "message")
    assert.equals(6, last.data.seq)
    expect_no_event(c2, 0.5)
    -- and the ids after a reset resume cleanly
    c2:close()
    publish(srv, ch, 7)
    local c3 = open(stream_path("bob", { ch }), { ["Last-Event-ID"] = last.id })
    expect_event(c3, "welcome")
    assert.equals(7, expect_event(c3, "message").data.seq)
    expect_no_event(c3, 0.5)
  end)

  it("answers 401 JSON without a token or with an unknown one", function()
    local _, head = open("/sse?channels=news")
    assert.equals(401, head.status)
    assert.equals("unauthorized", head.json.error)
    _, head = open(stream_path("nobody", { "news" }))
    assert.equals(401, head.status)
    assert.same({ error = "unauthorized", message = "unknown token" }, head.json)
  end)

  it("takes the token from Authorization: Bearer too", function()
    local c, head = open("/sse?channels=news", { Authorization = "Bearer bob" })
    assert.equals(200, head.status)
    assert.equals("bob", expect_event(c, "welcome").data.user)
  end)

  it("answers 403 JSON for a channel the identity may not subscribe to", function()
    local _, head = open(stream_path("carol", { "news" }))
    assert.equals(403, head.status)
    assert.equals("forbidden", head.json.error)
    assert.truthy(head.json.message:find("news", 1, true))
  end)

  it("answers 400 for a Last-Event-ID it did not send or for other channels", function()
    local _, head = open(stream_path("bob", { "news" }), { ["Last-Event-ID"] = "42" })
    assert.equals(400, head.status)
    assert.equals("bad_last_event_id", head.json.error)
    local c = open(stream_path("bob", { "news" }))
    local id = expect_event(c, "welcome").id
    _, head = open(stream_path("bob", { "news", "sports" }), { ["Last-Event-ID"] = id })
    assert.equals(400, head.status)
    assert.truthy(head.json.message:find("another list of channels", 1, true))
  end)

  it("answers 405 to a POST", function()
    local status, body = client.http(srv, "/sse?token=bob", { method = "POST", body = "{}" })
    assert.equals(405, status)
    assert.equals("method_not_allowed", body.error)
  end)

  it("sends heartbeat comments every timeouts.ping_ms", function()
    local c = open(stream_path("bob", { client.unique("hb-") }))
    expect_event(c, "welcome")
    local ev = assert(next_event(c, 2, true))
    assert.equals("hb", ev.comment)
    ev = assert(next_event(c, 2, true))
    assert.equals("hb", ev.comment)
  end)

  it("is listed and kicked by the admin like a websocket connection", function()
    local ch = client.unique("kick-")
    local c = open(stream_path("alice-laptop", { "news" }))
    local w = expect_event(c, "welcome")
    local out, rc = srv:admin("clients()")
    assert.equals(0, rc, out)
    assert.truthy(out:find("laptop", 1, true), out)
    out, rc = srv:admin("kick(" .. w.data.conn .. ")")
    assert.equals(0, rc, out)
    assert.truthy(c:closed_within(3))
    local _ = ch
  end)

  it("counts streams apart from HTTP connections (metrics, admin stats)", function()
    local c = open(stream_path("bob", { client.unique("count-") }))
    expect_event(c, "welcome")
    local out, rc = srv:admin("stats().sse_streams")
    assert.equals(0, rc, out)
    assert.truthy(tonumber(out:match("%d+")) >= 1, out)
    local status, _, _, text = client.http(srv, "/metrics")
    assert.equals(200, status)
    -- the /metrics request itself is the one HTTP connection
    assert.truthy(text:find("\nmoonpush_http_connections 1\n"), text:match("moonpush_http_connections[^\n]*"))
    assert.truthy(text:find('moonpush_connections{route="/sse",kind="web"}', 1, true))
  end)

  it("works with curl", function()
    local ch = client.unique("curl-")
    local p = io.popen(string.format("curl -sN --max-time 2 %s 2>&1",
      util.shq("http://127.0.0.1:" .. srv.port .. stream_path("bob", { ch }))))
    server.sleep(0.5)
    publish(srv, ch, 1)
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find("event: welcome\n", 1, true), out)
    assert.truthy(out:find('\ndata: {"type":"message","channel":"' .. ch .. '","seq":1,', 1, true), out)
    assert.truthy(out:find("\nid: 1%.%x+%.%d+"), out)
  end)
end)

describe("moonpush SSE slow consumers", function()
  local srv
  local _, track = session.shared_server(function()
    srv = server.start({ limits = { max_outbound_bytes = 65536, max_body_bytes = 16384 }, history = { max_messages = 1000 } },
      { config_fn = add_sse })
    return srv
  end)

  it("closes a stream that stops reading while a healthy one gets every message", function()
    local ch = client.unique("slow-")
    local healthy = track(sse_get(srv, stream_path("bob", { ch })))
    local stalled = track(sse_get(srv, stream_path("bob", { ch }), nil, { rcvbuf = 4096 }))
    expect_event(healthy, "welcome")
    local pad = ("p"):rep(4000)
    local N = 200
    for i = 1, N do
      client.publish_ok(srv, { channel = ch, data = { n = i, pad = pad } })
      -- the healthy one keeps up as it goes (a partial line is not
      -- resumable with this reader: read each message whole)
      assert.equals(i, expect_event(healthy, "message").data.seq)
    end
    assert.truthy(srv:wait_log("slow consumer closed", 0, 5), srv:log_tail(20))
    stalled:set_rcvbuf(4 * 1048576)
    local data, why = stalled:drain(5)
    assert.truthy(why == "eof" or why == "reset", why)
    assert.truthy(#data < N * 4000, "the stalled stream was cut short")
    -- the healthy stream is still open and live
    publish(srv, ch, N + 1)
    assert.equals(N + 1, expect_event(healthy, "message").data.seq)
  end)
end)

describe("moonpush SSE shutdown", function()
  it("tells streams when to come back (retry:) and ends them", function()
    local srv = server.start({}, { config_fn = add_sse })
    local c = sse_get(srv, stream_path("bob", { "news" }))
    expect_event(c, "welcome")
    srv:signal("TERM")
    local ev = assert(next_event(c, 5))
    local ms = tonumber(ev.retry)
    assert.truthy(ms and ms >= 500 and ms <= 6000, ev.retry)
    assert.truthy(c:closed_within(5))
    assert.equals(0, srv:wait(8))
  end)
end)

describe("moonpush SSE token lifetime", function()
  it("says when the token expires in the welcome, and ends the stream at the first heartbeat after", function()
    local jwt = require "helpers.jwt"
    local secret = "sse-spec-secret-0123456789abcdefghijklmnop"
    local srv = server.start({ timeouts = { ping_ms = 300, idle_ms = 60000 },
      routes = { { path = "/sse", type = "sse", plugins = { { name = "auth_jwt", config = { secret = secret, leeway = 0 } } } } } })
    local token = jwt.sign(secret, { sub = "brief", channels = { "*" }, exp = jwt.now() + 2 })
    local c = sse_get(srv, stream_path(token, { "news" }))
    local w = expect_event(c, "welcome")
    assert.truthy(w.data.expires_in_ms > 0 and w.data.expires_in_ms <= 2000, tostring(w.data.expires_in_ms))
    local closed, why = c:closed_within(5)
    assert.truthy(closed, why)
    assert.truthy(srv:wait_log("sse token expired", 0, 1))
    -- and now the token is refused
    local _, head = sse_get(srv, stream_path(token, { "news" }))
    assert.equals(401, head.status)
    c:close()
    assert.equals(0, srv:stop())
  end)
end)

describe("moonpush SSE across a restart", function()
  it("sends reset (epoch) to a Last-Event-ID from before the restart, then the new history", function()
    local srv = server.start({}, { config_fn = add_sse })
    local ch = client.unique("restart-")
    local c = sse_get(srv, stream_path("bob", { ch }))
    expect_event(c, "welcome")
    publish(srv, ch, 1)
    local id = expect_event(c, "message").id
    c:close()
    assert.equals(0, srv:stop())
    local srv2 = server.start({}, { config_fn = add_sse, port = srv.port })
    publish(srv2, ch, 2)   -- seq 1 of the new epoch
    local c2 = sse_get(srv2, stream_path("bob", { ch }), { ["Last-Event-ID"] = id })
    expect_event(c2, "welcome")
    local r = expect_event(c2, "reset")
    assert.same({ "epoch", 1, 1 }, { r.data.reason, r.data.first_seq, r.data.last_seq })
    local m = expect_event(c2, "message")
    assert.same({ 1, { n = 2 } }, { m.data.seq, m.data.data })
    expect_no_event(c2, 0.3)
    c2:close()
    assert.equals(0, srv2:stop())
  end)
end)

describe("moonpush SSE config", function()
  local dir
  before_each(function() dir = util.mkdtemp("moonpush-sse") end)
  after_each(function() util.rm_rf(dir) end)

  local function check(route)
    local cfg = server.default_config()
    cfg.routes = { route }
    local path = dir .. "/moonpush.lua"
    util.write_file(path, "return " .. server.serialize(cfg) .. "\n")
    local p = io.popen(util.shq(server.BIN) .. " --check-config " .. util.shq(path) .. " 2>&1; echo \"__rc=$?\"")
    local out = p:read("*a")
    p:close()
    return tonumber(out:match("__rc=(%d+)")), out
  end

  it("refuses acks on an sse route: there is no upstream to ack with", function()
    local rc, out = check(sse_route("/sse", { acks = true }))
    assert.equals(1, rc, out)
    assert.truthy(out:find("no upstream", 1, true), out)
  end)

  it("refuses an sse route without an auth plugin", function()
    local rc, out = check({ path = "/sse", type = "sse" })
    assert.equals(1, rc, out)
    assert.truthy(out:find("sse route needs a plugin with an auth hook", 1, true), out)
  end)

  it("accepts an sse route with cors", function()
    local rc, out = check(sse_route("/sse", { cors = { origins = { "http://127.0.0.1:8000" } } }))
    assert.equals(0, rc, out)
  end)
end)
