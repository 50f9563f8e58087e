-- Integration: permessage-deflate (RFC 7692) on a websocket route that sets
-- `permessage_deflate` (docs/protocol.md "Compression"). A raw client offers
-- the extension and inflates with the system zlib (spec/helpers/zlib.lua):
-- the answer to the offer, compressed frames above the threshold and plain
-- ones below, one compressed frame shared by every recipient, compressed
-- client messages understood, zip bombs and bad data closed, RSV1 refused
-- where nothing was negotiated.
local server = require "helpers.server"
local client = require "helpers.client"
local zlib = require "helpers.zlib"
local cjson = require "cjson"

local OP = client.OP
local MAX_MSG = 4096
local OFFER = "permessage-deflate; client_max_window_bits"
local ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

describe("permessage-deflate", function()
  local srv

  lazy_setup(function()
    local routes = server.default_config().routes
    local ws = routes[1]
    table.insert(routes, { path = "/wsz", type = "websocket", plugins = ws.plugins, permessage_deflate = true })
    table.insert(routes, { path = "/wsz0", type = "websocket", plugins = ws.plugins,
                           permessage_deflate = { threshold = 0, level = 1 } })
    table.insert(routes, { path = "/metrics", type = "metrics" })
    srv = server.start({ routes = routes, limits = { max_message_bytes = MAX_MSG } })
  end)

  lazy_teardown(function()
    if srv then assert.equals(0, srv:stop()) end
  end)

  local function connect(path, channels, offer)
    return client.raw_ws(srv, { path = path, token = "bob", device = client.unique("z-"), channels = channels,
                                headers = offer ~= false and { ["Sec-WebSocket-Extensions"] = offer or OFFER } or nil })
  end

  local function big_data(n)
    local items = {}
    for i = 1, n do items[i] = { id = i, name = "item number " .. i, price = i * 3, tags = { "red", "green" } } end
    return { items = items }
  end

  -- Next data frame (pings skipped), its payload inflated when RSV1 is set.
  local function next_message(c)
    while true do
      local f = assert(c:read_frame())
      if f.opcode ~= OP.ping then
        f.text = f.rsv == 4 and assert(zlib.inflate(f.payload)) or f.payload
        return f
      end
    end
  end

  describe("negotiation", function()
    local function answer(path, offer)
      local resp = client.handshake(srv, { path = path, token = "bob", device = client.unique("n-"),
                                           headers = { ["Sec-WebSocket-Extensions"] = offer } })
      assert.equals(101, resp.status)
      return resp.headers["sec-websocket-extensions"]
    end

    it("accepts an offer with no_context_takeover both ways", function()
      assert.equals(ANSWER, answer("/wsz", OFFER))
      assert.equals(ANSWER, answer("/wsz", "permessage-deflate"))
      assert.equals(ANSWER, answer("/wsz", "permessage-deflate; client_no_context_takeover; server_no_context_takeover"))
      assert.equals(ANSWER, answer("/wsz", 'permessage-deflate; client_max_window_bits="10"'))
      assert.equals(ANSWER .. "; server_max_window_bits=15", answer("/wsz", "permessage-deflate; server_max_window_bits=15"))
    end)

    it("declines offers it cannot honour and takes the next one", function()
      assert.is_nil(answer("/wsz", "permessage-deflate; server_max_window_bits=10"))
      assert.is_nil(answer("/wsz", "permessage-deflate; x_unknown"))
      assert.is_nil(answer("/wsz", "permessage-deflate; client_no_context_takeover; client_no_context_takeover"))
      assert.is_nil(answer("/wsz", "permessage-deflate; client_max_window_bits=7"))
      assert.is_nil(answer("/wsz", "x-webkit-deflate-frame"))
      assert.equals(ANSWER, answer("/wsz", "permessage-deflate; server_max_window_bits=9, permessage-deflate"))
      assert.equals(ANSWER, answer("/wsz", "foo, permessage-deflate; client_max_window_bits"))
    end)

    it("offers nothing on a route without permessage_deflate", function()
      assert.is_nil(answer("/ws", OFFER))
    end)
  end)

  it("compresses messages at the threshold and above, with RSV1, and not smaller ones", function()
    local ch = client.unique("zc-")
    local c = connect("/wsz", ch)
    local data = big_data(10)
    client.publish_ok(srv, { channel = ch, data = data })
    client.publish_ok(srv, { channel = ch, data = { small = true } })
    local f = next_message(c)
    assert.equals(4, f.rsv)
    assert.equals(OP.text, f.opcode)
    local m = cjson.decode(f.text)
    assert.equals("message", m.type)
    assert.equals(ch, m.channel)
    assert.same(data, m.data)
    assert.is_true(#f.payload < #f.text / 2, "compressed " .. #f.payload .. " of " .. #f.text)
    local s = next_message(c)
    assert.equals(0, s.rsv)
    assert.same({ small = true }, cjson.decode(s.payload).data)
    c:close()
  end)

  it("sends plain frames to a client that did not offer, on the same route and channel", function()
    local ch = client.unique("zp-")
    local plain, z = connect("/wsz", ch, false), connect("/wsz", ch)
    assert.is_nil(plain.handshake.headers["sec-websocket-extensions"])
    client.publish_ok(srv, { channel = ch, data = big_data(10) })
    local a, b = next_message(plain), next_message(z)
    assert.equals(0, a.rsv)
    assert.equals(4, b.rsv)
    assert.equals(a.payload, b.text)
    plain:close(); z:close()
  end)

  it("shares one compressed frame: every deflate client gets the same bytes", function()
    local ch = client.unique("zs-")
    local c1, c2, c3 = connect("/wsz", ch), connect("/wsz", ch), connect("/wsz", ch, "permessage-deflate")
    client.publish_ok(srv, { channel = ch, data = big_data(20) })
    local a, b, c = next_message(c1), next_message(c2), next_message(c3)
    assert.equals(4, a.rsv)
    assert.equals(a.payload, b.payload)
    assert.equals(a.payload, c.payload)
    c1:close(); c2:close(); c3:close()
  end)

  it("compresses replayed history too, and every message on a threshold-0 route", function()
    local ch = client.unique("zh-")
    client.publish_ok(srv, { channel = ch, data = big_data(5) })
    client.publish_ok(srv, { channel = ch, data = { n = 1 } })
    local c = client.raw_ws(srv, { path = "/wsz0", token = "bob", device = client.unique("z-"),
                                   query = { token = "bob", device = client.unique("z-"), channels = ch,
                                             ["since." .. ch] = 0 },
                                   headers = { ["Sec-WebSocket-Extensions"] = OFFER } })
    local a, b = next_message(c), next_message(c)
    assert.equals(4, a.rsv)
    assert.equals(4, b.rsv)
    assert.same(big_data(5), cjson.decode(a.text).data)
    assert.same({ n = 1 }, cjson.decode(b.text).data)
    c:close()
  end)

  it("counts compressed frames once per message, not per recipient, in /metrics", function()
    local function metric(body, name) return tonumber(body:match("\n" .. name .. " (%d+)")) end
    local _, _, _, before = client.http(srv, "/metrics")
    local ch = client.unique("zm-")
    local cs = { connect("/wsz", ch), connect("/wsz", ch), connect("/wsz", ch) }
    client.publish_ok(srv, { channel = ch, data = big_data(10) })
    local len
    for _, c in ipairs(cs) do len = #next_message(c).text; c:close() end
    local _, _, _, after = client.http(srv, "/metrics")
    assert.equals(1, metric(after, "moonpush_deflate_frames_total") - metric(before, "moonpush_deflate_frames_total"))
    assert.equals(len, metric(after, "moonpush_deflate_bytes_in_total") - metric(before, "moonpush_deflate_bytes_in_total"))
    assert.is_true(metric(after, "moonpush_deflate_bytes_out_total") - metric(before, "moonpush_deflate_bytes_out_total") < len / 2)
  end)

  it("understands compressed client messages (with or without a final block)", function()
    local c = connect("/wsz")
    local ch1, ch2 = client.unique("zu-"), client.unique("zu-")
    c:send_frame({ opcode = OP.text, rsv = 4, payload = zlib.deflate(cjson.encode({ type = "subscribe", channel = ch1 })) })
    local r = cjson.decode(next_message(c).text)
    assert.equals("subscribed", r.type)
    assert.equals(ch1, r.channel)
    c:send_frame({ opcode = OP.text, rsv = 4,
                   payload = zlib.deflate(cjson.encode({ type = "subscribe", channel = ch2 }), { final = true }) })
    r = cjson.decode(next_message(c).text)
    assert.equals("subscribed", r.type)
    assert.equals(ch2, r.channel)
    -- plain client frames still work on a deflate connection
    c:send_text(cjson.encode({ type = "unsubscribe", channel = ch1 }))
    r = cjson.decode(next_message(c).text)
    assert.equals("unsubscribed", r.type)
    c:close()
  end)

  it("closes 1009 on a small message that inflates past max_message_bytes (zip bomb)", function()
    local c = connect("/wsz")
    local bomb = zlib.deflate('{"type":"subscribe","channel":"' .. ("a"):rep(1000000) .. '"}')
    assert.is_true(#bomb < MAX_MSG)
    c:send_frame({ opcode = OP.text, rsv = 4, payload = bomb })
    local code, reason = c:expect_close()
    assert.equals(1009, code)
    assert.equals("message too big", reason)
    assert.is_true(c:closed_within(2))
    c:close()
    client.assert_serves(srv)
  end)

  it("accepts a message that inflates to exactly max_message_bytes", function()
    local c = connect("/wsz")
    local head = '{"type":"nothing","pad":"'
    local text = head .. ("b"):rep(MAX_MSG - #head - 2) .. '"}'
    assert.equals(MAX_MSG, #text)
    c:send_frame({ opcode = OP.text, rsv = 4, payload = zlib.deflate(text) })
    local r = cjson.decode(next_message(c).text)
    assert.equals("error", r.type)       -- an unknown type, answered: not closed
    c:close()
  end)

  it("closes 1007 on data that does not inflate", function()
    local c = connect("/wsz")
    c:send_frame({ opcode = OP.text, rsv = 4, payload = "\255\255\255\255garbage" })
    local code, reason = c:expect_close()
    assert.equals(1007, code)
    assert.equals("bad compressed data", reason)
    c:close()
    client.assert_serves(srv)
  end)

  it("closes 1002 on RSV1 where deflate was not negotiated", function()
    for _, c in ipairs({ connect("/ws"), connect("/wsz", nil, false) }) do
      c:send_frame({ opcode = OP.text, rsv = 4, payload = zlib.deflate('{"type":"subscribe","channel":"x"}') })
      local code, reason = c:expect_close()
      assert.equals(1002, code)
      assert.equals("protocol error", reason)
      c:close()
    end
    client.assert_serves(srv)
  end)

  it("closes 1002 on RSV1 on a continuation or control frame", function()
    local c = connect("/wsz")
    c:send_frame({ opcode = OP.ping, rsv = 4, payload = "x" })
    assert.equals(1002, (c:expect_close()))
    c:close()
    c = connect("/wsz")
    c:send_frame({ opcode = OP.text, fin = false, rsv = 4, payload = zlib.deflate('{"type":') })
    c:send_frame({ opcode = OP.cont, rsv = 4, payload = "x" })
    assert.equals(1002, (c:expect_close()))
    c:close()
    client.assert_serves(srv)
  end)

  describe("config", function()
    local function check(route_edit)
      return server.check_config(function(cfg) route_edit(cfg.routes) end)
    end

    it("takes true or { threshold, level } on websocket routes only", function()
      local out, rc = check(function(r) r[1].permessage_deflate = { threshold = 1024, level = 9 } end)
      assert.equals(0, rc, out)
      out, rc = check(function(r) r[2].permessage_deflate = true end)
      assert.equals(1, rc, out)
      assert.matches("permessage_deflate applies to websocket routes only", out, 1, true)
      out, rc = check(function(r) r[1].permessage_deflate = { level = 0 } end)
      assert.matches("permessage_deflate.level must be an integer from 1 to 9", out, 1, true)
      out, rc = check(function(r) r[1].permessage_deflate = { threshold = -1 } end)
      assert.matches("permessage_deflate.threshold must be an integer", out, 1, true)
      out, rc = check(function(r) r[1].permessage_deflate = { window = 10 } end)
      assert.matches("permessage_deflate.window", out, 1, true)
      out, rc = check(function(r) r[1].permessage_deflate = "yes" end)
      assert.matches("permessage_deflate must be true", out, 1, true)
    end)
  end)
end)
