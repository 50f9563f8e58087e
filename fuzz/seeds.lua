-- Writes the seed corpus of every fuzz harness: fuzz/corpus/<harness>/seed-*.
-- Run from the repository root:  luajit fuzz/seeds.lua
-- Each seed is a small, meaningful input (valid requests, upgrades, publish
-- bodies, frames, configs from examples/ and the specs, and the bad inputs
-- the specs check); the input formats are described at the top of each
-- fuzz/<harness>.c. Inputs libFuzzer found and `make fuzz-merge` kept sit
-- beside them under other names; this script leaves those alone.

local bit = require "bit"

local function write(harness, name, bytes)
  local dir = "fuzz/corpus/" .. harness
  os.execute("mkdir -p " .. dir)
  local f = assert(io.open(dir .. "/seed-" .. name, "wb"))
  f:write(bytes)
  f:close()
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- A client WebSocket frame: FIN + opcode, masked payload.
local MASK = { 0x37, 0xfa, 0x21, 0x3d }
local function frame(opcode, payload, opts)
  opts = opts or {}
  local len = #payload
  local fin = opts.fin == false and 0 or 0x80
  local masked = opts.unmasked and 0 or 0x80
  local head = { string.char(fin + opcode) }
  if len < 126 then
    head[2] = string.char(masked + len)
  elseif len < 65536 then
    head[2] = string.char(masked + 126, bit.rshift(len, 8), bit.band(len, 255))
  else
    head[2] = string.char(masked + 127, 0, 0, 0, 0, bit.band(bit.rshift(len, 24), 255),
      bit.band(bit.rshift(len, 16), 255), bit.band(bit.rshift(len, 8), 255), bit.band(len, 255))
  end
  if opts.unmasked then return table.concat(head) .. payload end
  local out = {}
  for i = 1, len do
    out[i] = string.char(bit.bxor(payload:byte(i), MASK[(i - 1) % 4 + 1]))
  end
  return table.concat(head) .. string.char(unpack(MASK)) .. table.concat(out)
end
local function text(s, opts) return frame(0x1, s, opts) end
local function close(code, reason)
  return frame(0x8, (code and string.char(bit.rshift(code, 8), bit.band(code, 255)) or "") .. (reason or ""))
end

---------------------------------------------------------------------------
-- http: one read-size byte ("\0" = one read), then what the client sends
---------------------------------------------------------------------------
local CRLF = "\r\n"
local function req(lines, body)
  return table.concat(lines, CRLF) .. CRLF .. CRLF .. (body or "")
end
local PUB = "Authorization: Bearer publisher-secret"
local BODY = '{"channel":"news","data":{"text":"hello"}}'
local UPGRADE = {
  "Host: fuzz", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
}
local function upgrade(target, extra)
  local lines = { "GET " .. target .. " HTTP/1.1" }
  for _, l in ipairs(UPGRADE) do lines[#lines + 1] = l end
  for _, l in ipairs(extra or {}) do lines[#lines + 1] = l end
  return req(lines)
end

local http = {
  health = "\0" .. req({ "GET /health HTTP/1.1", "Host: fuzz" }),
  ["head-http10"] = "\0" .. req({ "HEAD /health HTTP/1.0" }),
  ["pipelined-bytewise"] = "\1" .. req({ "GET /health HTTP/1.1", "Host: fuzz" })
    .. req({ "GET /metrics HTTP/1.1", "Host: fuzz" }) .. req({ "GET /nowhere HTTP/1.1", "Host: fuzz" }),
  publish = "A" .. req({ "POST /publish HTTP/1.1", "Host: fuzz", PUB, "Content-Type: application/json",
    "Content-Length: " .. #BODY }, BODY),
  ["publish-chunked"] = "\7" .. req({ "POST /publish HTTP/1.1", "Host: fuzz", PUB,
    "Transfer-Encoding: chunked" }, "10" .. CRLF .. BODY:sub(1, 16) .. CRLF
    .. string.format("%x", #BODY - 16) .. CRLF .. BODY:sub(17) .. CRLF .. "0" .. CRLF .. CRLF),
  ["publish-expect-continue"] = "\0" .. req({ "POST /publish/routed HTTP/1.1", "Host: fuzz", PUB,
    "Expect: 100-continue", "Content-Length: " .. #BODY }, BODY),
  ["publish-no-length"] = "\0" .. req({ "POST /publish HTTP/1.1", "Host: fuzz", PUB }),
  ["publish-wrong-type"] = "\0" .. req({ "POST /publish HTTP/1.1", PUB, "Content-Type: text/plain",
    "Content-Length: 2" }, "{}"),
  ["publish-no-token"] = "\0" .. req({ "POST /publish HTTP/1.1", "Content-Length: " .. #BODY }, BODY),
  ["publish-get"] = "\0" .. req({ "GET /publish HTTP/1.1", PUB }),
  ["publish-too-large"] = "\0" .. req({ "POST /publish HTTP/1.1", PUB, "Content-Length: 99999999" }),
  history = "\0" .. req({ "GET /history?channel=news&since=0&limit=5 HTTP/1.1", PUB }),
  ["history-bad"] = "\0" .. req({ "GET /history?channel=&since=-1 HTTP/1.1", PUB }),
  presence = "\0" .. req({ "GET /presence?user=alice HTTP/1.1", PUB }),
  ["ws-upgrade"] = " " .. upgrade("/ws?channels=news,orders:1&since.news=0&epoch.news=x",
    { "Authorization: Bearer alice-phone" }) .. text('{"type":"subscribe","channel":"orders:2"}'),
  ["ws-upgrade-query-token"] = "\0" .. upgrade("/ws/reliable?token=till-1&channels=store-12:a")
    .. text('{"type":"ack","channel":"store-12:a","seq":1}'),
  ["ws-upgrade-bad-key"] = "\0" .. req({ "GET /ws?token=bob HTTP/1.1", "Upgrade: websocket",
    "Connection: Upgrade", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: short" }),
  ["ws-plain-get"] = "\0" .. req({ "GET /ws?token=bob HTTP/1.1", "Host: fuzz" }),
  ["ws-denied"] = "\0" .. upgrade("/ws?token=nobody"),
  ["headers-many"] = "\0" .. (function()
    local l = { "GET /health HTTP/1.1" }
    for i = 1, 70 do l[#l + 1] = "X-H" .. i .. ": v" end
    return req(l)
  end)(),
  ["header-empty-value"] = "\0" .. req({ "GET /health?x=%41+b#frag HTTP/1.1", "X-Empty:", "HOST: fuzz" }),
  malformed = "\0GARBAGE\r\n\r\n",
  -- the trailer over-read of issue 10 has its case in fuzz/regressions-pending/http/
}
for name, bytes in pairs(http) do write("http", name, bytes) end

---------------------------------------------------------------------------
-- ws: one byte (bit 7: the acks route; bits 0-6: read-size seed), then the
-- bytes after the handshake
---------------------------------------------------------------------------
local ws = {
  subscribe = "\0" .. text('{"type":"subscribe","channel":"orders:1","since":0}')
    .. text('{"type":"unsubscribe","channel":"orders:1"}'),
  ["echo-bytewise"] = "\1" .. text('{"type":"echo","n":[1,2,{"x":null}]}') .. text('{"type":"deny"}'),
  ["ping-pong"] = "\0" .. frame(0x9, "are you there") .. frame(0xA, "") .. text('{"type":"nothing"}'),
  ["close-normal"] = "\0" .. close(1000, "bye"),
  ["close-3000"] = "\0" .. close(3000),
  ["close-one-byte"] = "\0" .. frame(0x8, "\3"),
  fragmented = "\5" .. text('{"type":"subscr', { fin = false }) .. frame(0x9, "mid")
    .. frame(0x0, 'ibe","channel":"news"}'),
  binary = "\0" .. frame(0x2, "\0\1\2\3"),
  ["bad-utf8"] = "\0" .. text('{"type":"echo","s":"\xff\xfe"}'),
  unmasked = "\0" .. text('{"type":"echo"}', { unmasked = true }),
  ["reserved-opcode"] = "\0" .. frame(0x3, "x"),
  ["declared-oversize"] = "\0" .. "\129\255\0\0\0\0\1\0\0\0" .. string.char(unpack(MASK)),
  ["acks-route"] = "\128" .. text('{"type":"subscribe","channel":"store-12:a"}')
    .. text('{"type":"ack","channel":"news","seq":1}') .. close(1001),
}
for name, bytes in pairs(ws) do write("ws", name, bytes) end

---------------------------------------------------------------------------
-- publish: a body, as is
---------------------------------------------------------------------------
local publish = {
  channel = BODY,
  user = '{"user":"alice","data":"hi"}',
  batch = '[{"channel":"news","data":1},{"channel":"orders:1","data":{"text":"x"},"ttl":60,"store":false},'
    .. '{"user":"store-12","data":[true,null,1.5e300]}]',
  ["text-field"] = '{"channel":"orders:1","data":{"text":"Order 17 \\u00e9 paid\\n"}}',
  ["empty-batch"] = "[]",
  ["empty-object"] = "{}",
  ["not-an-object"] = '"just a string"',
  ["bad-channel"] = '{"channel":"no spaces allowed","data":1}',
  ["both-targets"] = '{"channel":"news","user":"alice","data":1}',
  ["no-data"] = '{"channel":"news"}',
  ["bad-ttl"] = '{"channel":"news","data":1,"ttl":-1}',
  ["bad-store"] = '{"channel":"news","data":1,"store":"yes"}',
  ["bad-json"] = '{"channel":"news","data":',
  ["long-channel"] = '{"channel":"' .. string.rep("c", 129) .. '","data":1}',
  nested = '{"channel":"news","data":' .. string.rep("[", 40) .. string.rep("]", 40) .. '}',
}
for name, bytes in pairs(publish) do write("publish", name, bytes) end

---------------------------------------------------------------------------
-- frames: lines, one client frame each; #acks, #publish <channel> <json>
---------------------------------------------------------------------------
local frames = {
  subscribe = '{"type":"subscribe","channel":"news"}\n{"type":"subscribe","channel":"orders:7"}\n'
    .. '{"type":"unsubscribe","channel":"orders:7"}\n{"type":"unsubscribe","channel":"orders:7"}',
  resume = '#publish news {"n":1}\n#publish news {"n":2}\n{"type":"subscribe","channel":"news","since":0}\n'
    .. '{"type":"subscribe","channel":"news","since":1,"epoch":"stale"}',
  acks = '#acks\n#publish news {"n":1}\n{"type":"subscribe","channel":"news"}\n#publish news {"n":2}\n'
    .. '{"type":"ack","channel":"news","seq":2}\n{"type":"ack","channel":"news","seq":9}',
  ["acks-disabled"] = '{"type":"ack","channel":"news","seq":1}',
  plugin = '{"type":"echo","x":1}\n{"type":"deny"}\n{"type":"whatever"}',
  ["bad-frames"] = 'not json\n[1,2]\n{"no":"type"}\n{"type":7}\n{"type":"subscribe"}\n'
    .. '{"type":"subscribe","channel":"bad name"}\n{"type":"subscribe","channel":"news","since":-1}\n'
    .. '{"type":"subscribe","channel":"news","since":"0"}\n{"type":"ack","channel":"news","seq":0}\n',
  forbidden = '{"type":"subscribe","channel":"secret"}\n{"type":"unsubscribe","channel":"user:alice"}',
  ["too-many"] = (function()
    local l = {}
    for i = 1, 8 do l[i] = '{"type":"subscribe","channel":"orders:' .. i .. '"}' end
    return table.concat(l, "\n")
  end)(),
}
for name, bytes in pairs(frames) do write("frames", name, bytes) end

---------------------------------------------------------------------------
-- config: a config file's text. It sits in conf/ of a directory whose
-- plugins/ is the repository's and conf/plugins/ is examples/plugins/, as
-- examples/ is laid out, and fuzz-plugins/ is fuzz/plugins (fuzz/config.c).
---------------------------------------------------------------------------
local config = {
  ["example"] = read("examples/moonpush.lua"),
  ["example-pos"] = read("examples/pos.lua"),
  ["fuzz"] = read("fuzz/fuzz.lua"):gsub('"%.%./plugins", "plugins"', '"../plugins", "../fuzz-plugins"'),
  minimal = 'return { routes = { { path = "/health", type = "health" } } }\n',
  ["syntax-error"] = "return { routes = \n",
  ["not-a-table"] = 'return "config"\n',
  raises = 'error("no config today")\n',
  ["unknown-key"] = 'return { listen = "127.0.0.1:1", rootes = {} }\n',
  ["bad-listen"] = 'return { listen = "nowhere", routes = { { path = "/h", type = "health" } } }\n',
  ["bad-limits"] = 'return { limits = { max_batch = -1 }, routes = { { path = "/h", type = "health" } } }\n',
  ["two-routes-one-path"] = 'return { routes = { { path = "/h", type = "health" }, { path = "/h/", type = "metrics" } } }\n',
  ["missing-plugin"] = 'return { plugin_dir = "../plugins", routes = { { path = "/ws", type = "websocket",\n'
    .. '  plugins = { { name = "no_such_plugin" } } } } }\n',
  ["plugin-bad-config"] = 'return { plugin_dir = "../plugins", routes = { { path = "/p", type = "publish",\n'
    .. '  plugins = { { name = "route_default", config = { max_data_bytes = "big" } } } } } }\n',
  ["ws-without-auth"] = 'return { routes = { { path = "/ws", type = "websocket" } } }\n',
  ["acks-and-history"] = [[
return {
  plugin_dir = "../plugins",
  admin = { listen = "127.0.0.1:9", token = "0123456789abcdef-long" },
  log = { level = "warn", format = "json", access = false },
  history = { max_messages = 5, channels = { { pattern = "user:*", max_messages = 0 }, { pattern = "x", max_age_ms = 1 } } },
  timeouts = { ping_ms = 1000, idle_ms = 2000 },
  routes = {
    { path = "/ws", type = "websocket", duplicate_devices = "allow", budget = 1000,
      acks = { timeout_ms = 10, factor = 1, max_tries = 1, jitter = 0 },
      plugins = { { name = "auth_jwt", config = { secret = "0123456789abcdef0123456789abcdef", audience = "app" } } } },
  },
}
]],
}
for name, bytes in pairs(config) do write("config", name, bytes) end

---------------------------------------------------------------------------
-- deflate: 'n' + a Sec-WebSocket-Extensions offer, or any other byte + a
-- compressed message (raw deflate, RFC 7692: the 00 00 ff ff tail dropped)
---------------------------------------------------------------------------
package.path = "spec/?.lua;" .. package.path
local zlib = require "helpers.zlib"
local deflate = {
  ["offer-chromium"] = "npermessage-deflate; client_max_window_bits",
  ["offer-two"] = "npermessage-deflate; server_max_window_bits=10, permessage-deflate; client_no_context_takeover",
  ["offer-quoted"] = 'npermessage-deflate; client_max_window_bits="15"; server_no_context_takeover',
  ["offer-bad"] = "npermessage-deflate; client_max_window_bits=16; x=1, x-webkit-deflate-frame",
  ["msg-subscribe"] = "m" .. zlib.deflate('{"type":"subscribe","channel":"news"}'),
  ["msg-final-block"] = "m" .. zlib.deflate('{"type":"ack","channel":"news","seq":3}', { final = true }),
  ["msg-bomb"] = "m" .. zlib.deflate(("{"):rep(100000)),
  ["msg-empty"] = "m\0",
  ["msg-garbage"] = "m\255\255\255\255garbage",
}
for name, bytes in pairs(deflate) do write("deflate", name, bytes) end
