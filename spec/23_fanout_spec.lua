-- Integration: delivery and fanout (who gets what, in which order, how often).
local cqueues = require "cqueues"
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"

describe("moonpush fanout", function()
  local srv
  local ws = session.shared_server(function()
    srv = server.start({ limits = { max_outbound_bytes = 4 * 1048576 } })
    return srv
  end)

  it("delivers a user publish to all 3 devices of the user", function()
    local phone = ws({ token = "alice-phone" })
    local laptop = ws({ token = "alice-laptop" })
    local tablet = ws({ token = "alice-tablet" })
    local other = ws({ token = "bob", device = client.unique("o-") })
    local a = client.publish_ok(srv, { user = "alice", data = { n = 1 } })
    assert.equals(3, a.recipients)
    for name, w in pairs({ phone = phone, laptop = laptop, tablet = tablet }) do
      local m = client.recv_message(w)
      assert.equals("user:alice", m.channel, name)
      assert.equals(a.seq, m.seq, name)
      assert.equals(a.id, m.id, name)
      assert.same({ n = 1 }, m.data, name)
    end
    -- bob is not alice: his first frame is his own later message
    client.publish_ok(srv, { user = "bob", data = "for bob" })
    local m = client.recv_message(other)
    assert.equals("user:bob", m.channel)
    assert.equals("for bob", m.data)
  end)

  it("delivers a channel publish to subscribers and not to others", function()
    local ch = client.unique("fan-")
    local sub1 = ws({ token = "bob", device = client.unique("s-"), channels = { ch } })
    local sub2 = ws({ token = "alice-phone" })
    assert.same({ type = "subscribed", channel = "orders:" .. ch },
      client.pick(client.request(sub2, { type = "subscribe", channel = "orders:" .. ch })))
    local non = ws({ token = "bob", device = client.unique("n-"), channels = { "other-" .. ch } })

    local a = client.publish_ok(srv, { channel = ch, data = "first" })
    assert.equals(1, a.recipients)
    local b = client.publish_ok(srv, { channel = "orders:" .. ch, data = "orders" })
    assert.equals(1, b.recipients)
    local c = client.publish_ok(srv, { channel = "other-" .. ch, data = "second" })
    assert.equals(1, c.recipients)

    assert.equals("first", client.recv_message(sub1).data)
    assert.equals("orders", client.recv_message(sub2).data)
    -- the non-subscriber's first frame is the message of its own channel,
    -- published after the others: it never got them
    local m = client.recv_message(non)
    assert.equals("other-" .. ch, m.channel)
    assert.equals("second", m.data)
  end)

  it("preserves order per channel", function()
    local ch = client.unique("ord-")
    local w = ws({ token = "bob", device = client.unique("o-"), channels = { ch } })
    for i = 1, 50 do
      client.publish_ok(srv, { channel = ch, data = i })
    end
    for i = 1, 50 do
      local m = client.recv_message(w)
      assert.equals(i, m.seq)
      assert.equals(i, m.data)
    end
  end)

  it("preserves order per channel when channels interleave", function()
    local a, b = client.unique("ia-"), client.unique("ib-")
    local w = ws({ token = "bob", device = client.unique("i-"), channels = { a, b } })
    local items = {}
    for i = 1, 40 do
      items[#items + 1] = { channel = (i % 2 == 0) and a or b, data = i }
    end
    client.publish_ok(srv, items)
    local last = { [a] = 0, [b] = 0 }
    for _ = 1, 40 do
      local m = client.recv_message(w)
      assert.equals(last[m.channel] + 1, m.seq, "out of order on " .. m.channel)
      last[m.channel] = m.seq
    end
    assert.equals(20, last[a])
    assert.equals(20, last[b])
  end)

  it("delivers 1,000 messages to 100 clients exactly once, in order", function()
    local ch = client.unique("big-")
    local N, M, BATCH = 100, 1000, 100
    local clients = {}
    for i = 1, N do
      clients[i] = ws({ token = "bob", device = "big-" .. i, channels = { ch } })
    end
    local _, health = client.health(srv)
    assert.is_true(health.connections >= N)

    -- read all clients concurrently while publishing
    local cq = cqueues.new()
    local results = {}
    for i = 1, N do
      cq:wrap(function()
        local w = clients[i]
        local seqs, bad = {}, nil
        local deadline = client.now() + 30
        while #seqs < M and not bad do
          local data, op = w:receive(math.max(0.01, deadline - client.now()))
          if not data then
            bad = "stopped after " .. #seqs .. " messages: " .. tostring(op) ..
              " (close " .. tostring(w.got_close_code) .. ")"
          else
            local v = client.json.decode(data)
            if not v or v.type ~= "message" or v.channel ~= ch then
              bad = "unexpected frame " .. data
            else
              seqs[#seqs + 1] = v.seq
            end
          end
        end
        results[i] = { seqs = seqs, bad = bad }
      end)
    end
    local publish_err
    cq:wrap(function()
      local ok, err = pcall(function()
        for b = 0, M / BATCH - 1 do
          local items = {}
          for j = 1, BATCH do
            items[j] = { channel = ch, data = { i = b * BATCH + j, pad = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" } }
          end
          local answers = client.publish_ok(srv, items)
          assert(#answers == BATCH, "batch answered " .. #answers .. " items")
          assert(answers[1].seq == b * BATCH + 1, "batch seq starts at " .. tostring(answers[1].seq))
          assert(answers[1].recipients == N, "recipients " .. tostring(answers[1].recipients))
        end
      end)
      if not ok then publish_err = err end
    end)
    local deadline = client.now() + 40
    while not cq:empty() and client.now() < deadline do
      local ok, err = cq:step(0.5)
      if not ok then error(err) end
    end
    assert.is_nil(publish_err)
    assert.is_true(cq:empty(), "readers did not finish in time")
    for i = 1, N do
      local r = results[i]
      assert.is_table(r, "client " .. i .. " has no result")
      assert.is_nil(r.bad, "client " .. i .. ": " .. tostring(r.bad))
      assert.equals(M, #r.seqs, "client " .. i)
      for k = 1, M do
        if r.seqs[k] ~= k then
          error(string.format("client %d: message %d has seq %s", i, k, tostring(r.seqs[k])))
        end
      end
    end
    -- and nothing extra is queued: the next frame for client 1 is a marker
    client.publish_ok(srv, { user = "bob", data = "marker" })
    local m = client.recv_message(clients[1])
    assert.equals("marker", m.data)
  end)
end)
