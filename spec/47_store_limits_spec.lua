-- Integration: the store's limits never cost anyone a stored message
-- (docs/operations.md "history", docs/protocol.md "Publish"). A publisher
-- that names many new channels cannot evict another channel's history or
-- epoch: past history.max_channels a publish to a new channel answers 503
-- too_many_channels, and past history.max_bytes an append answers 503
-- store_full. A publish is never answered 200 for a message the store
-- refused.
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"

describe("moonpush store limits", function()
  local srv
  session.shared_server(function()
    srv = server.start({ history = { max_channels = 4, max_messages = 10 } }, { config_fn = function(cfg)
      table.insert(cfg.routes, { path = "/metrics", type = "metrics" })
    end })
    return srv
  end)

  it("keeps news's history and epoch while a publisher floods new channel names", function()
    local watcher = client.ws(srv, { token = "bob", device = "watcher", channels = { "news" } })
    local first = client.publish_ok(srv, { channel = "news", data = "kept" })
    client.recv_message(watcher)
    local before = client.ws(srv, { token = "bob", device = "before", channels = { "news" } })
    local epoch = before.welcome.epochs.news
    assert.is_true(#epoch > 0)
    client.publish_ok(srv, { channel = "filler-1", data = 1 })
    client.publish_ok(srv, { channel = "filler-2", data = 2 })
    client.publish_ok(srv, { channel = "filler-3", data = 3 })
    local refused = 0
    for i = 1, 50 do
      local st, body = client.publish(srv, { channel = client.unique("flood-"), data = i })
      assert.equals(503, st)
      assert.equals("too_many_channels", body.error)
      assert.is_string(body.message)
      refused = refused + 1
    end
    assert.equals(50, refused)
    -- news still has its message, its seq goes on, its epoch is the same
    local ws = client.ws(srv, { query = "token=bob&device=after&channels=news&since.news=0" })
    assert.equals(epoch, ws.welcome.epochs.news)
    local m = client.recv_message(ws)
    assert.equals(first.seq, m.seq)
    assert.same("kept", m.data)
    local again = client.publish_ok(srv, { channel = "news", data = "more" })
    assert.equals(first.seq + 1, again.seq)
    assert.equals(again.seq, client.recv_message(watcher).seq)
    client.close_all({ watcher, before, ws })
    assert.equals(200, (client.health(srv)))
  end)

  it("answers a batch with a refused item 503, saying item by item what was published", function()
    local st, body = client.publish(srv, {
      { channel = "news", data = "in" },
      { channel = client.unique("new-"), data = "out" },
    })
    assert.equals(503, st)
    assert.is_table(body)
    assert.is_number(body[1].seq)
    assert.equals("news", body[1].channel)
    assert.equals("too_many_channels", body[2].error)
    assert.is_nil(body[2].seq)
    local _, _, _, metrics = client.http(srv, "/metrics")
    local refused = tonumber(metrics:match("\nmoonpush_publish_refused_total (%d+)"))
    assert.equals(51, refused)
  end)
end)

describe("moonpush store byte limit", function()
  local srv
  session.shared_server(function()
    -- room for a handful of ~2 KB messages
    srv = server.start({ history = { max_bytes = 10000, max_messages = 100 } })
    return srv
  end)

  it("refuses an append past history.max_bytes with 503 store_full and keeps every stored message", function()
    local pad = ("x"):rep(2000)
    local ch = client.unique("bytes-")
    local watcher = client.ws(srv, { token = "bob", device = "watcher", channels = { ch } })
    local stored = {}
    local st, body
    for i = 1, 20 do
      st, body = client.publish(srv, { channel = ch, data = { i = i, pad = pad } })
      if st ~= 200 then break end
      stored[#stored + 1] = body.seq
    end
    assert.equals(503, st)
    assert.equals("store_full", body.error)
    assert.is_true(#stored >= 2 and #stored < 20)
    -- the refused message reached nobody
    for _, seq in ipairs(stored) do assert.equals(seq, client.recv_message(watcher).seq) end
    client.expect_silence(watcher, 0.3)
    -- and every accepted one is still there for a late reader
    local late = client.ws(srv, { query = "token=bob&device=late&channels=" .. ch .. "&since." .. ch .. "=0" })
    for _, seq in ipairs(stored) do assert.equals(seq, client.recv_message(late).seq) end
    -- a message published without storing it still goes out
    local a = client.publish_ok(srv, { channel = ch, data = "live only", store = false })
    assert.equals(a.seq, client.recv_message(watcher).seq)
    client.close_all({ watcher, late })
  end)
end)
