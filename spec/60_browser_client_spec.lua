-- The JS client (clients/js/moonpush.js) in a real headless Chromium against
-- the real server (docs/client-js.md). Each test opens a tab on the harness
-- page (spec/helpers/browser_harness.js), creates clients there and checks
-- what reached the application and what crossed the wire: delivery, resume
-- after a cut in the middle of a stream, resets, acks after the handler,
-- close codes that stop reconnecting, getToken() on every reconnect, token
-- refresh before expiry (and 4005 after a refused one), a server restart,
-- and the demo page (examples/web).
local server = require "helpers.server"
local client = require "helpers.client"
local routes = require "helpers.routes"
local session = require "helpers.session"
local browser = require "helpers.browser"

local J = browser.json
local json = client.json

-- The default tokens, and users of their own for the ack specs (whose
-- personal channels no other spec publishes to).
local TOKENS = require("helpers.util").copy(server.TOKENS)
TOKENS["dave"] = { user = "dave", kind = "web", channels = { "*" } }
TOKENS["erin"] = { user = "erin", kind = "web", channels = { "*" } }

-- Every websocket route the browser's clients connect to is built here: the
-- page is served from another origin (the static server's port) than the
-- server, and the server refuses a handshake from a page of another origin
-- unless the route lists it (403 origin_not_allowed), so the routes list
-- the origin of the browser started last (start_browser()).
local page_origin

local function start_browser()
  local br = browser.start()
  page_origin = br.origin
  return br
end

-- Chromium offers permessage-deflate on every connection: each route takes
-- it, so every spec here runs over it (messages of 256 bytes or more arrive
-- compressed, and Chromium compresses what it sends).
local function websocket_route(path, extra)
  local r = { path = path, type = "websocket", plugins = { routes.device_auth(TOKENS) }, origins = { page_origin },
              permessage_deflate = true }
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

-- JWTs for the refresh specs (auth_jwt on /ws/jwt, no leeway).
local JWT_SECRET = "0123456789abcdef0123456789abcdef-browser"
local function jwt(claims) return require("helpers.jwt").sign(JWT_SECRET, claims) end
local unix_now = require("helpers.jwt").now

local function base_routes()
  return {
    websocket_route("/ws"),
    websocket_route("/ws/jwt", { plugins = { { name = "auth_jwt", config = { secret = JWT_SECRET, leeway = 0 } } } }),
    -- resends come quickly, and far more often than a handler of 700 ms
    websocket_route("/ws/acked", { acks = { timeout_ms = 300, factor = 1, max_tries = 50, jitter = 0 } }),
    -- a device that does not ack within 2 sends is closed with 4004
    websocket_route("/ws/strict", { acks = { timeout_ms = 250, factor = 1, max_tries = 2, jitter = 0 } }),
    -- on_message answers (spec/fixtures/plugins/events.lua): echo, deny, boom
    websocket_route("/ws/events", { plugins = { routes.device_auth(TOKENS), "events" } }),
    { path = "/publish", type = "publish", plugins = { routes.publisher_auth() } },
    { path = "/history", type = "history", plugins = { routes.publisher_auth() } },
    { path = "/health", type = "health" },
  }
end

-- The servers' config: base_routes() and the fixture plugins, with `extra` merged in.
local function config(extra)
  local cfg = { routes = base_routes(), plugin_path = { server.ROOT .. "/spec/fixtures/plugins", server.ROOT .. "/plugins" } }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return cfg
end

local function history_of(srv, ch)
  local status, body, _, raw = client.http(srv, "/history?channel=" .. ch .. "&limit=1000",
    { headers = { authorization = "Bearer " .. server.PUBLISHER } })
  assert.equals(200, status, raw)
  return body
end

local function publish_n(srv, ch, from, to, extra)
  local batch = {}
  for i = from, to do
    local item = { channel = ch, data = { n = i } }
    for k, v in pairs(extra or {}) do item.data[k] = v end
    batch[#batch + 1] = item
  end
  return client.publish_ok(srv, batch)
end

-- JS that creates client `name` on the server's `path` and connects it.
local function connect_js(srv, name, path, opts)
  return string.format("harness.create(%s, %s, %s); harness.client(%s).connect();",
    J(name), J(srv.ws_url(path or "/ws")), J(opts or {}), J(name))
end

local function wait_open_js(name, ms)
  return string.format([[await harness.waitFor(() => harness.client(%s).state === "open" &&
      harness.received(%s, "subscribed").length >= harness.client(%s).channels.length, %d, %s);]],
    J(name), J(name), J(name), ms or 8000, J(name .. " open and subscribed"))
end

-- 200 frames in one request: about 24 KB queued at once, over
-- max_outbound_bytes (MAX_OUT) before a browser can read them, so the server
-- cuts the connection (4001). The body (about 15 KB) stays under
-- max_body_bytes, which max_outbound_bytes must hold (the envelope of each
-- message makes the frames bigger than the items). Each frame is under the
-- 256-byte permessage-deflate threshold, so it goes plain on every route.
local MAX_BODY, MAX_OUT = 16384, 16384 + 512
local function burst(srv, ch, from)
  publish_n(srv, ch, from, from + 199, { pad = ("p"):rep(20) })
end

-- 1..n
local function upto(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

describe("JS client in Chromium", function()
  local br, srv, page

  lazy_setup(function()
    br = start_browser()
    srv = server.start(config({
      -- a burst of big frames overflows a connection's queue (4001): the cut
      limits = { max_outbound_bytes = MAX_OUT, max_body_bytes = MAX_BODY, socket_send_buffer = 4096 },
      history = { max_messages = 10000, channels = { { pattern = "short:*", max_messages = 5 } } },
    }))
  end)

  lazy_teardown(function()
    if br then br:stop() end
    if srv then session.stop(srv) end
  end)

  before_each(function()
    page = br:open("/harness.html")
  end)

  after_each(function()
    if page then
      pcall(page.js, page, "harness.closeAll()", 5)
      page:close()
    end
  end)

  it("delivers channel and personal messages in order with channel, seq, id and data", function()
    local ch = client.unique("news-")
    page:js(connect_js(srv, "a", "/ws", { token = "bob", channels = { ch } }) .. wait_open_js("a"))
    local answers = publish_n(srv, ch, 1, 3)
    client.publish_ok(srv, { user = "bob", data = { hello = "bob" } })
    local got = page:js(string.format([[
      await harness.waitFor(() => harness.seqs("a", %s).length === 3 && harness.seqs("a", "user:bob").length >= 1, 5000, "messages");
      return harness.rec("a").messages;]], J(ch)))
    local on_ch = {}
    for _, m in ipairs(got) do if m.channel == ch then on_ch[#on_ch + 1] = m end end
    for i = 1, 3 do
      assert.same({ channel = ch, seq = i, id = answers[i].id, data = { n = i } }, on_ch[i])
    end
    assert.same({ hello = "bob" }, got[#got].data)
    assert.equals("user:bob", got[#got].channel)
  end)

  it("negotiates permessage-deflate and receives compressed messages intact", function()
    local ch = client.unique("deflate-")
    page:js(connect_js(srv, "z", "/ws", { token = "bob", channels = { ch } }) .. wait_open_js("z"))
    local big = {}
    for i = 1, 40 do big[i] = { id = i, title = "headline number " .. i, body = ("lorem ipsum "):rep(4) } end
    publish_n(srv, ch, 1, 2, { items = big })
    local r = page:js(string.format([[
      await harness.waitFor(() => harness.seqs("z", %s).length === 2, 5000, "2 messages");
      return { ext: harness.client("z")._ws.extensions, messages: harness.rec("z").messages };]], J(ch)))
    assert.equals("permessage-deflate; server_no_context_takeover; client_no_context_takeover", r.ext)
    local n = 0
    for _, m in ipairs(r.messages) do
      if m.channel == ch then
        n = n + 1
        assert.same(big, m.data.items)
      end
    end
    assert.equals(2, n)
  end)

  it("subscribes and unsubscribes on an open connection", function()
    local a, b = client.unique("sub-a-"), client.unique("sub-b-")
    page:js(connect_js(srv, "a", "/ws", { token = "bob", channels = { a } }) .. wait_open_js("a"))
    page:js(string.format([[harness.client("a").subscribe(%s);
      await harness.waitFor(() => harness.received("a", "subscribed").some((f) => f.channel === %s), 5000, "subscribed");]], J(b), J(b)))
    publish_n(srv, b, 1, 1)
    page:js(string.format([[await harness.waitFor(() => harness.seqs("a", %s).length === 1, 5000, "message on b");
      harness.client("a").unsubscribe(%s);
      await harness.waitFor(() => harness.received("a", "unsubscribed").length === 1, 5000, "unsubscribed");]], J(b), J(b)))
    publish_n(srv, b, 2, 2)
    publish_n(srv, a, 1, 1)   -- arrives after b's seq 2 would have
    local seqs = page:js(string.format([[
      await harness.waitFor(() => harness.seqs("a", %s).length === 1, 5000, "message on a");
      return { a: harness.seqs("a", %s), b: harness.seqs("a", %s), channels: harness.client("a").channels };]], J(a), J(a), J(b)))
    assert.same({ 1 }, seqs.a)
    assert.same({ 1 }, seqs.b)
    assert.same({ a }, seqs.channels)
  end)

  it("drops a channel the token may not read (error forbidden) instead of asking again on reconnect", function()
    -- carol may read "sports" only
    local r = page:js(connect_js(srv, "c", "/ws", { token = "carol", channels = { "sports", "news" }, minDelayMs = 20, maxDelayMs = 100 }) .. [[
      await harness.waitFor(() => harness.rec("c").errors.some((e) => e.code === "forbidden"), 5000, "forbidden");
      return { errors: harness.rec("c").errors, channels: harness.client("c").channels };]])
    assert.same({ "sports" }, r.channels)
    assert.equals("news", r.errors[1].channel)
    -- after a cut, the second connection asks for sports only
    burst(srv, "sports", 1)
    local second = page:js([[
      await harness.waitFor(() => harness.rec("c").connects.length === 2 && harness.client("c").state === "open", 10000, "reconnected");
      const log = harness.rec("c").log;
      const from = log.findLastIndex((e) => e.ev === "connect");
      await harness.sleep(200);
      return log.slice(from).filter((e) => e.ev === "out" && e.frame.type === "subscribe").map((e) => e.frame.channel);]])
    -- (its personal channel is resumed by the URL: since.user:carol)
    assert.same({ "sports" }, second)
  end)

  it("after a cut in the middle of a stream (4001) reconnects by itself and misses nothing, duplicates nothing", function()
    local ch = client.unique("stream-")
    page:js(connect_js(srv, "s", "/ws", { tokens = { "bob" }, channels = { ch }, minDelayMs = 50, maxDelayMs = 400 })
      .. wait_open_js("s"))
    publish_n(srv, ch, 1, 50)
    page:js(string.format([[await harness.waitFor(() => harness.seqs("s", %s).length === 50, 5000, "50 messages");
      harness.hold("s");]], J(ch)))
    burst(srv, ch, 51)
    local cut = page:js([[
      await harness.waitFor(() => harness.rec("s").held === 1, 10000, "the reconnect asking for a token");
      return harness.rec("s").states.filter((s) => s.state === "closed");]])
    assert.equals(1, #cut)
    assert.is_true(cut[1].willReconnect)
    assert.is_true(cut[1].code == 4001 or cut[1].code == 1006, "cut with " .. tostring(cut[1].code))
    -- 500 more while the client is away (its reconnect waits for its token)
    for b = 0, 9 do publish_n(srv, ch, 251 + b * 50, 300 + b * 50) end
    local r = page:js(string.format([[harness.release("s");
      await harness.waitFor(() => harness.seqs("s", %s).length >= 750, 20000, "750 messages");
      await harness.sleep(300);   // anything late (a duplicate) would show up now
      return { seqs: harness.seqs("s", %s), connects: harness.rec("s").connects, tokenCalls: harness.rec("s").tokenCalls,
               state: harness.client("s").state, subs: harness.sent("s", "subscribe") };]], J(ch), J(ch)), 40)
    assert.same(upto(750), r.seqs)
    assert.equals("open", r.state)
    assert.equals(2, #r.connects)
    assert.equals(2, r.tokenCalls)
    -- the second connection resumed the channel after what had arrived
    local resumed
    for _, f in ipairs(r.subs) do if f.channel == ch and f.since then resumed = f end end
    assert.is_not_nil(resumed, "no subscribe with since: " .. json.encode(r.subs))
    assert.is_true(resumed.since >= 50 and resumed.since < 750, "resumed after " .. resumed.since)
  end)

  it("resumes from positions given at construction, and reports gap, ahead and epoch resets", function()
    local ch = client.unique("short:r")
    publish_n(srv, ch, 1, 20)                 -- history keeps 16..20
    local epoch = history_of(srv, ch).epoch
    assert.is_truthy(epoch ~= "")
    local function make(name, pos)
      return connect_js(srv, name, "/ws", { token = "bob", device = name, channels = { ch },
                                            positions = { [ch] = pos } })
    end
    page:js(make("ok", { epoch = epoch, seq = 17 }) .. make("gap", { epoch = epoch, seq = 3 })
      .. make("ahead", { epoch = epoch, seq = 99 }) .. make("epoch", { epoch = "0-gone", seq = 18 })
      .. wait_open_js("ok") .. wait_open_js("gap") .. wait_open_js("ahead") .. wait_open_js("epoch"))
    page:js(string.format([[await harness.waitFor(() => harness.seqs("gap", %s).length === 5 &&
        harness.seqs("epoch", %s).length === 5 && harness.seqs("ok", %s).length === 3 &&
        harness.rec("ahead").resets.length === 1, 5000, "replays");]], J(ch), J(ch), J(ch)))
    publish_n(srv, ch, 21, 21)
    local r = page:js(string.format([[
      const out = {};
      for (const n of ["ok", "gap", "ahead", "epoch"]) {
        await harness.waitFor(() => harness.seqs(n, %s).includes(21), 5000, n + " gets 21");
        out[n] = { seqs: harness.seqs(n, %s), resets: harness.rec(n).resets, pos: harness.client(n).positions()[%s] };
      }
      return out;]], J(ch), J(ch), J(ch)))
    assert.same({ 18, 19, 20, 21 }, r.ok.seqs)
    assert.same({}, r.ok.resets)
    assert.same({ 16, 17, 18, 19, 20, 21 }, r.gap.seqs)
    assert.same({ { channel = ch, epoch = epoch, first_seq = 16, last_seq = 20, reason = "gap" } }, r.gap.resets)
    assert.same({ 21 }, r.ahead.seqs)
    assert.same({ { channel = ch, epoch = epoch, first_seq = 16, last_seq = 20, reason = "ahead" } }, r.ahead.resets)
    -- a new epoch: seqs at or below the old position are new messages
    assert.same({ 16, 17, 18, 19, 20, 21 }, r.epoch.seqs)
    assert.same({ { channel = ch, epoch = epoch, first_seq = 16, last_seq = 20, reason = "epoch" } }, r.epoch.resets)
    for _, n in ipairs({ "ok", "gap", "ahead", "epoch" }) do
      assert.same({ epoch = epoch, seq = 21 }, r[n].pos)
    end
  end)

  it("on an ack route acks only after the handler's promise settled, and a resend reaches the handler once", function()
    local ch = client.unique("acked-")
    local dev = client.unique("ack-dev-")
    page:js(connect_js(srv, "k", "/ws/acked", { token = "erin", device = dev, channels = { ch }, handlerDelayMs = 700 })
      .. wait_open_js("k"))
    publish_n(srv, ch, 1, 3)
    local r = page:js(string.format([[
      await harness.waitFor(() => harness.sent("k", "ack").some((f) => f.channel === %s && f.seq === 3), 8000, "ack of 3");
      return { log: harness.rec("k").log, seqs: harness.seqs("k", %s) };]], J(ch), J(ch)))
    assert.same({ 1, 2, 3 }, r.seqs)
    local handled, copies, acks = {}, {}, {}
    for _, e in ipairs(r.log) do
      if e.ev == "handled" and e.channel == ch then handled[e.seq] = true end
      if e.ev == "in" and e.frame.type == "message" and e.frame.channel == ch then
        copies[e.frame.seq] = (copies[e.frame.seq] or 0) + 1
      end
      if e.ev == "out" and e.frame.type == "ack" and e.frame.channel == ch then
        acks[#acks + 1] = e.frame.seq
        for s = 1, e.frame.seq do
          assert.is_true(handled[s], "ack of " .. e.frame.seq .. " left before the handler of " .. s .. " was done")
        end
      end
    end
    -- the server resent (timeout 300 ms, handler 700 ms): the copies never
    -- reached the handler a second time
    assert.is_true((copies[1] or 0) >= 2, "no resend seen: " .. json.encode(copies))
    assert.equals(3, acks[#acks])
    -- the device's cursor moved: a new client of the device gets nothing old
    publish_n(srv, ch, 4, 4)
    local again = page:js(string.format([[harness.client("k").close();
      %s %s
      await harness.waitFor(() => harness.seqs("k2", %s).includes(4) || harness.seqs("k2", %s).length > 1, 5000, "seq 4");
      return harness.seqs("k2", %s);]],
      connect_js(srv, "k2", "/ws/acked", { token = "erin", device = dev, channels = { ch } }), wait_open_js("k2"),
      J(ch), J(ch), J(ch)))
    assert.same({ 4 }, again)
  end)

  it("after an ack timeout (4004) reconnects, and the slow handler's message is acked, not handled again", function()
    local ch = client.unique("strict-")
    page:js(connect_js(srv, "t", "/ws/strict", { token = "dave", device = client.unique("strict-dev-"), channels = { ch },
                                                  handlerDelayMs = 1500, minDelayMs = 20, maxDelayMs = 100 })
      .. wait_open_js("t"))
    publish_n(srv, ch, 1, 1)
    local r = page:js(string.format([[
      await harness.waitFor(() => harness.rec("t").states.some((s) => s.code === 4004), 5000, "4004");
      await harness.waitFor(() => harness.sent("t", "ack").some((f) => f.channel === %s && f.seq === 1), 8000, "ack of 1");
      return { seqs: harness.seqs("t", %s), state: harness.client("t").state, connects: harness.rec("t").connects.length,
               closes: harness.rec("t").states.filter((s) => s.state === "closed") };]], J(ch), J(ch)), 20)
    assert.same({ 1 }, r.seqs)
    assert.equals("open", r.state)
    assert.is_true(r.connects >= 2)
    assert.same({ 4004, true }, { r.closes[1].code, r.closes[1].willReconnect })
  end)

  it("stops reconnecting when kicked (4003)", function()
    page:js(connect_js(srv, "k", "/ws", { token = "carol", channels = { "sports" }, minDelayMs = 20, maxDelayMs = 100 })
      .. wait_open_js("k"))
    local out = srv:admin('kick("carol", "go away")')
    assert.matches("1", out)
    local r = page:js([[
      await harness.waitFor(() => harness.client("k").state === "closed", 5000, "closed");
      await harness.sleep(1000);     // 10 backoff caps: a reconnect would have happened
      return { states: harness.rec("k").states, connects: harness.rec("k").connects.length };]])
    local last = r.states[#r.states]
    assert.same({ "closed", 4003, "go away", false }, { last.state, last.code, last.reason, last.willReconnect })
    assert.equals(1, r.connects)
    assert.matches("0", (srv:admin('#clients("carol")')))
  end)

  it("stops reconnecting when replaced (4002): two clients of one device do not take turns", function()
    local dev = client.unique("twin-")
    page:js(connect_js(srv, "one", "/ws", { token = "bob", device = dev, minDelayMs = 20, maxDelayMs = 100 })
      .. wait_open_js("one")
      .. connect_js(srv, "two", "/ws", { token = "bob", device = dev, minDelayMs = 20, maxDelayMs = 100 })
      .. wait_open_js("two"))
    local r = page:js([[
      await harness.waitFor(() => harness.client("one").state === "closed", 5000, "one closed");
      await harness.sleep(1000);
      return { one: harness.rec("one").states.at(-1), oneConnects: harness.rec("one").connects.length,
               two: harness.client("two").state, twoConnects: harness.rec("two").connects.length };]])
    assert.same({ 4002, false }, { r.one.code, r.one.willReconnect })
    assert.equals(1, r.oneConnects)
    assert.equals("open", r.two)
    assert.equals(1, r.twoConnects)
  end)

  it("stops reconnecting after 1009: the application sent a frame over max_message_bytes", function()
    page:js(connect_js(srv, "big", "/ws", { token = "bob", device = client.unique("big-"), minDelayMs = 20, maxDelayMs = 100 })
      .. wait_open_js("big"))
    local r = page:js([[
      harness.client("big").send({ type: "hello", pad: "x".repeat(70000) });
      await harness.waitFor(() => harness.client("big").state === "closed", 5000, "closed");
      await harness.sleep(500);
      return { last: harness.rec("big").states.at(-1), connects: harness.rec("big").connects.length };]])
    assert.same({ "closed", 1009, false }, { r.last.state, r.last.code, r.last.willReconnect })
    assert.equals(1, r.connects)
  end)

  it("hands frames of the application's own type to on_message plugins and their answers to frame listeners", function()
    page:js(connect_js(srv, "e", "/ws/events", { token = "bob", device = client.unique("ev-"), minDelayMs = 20, maxDelayMs = 100 })
      .. wait_open_js("e"))
    local r = page:js([[
      const c = harness.client("e");
      c.send({ type: "echo", n: 1 });
      await harness.waitFor(() => harness.rec("e").frames.length === 1, 5000, "echo");
      c.send({ type: "deny", what: "that" });
      await harness.waitFor(() => harness.rec("e").errors.length === 1, 5000, "denial");
      return { frame: harness.rec("e").frames[0], error: harness.rec("e").errors[0] };]])
    assert.same({ "echo", 1 }, { r.frame.type, r.frame.got.n })
    assert.same({ code = "not_allowed_here", message = "no that" }, r.error)
  end)

  it("reconnects after 1011: a plugin failed on the connection's frame (a server problem, not the client's)", function()
    page:js(connect_js(srv, "e", "/ws/events", { token = "bob", device = client.unique("ev-"), minDelayMs = 20, maxDelayMs = 100 })
      .. wait_open_js("e"))
    local r = page:js([[
      harness.client("e").send({ type: "boom" });
      await harness.waitFor(() => harness.rec("e").connects.length === 2 && harness.client("e").state === "open", 5000, "back");
      return harness.rec("e").states.filter((s) => s.state === "closed");]])
    assert.same({ 1011, true }, { r[1].code, r[1].willReconnect })
  end)

  it("refuses bad arguments with a TypeError, and send() before open with false", function()
    local r = page:js([[
      const C = harness.MoonpushClient;
      const out = [];
      const t = (f) => { try { f(); out.push("no error"); } catch (e) { out.push(e.name); } };
      t(() => new C("http://127.0.0.1/ws", {}));
      t(() => new C("ws://127.0.0.1/ws", { getToken: "not a function" }));
      t(() => new C("ws://127.0.0.1/ws", { token: 5 }));
      t(() => new C("ws://127.0.0.1/ws", { WebSocket: 5 }));
      const c = new C("ws://127.0.0.1/ws", { token: "bob" });
      t(() => c.on("mesage", () => {}));
      t(() => c.on("message", "not a function"));
      t(() => c.subscribe(""));
      return { out, send: c.send({ type: "x" }), state: c.state };]])
    assert.same({ "TypeError", "TypeError", "TypeError", "TypeError", "TypeError", "TypeError", "TypeError" }, r.out)
    assert.is_false(r.send)
    assert.equals("idle", r.state)
  end)

  it("gives up after maxAttempts attempts that never got a welcome", function()
    local url = "ws://127.0.0.1:" .. server.free_port() .. "/ws"   -- nothing listens there
    local r = page:js(string.format([[
      harness.create("n", %s, { token: "bob", maxAttempts: 3, minDelayMs: 20, maxDelayMs: 50 });
      harness.client("n").connect();
      await harness.waitFor(() => harness.rec("n").states.some((s) => s.gaveUp), 5000, "gave up");
      await harness.sleep(300);
      return { connects: harness.rec("n").connects.length, last: harness.rec("n").states.at(-1) };]], J(url)))
    assert.equals(3, r.connects)
    assert.same({ "closed", false, true }, { r.last.state, r.last.willReconnect, r.last.gaveUp })
  end)

  it("calls getToken() again for every connection: an unknown token (401, seen as 1006) is retried with a fresh one", function()
    local r = page:js(connect_js(srv, "g", "/ws", { tokens = { "no-such-token", "bob" }, device = client.unique("g-"),
                                                    minDelayMs = 20, maxDelayMs = 100 })
      .. wait_open_js("g") .. [[
      return { connects: harness.rec("g").connects, calls: harness.rec("g").tokenCalls,
               closes: harness.rec("g").states.filter((s) => s.state === "closed") };]])
    assert.equals(2, r.calls)
    assert.matches("token=no%-such%-token", r.connects[1])
    assert.matches("token=bob", r.connects[2])
    assert.same({ 1006, true }, { r.closes[1].code, r.closes[1].willReconnect })
  end)
  -- Tokens that expire: the server says when in welcome.expires_in_ms; the
  -- client sends {"type":"refresh"} with getToken()'s next answer at 80% of
  -- it, reschedules on `refreshed`, and stays open past the first expiry; a
  -- refused refresh is reported as error {code, refresh: true}, the server
  -- closes with 4005 `token expired` at the old deadline, and the client
  -- reconnects asking getToken() once more.
  it("refreshes before expiry with a fresh getToken() and stays open", function()
    local user = client.unique("r-")
    local tokens = { jwt({ sub = user, exp = unix_now() + 3, channels = { "news" } }),
                     jwt({ sub = user, exp = unix_now() + 600, channels = { "news" } }) }
    local r = page:js(connect_js(srv, "f", "/ws/jwt", { tokens = tokens, channels = { "news" } }) .. wait_open_js("f") .. [[
      const w = harness.client("f");
      await harness.waitFor(() => harness.received("f", "refreshed").length === 1, 8000, "refreshed");
      await harness.sleep(3500);   // past the first token's exp
      return { sent: harness.sent("f", "refresh"), refreshed: harness.received("f", "refreshed"),
               state: w.state, calls: harness.rec("f").tokenCalls, connects: harness.rec("f").connects.length,
               closes: harness.rec("f").states.filter((s) => s.state === "closed") };]], 20)
    assert.same({ { type = "refresh", token = tokens[2] } }, r.sent)
    assert.is_true(r.refreshed[1].expires_in_ms > 590000, tostring(r.refreshed[1].expires_in_ms))
    assert.same({ "open", 2, 1, 0 }, { r.state, r.calls, r.connects, #r.closes })
    -- and it still receives
    client.publish_ok(srv, { user = user, data = { still = "here" } })
    local got = page:js(string.format([[
      await harness.waitFor(() => harness.seqs("f", %s).length >= 1, 5000, "the message");
      return harness.rec("f").messages.at(-1).data;]], J("user:" .. user)))
    assert.same({ still = "here" }, got)
  end)

  it("after a refused refresh and 4005, reconnects with a fresh getToken()", function()
    local user = client.unique("x-")
    local tokens = { jwt({ sub = user, exp = unix_now() + 3 }),
                     jwt({ sub = "someone-else", exp = unix_now() + 600 }),   -- refused: another user
                     jwt({ sub = user, exp = unix_now() + 600 }) }
    local r = page:js(connect_js(srv, "x", "/ws/jwt", { tokens = tokens, minDelayMs = 20, maxDelayMs = 100 })
      .. wait_open_js("x") .. [[
      await harness.waitFor(() => harness.rec("x").connects.length === 2 && harness.client("x").state === "open",
                            10000, "reconnected");
      const rec = harness.rec("x");
      return { errors: rec.errors, calls: rec.tokenCalls, connects: rec.connects,
               closes: rec.states.filter((s) => s.state === "closed") };]], 20)
    assert.equals(3, r.calls)
    assert.same({ code = "forbidden", refresh = true }, { code = r.errors[1].code, refresh = r.errors[1].refresh })
    assert.same({ 4005, true }, { r.closes[1].code, r.closes[1].willReconnect })
    assert.matches("token=" .. tokens[3]:gsub("%-", "%%-"), r.connects[2])
  end)
end)

describe("JS client across a server restart", function()
  local br, srv, page

  lazy_setup(function()
    br = start_browser()
  end)

  lazy_teardown(function()
    if page then page:close() end
    if br then br:stop() end
    if srv then srv:stop() end
  end)

  it("honours the reconnect frame's after_ms, then resumes with an epoch reset and gets the new epoch's messages", function()
    srv = server.start(config())
    local port = srv.port
    local ch = "restart"
    page = br:open("/harness.html")
    page:js(connect_js(srv, "r", "/ws", { token = "bob", channels = { ch }, minDelayMs = 50, maxDelayMs = 300 })
      .. wait_open_js("r"))
    publish_n(srv, ch, 1, 3)
    page:js([[await harness.waitFor(() => harness.seqs("r", "restart").length === 3, 5000, "3 messages");]])
    local old_epoch = history_of(srv, ch).epoch
    session.stop(srv)                       -- drain: reconnect frame, close 1001
    srv = server.start(config(), { port = port })
    publish_n(srv, ch, 1, 2)
    local new_epoch = history_of(srv, ch).epoch
    assert.are_not.equal(old_epoch, new_epoch)
    local r = page:js([[
      await harness.waitFor(() => harness.seqs("r", "restart").length === 5, 15000, "5 messages");
      const rec = harness.rec("r");
      const i = rec.log.findIndex((e) => e.ev === "in" && e.frame.type === "reconnect");
      return { seqs: harness.seqs("r", "restart"), resets: rec.resets, pos: harness.client("r").positions().restart,
               reconnect: rec.log[i], next: rec.log.slice(i).find((e) => e.ev === "connect"),
               close: rec.states.find((s) => s.state === "closed") };]], 25)
    assert.same({ 1, 2, 3, 1, 2 }, r.seqs)
    assert.equals(1, #r.resets)
    assert.equals("epoch", r.resets[1].reason)
    assert.same({ epoch = new_epoch, seq = 2 }, r.pos)
    local after = r.reconnect.frame.after_ms
    assert.is_true(after >= 500 and after <= 5500, "after_ms " .. tostring(after))
    assert.same({ 1001, true, after }, { r.close.code, r.close.willReconnect, r.close.delayMs })
    -- not before the server said (timer granularity: a few ms)
    assert.is_true(r.next.t - r.reconnect.t >= after - 5,
      string.format("reconnected %.0f ms after the frame asking for %d", r.next.t - r.reconnect.t, after))
  end)
end)

describe("the demo page (examples/web)", function()
  local br, srv, plain, page

  -- The page's origin is the static server's: as examples/moonpush.lua does
  -- for port 8000, the server lets it call /publish (cors).
  local function cors_config(origin)
    local cfg = config()
    for _, r in ipairs(cfg.routes) do
      if r.path == "/publish" then r.cors = { origins = { origin } } end
    end
    return cfg
  end

  lazy_setup(function()
    br = start_browser()
    srv = server.start(cors_config(br.origin))
  end)

  lazy_teardown(function()
    if page then page:close() end
    if br then br:stop() end
    if srv then session.stop(srv) end
    if plain then session.stop(plain) end
  end)

  -- Opens the demo on `s`, publishes `text` from the form, waits until the
  -- device shows it; returns the publish note.
  local function publish_from_page(s, text)
    if page then page:close() end
    page = br:open("/examples/web/index.html?server=" .. s.url(""):gsub("/$", ""), "window.demo !== undefined")
    page:wait_js([[document.querySelector("#status").textContent.startsWith("open")]], 10)
    page:js(string.format([[
      document.querySelector("#text").value = %s;
      document.querySelector("#publish-form").requestSubmit();]], J(text)))
    page:wait_js(string.format([[[...document.querySelectorAll("#messages li")].some((li) => li.textContent.includes(%s))]],
      J(text)), 10)
    page:wait_js([[!document.querySelector("#publish-note").textContent.startsWith("sending")]], 10)
    local h = history_of(s, "news")
    assert.equals(text, h.messages[#h.messages].data.text)
    return page:js([[return document.querySelector("#publish-note").textContent;]])
  end

  it("connects, publishes from its form with a JSON request (cors), reads the answer and shows the message", function()
    local text = client.unique("hello from the page ")
    local note = publish_from_page(srv, text)
    local seq = history_of(srv, "news").last_seq
    assert.matches('^published: {.*"seq":' .. seq, note)
    -- the curl line shown for the same message names the server and the publish route
    local curl = page:js([[return document.querySelector("#curl").textContent;]])
    assert.matches("curl", curl)
    assert.matches(srv.url("/publish"), curl, 1, true)
  end)

  it("falls back to a request without CORS when the server does not list its origin", function()
    plain = server.start(config())
    local note = publish_from_page(plain, client.unique("no cors "))
    assert.matches("^sent without CORS", note)
  end)
end)
