-- Integration: the backend read endpoints (docs/protocol.md "History",
-- "Presence") and the publish options that decide what history keeps
-- (`store = false`, `ttl`).
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local routes = require "helpers.routes"
local util = require "helpers.util"

local json = client.json

-- the publishers of the default config: the backend and the newsroom
local function backend_plugins()
  return { routes.publisher_auth(routes.publishers()) }
end

local function add_routes(cfg)
  table.insert(cfg.routes, { path = "/history", type = "history", plugins = backend_plugins() })
  table.insert(cfg.routes, { path = "/presence", type = "presence", plugins = backend_plugins() })
end

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- GET with a bearer token (token false = none). Returns status, json, raw.
local function get(srv, path, token)
  local headers = {}
  if token == nil then token = server.PUBLISHER end
  if token then headers.authorization = "Bearer " .. token end
  local st, body, _, raw = client.http(srv, path, { headers = headers })
  return st, body, raw
end

local function history(srv, ch, params, token)
  local path = "/history?channel=" .. urlencode(ch)
  for k, v in pairs(params or {}) do path = path .. "&" .. k .. "=" .. urlencode(v) end
  return get(srv, path, token)
end

local function seqs_of(body)
  local t = {}
  for i, m in ipairs(body.messages) do t[i] = m.seq end
  return t
end

local range = util.range

describe("moonpush history endpoint", function()
  local srv
  session.shared_server(function()
    srv = server.start({ history = { max_messages = 1000 } }, { config_fn = add_routes })
    return srv
  end)

  it("answers the retained messages as stored envelopes, oldest first", function()
    local ch = client.unique("h-")
    local answers = {}
    for i = 1, 3 do answers[i] = client.publish_ok(srv, { channel = ch, data = { n = i } }) end
    local st, body, raw = history(srv, ch)
    assert.equals(200, st, raw)
    assert.equals(ch, body.channel)
    assert.is_string(body.epoch)
    assert.is_true(#body.epoch > 0)
    assert.equals(1, body.first_seq)
    assert.equals(3, body.last_seq)
    assert.is_false(body.more)
    assert.equals(3, #body.messages)
    for i, m in ipairs(body.messages) do
      assert.same({ type = "message", channel = ch, seq = i, id = answers[i].id, data = { n = i } }, m)
    end
    -- the epoch is the one devices see
    local w = client.ws(srv, { token = "bob", device = client.unique("d-"), channels = { ch } })
    assert.equals(body.epoch, w.welcome.epochs[ch])
    client.close(w)
  end)

  it("pages with since, limit and more", function()
    local ch = client.unique("page-")
    local batch = {}
    for i = 1, 25 do batch[i] = { channel = ch, data = i } end
    client.publish_ok(srv, batch)
    local st, p1, raw = history(srv, ch, { since = 0, limit = 10 })
    assert.equals(200, st, raw)
    assert.same(range(1, 10), seqs_of(p1))
    assert.is_true(p1.more)
    assert.equals(25, p1.last_seq)
    local _, p2 = history(srv, ch, { since = 10, limit = 10 })
    assert.same(range(11, 20), seqs_of(p2))
    assert.is_true(p2.more)
    local _, p3 = history(srv, ch, { since = 20, limit = 10 })
    assert.same(range(21, 25), seqs_of(p3))
    assert.is_false(p3.more)
    -- exactly the end: nothing more
    local _, p4 = history(srv, ch, { since = 15, limit = 10 })
    assert.same(range(16, 25), seqs_of(p4))
    assert.is_false(p4.more)
    local _, p5 = history(srv, ch, { since = 25 })
    assert.same({}, seqs_of(p5))
    assert.is_false(p5.more)
    assert.equals(25, p5.last_seq)
    -- limit at its bounds
    local s1, l1 = history(srv, ch, { limit = 1 })
    assert.equals(200, s1)
    assert.same({ 1 }, seqs_of(l1))
    assert.is_true(l1.more)
    local s2, l2 = history(srv, ch, { limit = 1000 })
    assert.equals(200, s2)
    assert.equals(25, #l2.messages)
  end)

  it("limits an answer to 100 messages by default", function()
    local ch = client.unique("def-")
    local batch = {}
    for i = 1, 150 do batch[i] = { channel = ch, data = i } end
    client.publish_ok(srv, batch)
    local st, body = history(srv, ch)
    assert.equals(200, st)
    assert.same(range(1, 100), seqs_of(body))
    assert.is_true(body.more)
  end)

  it("answers epoch \"\" and last_seq 0 for a channel never published", function()
    local st, body, raw = history(srv, client.unique("never-"))
    assert.equals(200, st, raw)
    assert.equals("", body.epoch)
    assert.equals(0, body.last_seq)
    assert.same({}, body.messages)
    assert.is_false(body.more)
  end)

  it("lets a publisher read the channels its patterns include", function()
    client.publish_ok(srv, { channel = "orders:7", data = 1 })
    local st, body, raw = history(srv, "orders:7", nil, server.NEWS_PUBLISHER)
    assert.equals(200, st, raw)
    assert.equals(1, #body.messages)
  end)

  it("answers 403 forbidden for a channel the token may not read", function()
    client.publish_ok(srv, { channel = "sports", data = "secret" })
    local st, body, raw = history(srv, "sports", nil, server.NEWS_PUBLISHER)
    assert.equals(403, st, raw)
    assert.equals("forbidden", body and body.error)
    assert.is_string(body.message)
  end)

  it("answers 401 unauthorized without a token or with a device token", function()
    local st, body = history(srv, "news", nil, false)
    assert.equals(401, st)
    assert.equals("unauthorized", body and body.error)
    st, body = history(srv, "news", nil, "bob")
    assert.equals(401, st)
    assert.equals("unauthorized", body and body.error)
  end)

  for _, c in ipairs({
    { "since=abc", { since = "abc" } },
    { "since=-1", { since = "-1" } },
    { "since=1.5", { since = "1.5" } },
    { "since empty", { since = "" } },
    { "limit=0", { limit = "0" } },
    { "limit=1001", { limit = "1001" } },
    { "limit=abc", { limit = "abc" } },
    { "limit=-5", { limit = "-5" } },
  }) do
    it("answers 400 bad_request for " .. c[1], function()
      local st, body, raw = history(srv, "news", c[2])
      assert.equals(400, st, raw)
      assert.equals("bad_request", body and body.error)
    end)
  end

  for _, c in ipairs({
    { "a space", "has space" },
    { "an empty name", "" },
    { "a 129-byte name", ("x"):rep(129) },
    { "a slash", "a/b" },
  }) do
    it("answers 400 bad_channel for a channel with " .. c[1], function()
      local st, body, raw = history(srv, c[2])
      assert.equals(400, st, raw)
      assert.equals("bad_channel", body and body.error)
    end)
  end

  it("answers 400 bad_channel without a channel", function()
    local st, body, raw = get(srv, "/history")
    assert.equals(400, st, raw)
    assert.equals("bad_channel", body and body.error)
  end)

  it("still serves after the bad requests", function()
    client.assert_serves(srv)
  end)
end)

describe("moonpush publish options", function()
  local srv
  local ws = session.shared_server(function()
    srv = server.start({ history = { max_messages = 1000 } }, { config_fn = add_routes })
    return srv
  end)

  local function resume(ch, since, epoch)
    return ws({ query = client.query_string({ token = "bob", device = client.unique("r-"), channels = ch,
      ["since." .. ch] = since, ["epoch." .. ch] = epoch }) })
  end

  it("store=false: delivered live, takes a seq, absent from /history and from a later resume", function()
    local ch = client.unique("nostore-")
    local w = ws({ token = "bob", device = client.unique("d-"), channels = { ch } })
    local a1 = client.publish_ok(srv, { channel = ch, data = "kept 1" })
    local a2 = client.publish_ok(srv, { channel = ch, data = "fleeting", store = false })
    local a3 = client.publish_ok(srv, { channel = ch, data = "kept 3" })
    assert.same({ 1, 2, 3 }, { a1.seq, a2.seq, a3.seq })
    assert.equals(1, a2.recipients)
    for i, want in ipairs({ "kept 1", "fleeting", "kept 3" }) do
      local m = client.recv_message(w)
      assert.equals(i, m.seq)
      assert.equals(want, m.data)
    end
    local st, body, raw = history(srv, ch)
    assert.equals(200, st, raw)
    assert.same({ 1, 3 }, seqs_of(body))
    assert.equals(3, body.last_seq)
    -- a resume from 0 gets 1 and 3, no reset (nothing retained was lost), then live 4
    local r = resume(ch, 0, body.epoch)
    local m1 = client.recv_json(r)
    assert.equals("message", m1.type, json.encode(m1))
    assert.equals(1, m1.seq)
    local m3 = client.recv_message(r)
    assert.equals(3, m3.seq)
    client.publish_ok(srv, { channel = ch, data = "live" })
    assert.equals(4, client.recv_message(r).seq)
  end)

  it("store=true is the default and explicit store=true stores", function()
    local ch = client.unique("store-")
    client.publish_ok(srv, { channel = ch, data = 1, store = true })
    local _, body = history(srv, ch)
    assert.same({ 1 }, seqs_of(body))
  end)

  it("ttl: the message is in history until it expires, then gone from history and resume", function()
    local ch = client.unique("ttl-")
    client.publish_ok(srv, { channel = ch, data = "stays" })
    client.publish_ok(srv, { channel = ch, data = "short", ttl = 1 })
    client.publish_ok(srv, { channel = ch, data = "stays too" })
    local _, before = history(srv, ch)
    assert.same({ 1, 2, 3 }, seqs_of(before))
    -- expiry is checked about once a second: allow a bounded wait past 1 s
    local deadline = client.now() + 3
    server.sleep(1.2)
    local body
    repeat
      local _
      _, body = history(srv, ch)
      if #body.messages == 2 then break end
      server.sleep(0.1)
    until client.now() > deadline
    assert.same({ 1, 3 }, seqs_of(body))
    assert.equals(3, body.last_seq)
    assert.equals(before.epoch, body.epoch)
    local r = resume(ch, 0, body.epoch)
    assert.equals(1, client.recv_message(r).seq)
    assert.equals(3, client.recv_message(r).seq)
  end)
end)

describe("moonpush presence endpoint", function()
  local srv
  session.shared_server(function()
    srv = server.start(nil, { config_fn = add_routes })
    return srv
  end)

  local function presence(user, token)
    return get(srv, "/presence?user=" .. urlencode(user), token)
  end

  it("answers online false, 0 connections for a user with no connection", function()
    local st, body, raw = presence("alice")
    assert.equals(200, st, raw)
    assert.equals("alice", body.user)
    assert.is_false(body.online)
    assert.equals(0, body.connections)
    assert.same({}, body.devices)
  end)

  it("lists the connections of an online user, and goes offline when they close", function()
    local phone = client.ws(srv, { token = "alice-phone" })
    local laptop = client.ws(srv, { token = "alice-laptop" })
    local st, body, raw = presence("alice")
    assert.equals(200, st, raw)
    assert.is_true(body.online)
    assert.equals(2, body.connections)
    assert.equals(2, #body.devices)
    local by = {}
    for _, d in ipairs(body.devices) do by[d.device] = d end
    assert.same({ device = "phone", kind = "mobile", conn = tostring(phone.welcome.conn) },
      { device = by.phone and by.phone.device, kind = by.phone and by.phone.kind, conn = by.phone and tostring(by.phone.conn) })
    assert.same({ device = "laptop", kind = "web", conn = tostring(laptop.welcome.conn) },
      { device = by.laptop and by.laptop.device, kind = by.laptop and by.laptop.kind, conn = by.laptop and tostring(by.laptop.conn) })
    -- another user is not mixed in
    local _, bob = presence("bob")
    assert.is_false(bob.online)

    client.close(phone)
    local deadline = client.now() + 3
    repeat
      _, body = presence("alice")
      if body.connections == 1 then break end
      server.sleep(0.05)
    until client.now() > deadline
    assert.equals(1, body.connections)
    assert.is_true(body.online)
    assert.equals("laptop", body.devices[1].device)
    client.close(laptop)
    deadline = client.now() + 3
    repeat
      _, body = presence("alice")
      if body.connections == 0 then break end
      server.sleep(0.05)
    until client.now() > deadline
    assert.is_false(body.online)
    assert.equals(0, body.connections)
    assert.same({}, body.devices)
  end)

  it("answers 403 forbidden for a user whose channel the token may not read", function()
    local st, body, raw = presence("alice", server.NEWS_PUBLISHER)
    assert.equals(403, st, raw)
    assert.equals("forbidden", body and body.error)
  end)

  it("answers 401 unauthorized without a token or with a device token", function()
    local st, body = presence("alice", false)
    assert.equals(401, st)
    assert.equals("unauthorized", body and body.error)
    st, body = presence("alice", "alice-phone")
    assert.equals(401, st)
  end)

  it("answers 400 bad_user without a user", function()
    local st, body, raw = get(srv, "/presence")
    assert.equals(400, st, raw)
    assert.equals("bad_user", body and body.error)
  end)

  for _, c in ipairs({
    { "an empty user", "" },
    { "a space", "has space" },
    { "a 129-byte name", ("u"):rep(129) },
    { "a slash", "a/b" },
  }) do
    it("answers 400 bad_user for a user with " .. c[1], function()
      local st, body, raw = presence(c[2])
      assert.equals(400, st, raw)
      assert.equals("bad_user", body and body.error)
    end)
  end

  it("still serves after the bad requests", function()
    client.assert_serves(srv)
  end)
end)
