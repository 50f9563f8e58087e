-- Integration: resume (docs/protocol.md "Channels, seq and epoch", "Resume").
-- A client that remembers (epoch, seq) of a channel gets, on reconnect with
-- since/epoch (query or subscribe frame), every retained message after its
-- position exactly once and in order, then live ones; a position that cannot
-- be honoured answers a reset frame (epoch / gap / ahead) first.
local cqueues = require "cqueues"
local errno = require "cqueues.errno"
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local util = require "helpers.util"

local json = client.json

-- Connect query with since.<ch>/epoch.<ch> for each entry of `resume`
-- ({ [ch] = { since = N, epoch = E } }).
local function resume_query(token, device, channels, resume)
  local q = { token = token, device = device, channels = channels }
  for ch, pos in pairs(resume or {}) do
    q["since." .. ch] = pos.since
    if pos.epoch ~= nil then q["epoch." .. ch] = pos.epoch end
  end
  return client.query_string(q)
end

-- recv_seqs(ws, ch, n): n message frames of ch (anything else is an error)
local recv_seqs, range = client.recv_seqs, util.range

local function publish_n(srv, ch, from, to)
  local batch = {}
  for i = from, to do batch[#batch + 1] = { channel = ch, data = { n = i } } end
  if #batch == 0 then return {} end
  local answers = client.publish_ok(srv, batch)
  for k, a in ipairs(answers) do
    assert(a.seq == from + k - 1, string.format("publish of %d answered seq %s", from + k - 1, tostring(a.seq)))
  end
  return answers
end

describe("moonpush resume", function()
  local srv
  local ws = session.shared_server(function()
    srv = server.start({
      limits = { max_outbound_bytes = 16 * 1048576 },
      history = {
        max_messages = 100000,
        channels = { { pattern = "small:*", max_messages = 5 } },
      },
    })
    return srv
  end)

  describe("reconnect with since.<channel> and epoch.<channel>", function()
    it("delivers 41..100 missed while away exactly once, in order, then live 101", function()
      local ch = client.unique("rs-")
      local dev = client.unique("d-")
      local w = ws({ token = "bob", device = dev, channels = { ch } })
      local epoch = w.welcome.epochs and w.welcome.epochs[ch]
      assert.is_string(epoch, "welcome carries epochs[" .. ch .. "]")
      publish_n(srv, ch, 1, 40)
      assert.same(range(1, 40), (recv_seqs(w, ch, 40)))
      client.close(w)

      publish_n(srv, ch, 41, 100)
      local w2 = ws({ query = resume_query("bob", dev, { ch }, { [ch] = { since = 40, epoch = epoch } }) })
      assert.is_string(w2.welcome.epochs[ch])
      local seqs, msgs = recv_seqs(w2, ch, 60)
      assert.same(range(41, 100), seqs)
      assert.same({ n = 41 }, msgs[1].data)
      assert.same({ n = 100 }, msgs[60].data)
      -- the next frame is the live 101: no duplicate of 41..100 in between
      local a = client.publish_ok(srv, { channel = ch, data = { n = 101 } })
      assert.equals(101, a.seq)
      local m = client.recv_message(w2)
      assert.equals(ch, m.channel)
      assert.equals(101, m.seq)
      assert.equals(a.id, m.id)
    end)

    it("resumes with a non-empty epoch taken from the welcome of a channel already published", function()
      local ch = client.unique("rse-")
      local dev = client.unique("d-")
      publish_n(srv, ch, 1, 1)
      local w = ws({ token = "bob", device = dev, channels = { ch } })
      local epoch = w.welcome.epochs[ch]
      assert.is_string(epoch)
      assert.is_true(#epoch > 0, "a published channel has a non-empty epoch in the welcome")
      publish_n(srv, ch, 2, 10)
      assert.same(range(2, 10), (recv_seqs(w, ch, 9)))
      client.close(w)
      publish_n(srv, ch, 11, 20)
      local w2 = ws({ query = resume_query("bob", dev, { ch }, { [ch] = { since = 10, epoch = epoch } }) })
      assert.equals(epoch, w2.welcome.epochs[ch], "same process, same channel: the epoch did not change")
      assert.same(range(11, 20), (recv_seqs(w2, ch, 10)))
      client.publish_ok(srv, { channel = ch, data = "live" })
      assert.equals(21, client.recv_message(w2).seq)
    end)

    it("replays nothing when since is the channel's last seq", function()
      local ch = client.unique("rsn-")
      publish_n(srv, ch, 1, 5)
      local w0 = ws({ token = "bob", device = client.unique("d-"), channels = { ch } })
      local epoch = w0.welcome.epochs[ch]
      local w = ws({ query = resume_query("bob", client.unique("d-"), { ch }, { [ch] = { since = 5, epoch = epoch } }) })
      client.publish_ok(srv, { channel = ch, data = "live" })
      local m = client.recv_message(w)
      assert.equals(6, m.seq)
    end)

    it("without since on a route without acks replays nothing", function()
      local ch = client.unique("rsx-")
      publish_n(srv, ch, 1, 5)
      local w = ws({ token = "bob", device = client.unique("d-"), channels = { ch } })
      client.publish_ok(srv, { channel = ch, data = "live" })
      assert.equals(6, client.recv_message(w).seq)
    end)
  end)

  describe("subscribe frame with since and epoch", function()
    it("answers subscribed (epoch, seq) before the replay, then replays since+1.. and goes live", function()
      local ch = client.unique("sub-")
      publish_n(srv, ch, 1, 1)
      local w = ws({ token = "bob", device = client.unique("d-") })
      local ans = client.request(w, { type = "subscribe", channel = ch })
      assert.equals("subscribed", ans.type)
      assert.equals(ch, ans.channel)
      assert.equals(1, ans.seq)
      assert.is_string(ans.epoch)
      assert.is_true(#ans.epoch > 0)
      local epoch = ans.epoch
      publish_n(srv, ch, 2, 20)
      assert.same(range(2, 20), (recv_seqs(w, ch, 19)))
      client.close(w)

      publish_n(srv, ch, 21, 30)
      local w2 = ws({ token = "bob", device = client.unique("d-") })
      local ans2 = client.request(w2, { type = "subscribe", channel = ch, since = 20, epoch = epoch })
      assert.equals("subscribed", ans2.type, "first frame after subscribe: " .. json.encode(ans2))
      assert.equals(ch, ans2.channel)
      assert.equals(epoch, ans2.epoch)
      assert.equals(30, ans2.seq)
      assert.same(range(21, 30), (recv_seqs(w2, ch, 10)))
      client.publish_ok(srv, { channel = ch, data = "live" })
      assert.equals(31, client.recv_message(w2).seq)
    end)

    it("answers subscribed then reset ahead (no messages) for since beyond the last seq", function()
      local ch = client.unique("suba-")
      publish_n(srv, ch, 1, 3)
      local w = ws({ token = "bob", device = client.unique("d-") })
      local ans = client.request(w, { type = "subscribe", channel = ch })
      local w2 = ws({ token = "bob", device = client.unique("d-") })
      assert.equals("subscribed", client.request(w2, { type = "subscribe", channel = ch, since = 10, epoch = ans.epoch }).type)
      local r = client.recv_json(w2)
      assert.equals("reset", r.type, json.encode(r))
      assert.equals(ch, r.channel)
      assert.equals("ahead", r.reason)
      assert.equals(3, r.last_seq)
      assert.equals(ans.epoch, r.epoch)
      client.publish_ok(srv, { channel = ch, data = "live" })
      local m = client.recv_message(w2)
      assert.equals(4, m.seq)
    end)
  end)

  describe("race: publishing continuously while 50 clients reconnect with since", function()
    it("gives every client a gapless, duplicate-free sequence up to the last seq published", function()
      local ch = client.unique("race-")
      local N_CLIENTS = 50
      local PUBLISH_FOR = 3.0
      publish_n(srv, ch, 1, 1)   -- so the welcome carries a real epoch
      local probe = ws({ token = "bob", device = client.unique("probe-"), channels = { ch } })
      local epoch = probe.welcome.epochs[ch]
      client.close(probe)

      local cq = cqueues.new()
      local last_published, pub_done, pub_err = 1, false, nil
      local results, errors = {}, {}

      cq:wrap(function()
        local ok, err = pcall(function()
          local t_end = client.now() + PUBLISH_FOR
          while client.now() < t_end do
            local batch = {}
            for i = 1, 10 do batch[i] = { channel = ch, data = { n = last_published + i } } end
            local answers = client.publish_ok(srv, batch, { timeout = 5 })
            for i, a in ipairs(answers) do
              assert(a.seq == last_published + i, "publish answered seq " .. tostring(a.seq))
            end
            last_published = last_published + #batch
            cqueues.sleep(0.005)
          end
        end)
        if not ok then pub_err = err end
        pub_done = true
      end)

      -- One client: connect with since=1, read for a while, disconnect,
      -- reconnect with since=<last seen> (odd clients via the query, even
      -- ones via a subscribe frame), read until the publisher's last seq.
      local function run_client(k)
        local dev = client.unique("race-d-")
        local seen = {}   -- every seq received, in arrival order
        local function read_until(w, stop)
          while true do
            if pub_done and #seen > 0 and seen[#seen] >= last_published then return end
            if stop and client.now() >= stop then return end
            local data, op, eno = w:receive(0.1)
            if data == nil then
              assert(eno == errno.ETIMEDOUT, string.format("client %d: connection ended after seq %s: %s (close %s %s)",
                k, tostring(seen[#seen]), tostring(op), tostring(w.got_close_code), tostring(w.got_close_message)))
            else
              local m = json.decode(data)
              assert(m and m.type == "message" and m.channel == ch, string.format("client %d: unexpected frame %s", k, data))
              seen[#seen + 1] = m.seq
            end
          end
        end
        cqueues.sleep((k % 10) * 0.03)
        local w = client.ws(srv, { query = resume_query("bob", dev, { ch }, { [ch] = { since = 1, epoch = epoch } }) }, 5)
        read_until(w, client.now() + 0.3 + (k % 7) * 0.15)
        client.close(w)
        local since = seen[#seen] or 1
        cqueues.sleep(0.05 + (k % 5) * 0.05)   -- away while messages keep coming
        local w2
        if k % 2 == 1 then
          w2 = client.ws(srv, { query = resume_query("bob", dev, { ch }, { [ch] = { since = since, epoch = epoch } }) }, 5)
        else
          w2 = client.ws(srv, { token = "bob", device = dev }, 5)
          client.send_json(w2, { type = "subscribe", channel = ch, since = since, epoch = epoch })
          local ans = client.recv_json(w2, 5)
          assert(ans.type == "subscribed" and ans.channel == ch, "client " .. k .. ": expected subscribed, got " .. json.encode(ans))
          assert(ans.epoch == epoch, "client " .. k .. ": epoch changed to " .. tostring(ans.epoch))
        end
        local deadline = client.now() + 20
        read_until(w2, deadline)
        client.close(w2)
        return seen
      end

      for k = 1, N_CLIENTS do
        cq:wrap(function()
          local ok, seen_or_err = pcall(run_client, k)
          if ok then results[k] = seen_or_err else errors[#errors + 1] = tostring(seen_or_err) end
        end)
      end

      local deadline = client.now() + 25
      while not cq:empty() and client.now() < deadline do
        local ok, err = cq:step(0.5)
        if not ok then error(err) end
      end
      assert.is_true(cq:empty(), string.format("clients did not drain within 25 s (last published %d, %d errors)",
        last_published, #errors))
      assert.is_nil(pub_err)
      assert.same({}, errors)
      assert.is_true(last_published > 100, "publisher published only " .. last_published)
      for k = 1, N_CLIENTS do
        local seen = results[k]
        assert.is_table(seen, "client " .. k .. " has no result")
        assert.is_true(#seen > 0, "client " .. k .. " received nothing")
        for i, s in ipairs(seen) do
          if s ~= i + 1 then
            local ctx = {}
            for j = math.max(1, i - 3), math.min(#seen, i + 3) do ctx[#ctx + 1] = tostring(seen[j]) end
            error(string.format("client %d: position %d is seq %s, expected %d (around: %s)",
              k, i, tostring(s), i + 1, table.concat(ctx, ",")))
          end
        end
        assert.equals(last_published, seen[#seen], "client " .. k .. " stopped early")
      end
    end)
  end)

  describe("reset", function()
    it("answers reset gap (first_seq 16) then 16..20 when history kept only 5 of 20", function()
      local ch = client.unique("small:g-")
      local w0 = ws({ token = "bob", device = client.unique("d-"), channels = { ch } })
      publish_n(srv, ch, 1, 20)
      assert.same(range(1, 20), (recv_seqs(w0, ch, 20)))
      local w1 = ws({ token = "bob", device = client.unique("d-"), channels = { ch } })
      local epoch = w1.welcome.epochs[ch]
      assert.is_true(#epoch > 0)
      local w = ws({ query = resume_query("bob", client.unique("d-"), { ch }, { [ch] = { since = 2, epoch = epoch } }) })
      local r = client.recv_json(w)
      assert.equals("reset", r.type, json.encode(r))
      assert.equals(ch, r.channel)
      assert.equals("gap", r.reason)
      assert.equals(epoch, r.epoch, "trimming does not change the epoch")
      assert.equals(16, r.first_seq)
      assert.equals(20, r.last_seq)
      assert.same(range(16, 20), (recv_seqs(w, ch, 5)))
      client.publish_ok(srv, { channel = ch, data = "live" })
      assert.equals(21, client.recv_message(w).seq)
    end)

    it("needs no reset when since is exactly first_seq - 1", function()
      local ch = client.unique("small:e-")
      publish_n(srv, ch, 1, 20)
      local w1 = ws({ token = "bob", device = client.unique("d-"), channels = { ch } })
      local epoch = w1.welcome.epochs[ch]
      local w = ws({ query = resume_query("bob", client.unique("d-"), { ch }, { [ch] = { since = 15, epoch = epoch } }) })
      assert.same(range(16, 20), (recv_seqs(w, ch, 5)))
    end)

    it("answers reset ahead and no messages when since is beyond the last seq", function()
      local ch = client.unique("ah-")
      publish_n(srv, ch, 1, 20)
      local w1 = ws({ token = "bob", device = client.unique("d-"), channels = { ch } })
      local epoch = w1.welcome.epochs[ch]
      local w = ws({ query = resume_query("bob", client.unique("d-"), { ch }, { [ch] = { since = 25, epoch = epoch } }) })
      local r = client.recv_json(w)
      assert.equals("reset", r.type, json.encode(r))
      assert.equals(ch, r.channel)
      assert.equals("ahead", r.reason)
      assert.equals(20, r.last_seq)
      assert.equals(epoch, r.epoch)
      -- no replay: the next frame is the live 21
      client.publish_ok(srv, { channel = ch, data = "live" })
      local m = client.recv_message(w)
      assert.equals(21, m.seq)
    end)

    -- 2^64-1 is a seq (it parses), just far ahead: since + 1 wraps to 0 and
    -- once read the whole history after the reset
    for _, c in ipairs({ { "2^64-1", "18446744073709551615" }, { "2^63", "9223372036854775808" } }) do
      it("answers reset ahead and nothing else for since = " .. c[1] .. ", then live messages", function()
        local ch = client.unique("ahx-")
        publish_n(srv, ch, 1, 5)
        local w1 = ws({ token = "bob", device = client.unique("d-"), channels = { ch } })
        local epoch = w1.welcome.epochs[ch]
        local w = ws({ query = resume_query("bob", client.unique("d-"), { ch }, { [ch] = { since = c[2], epoch = epoch } }) })
        local r = client.recv_json(w)
        assert.equals("reset", r.type, json.encode(r))
        assert.equals("ahead", r.reason)
        assert.equals(5, r.last_seq)
        assert.equals(epoch, r.epoch)
        -- nothing follows the reset: the next frame is the live 6
        client.publish_ok(srv, { channel = ch, data = "live" })
        local m, raw = client.recv_json(w)
        assert.equals("message", m.type, raw)
        assert.equals(6, m.seq, "a replayed message followed the reset ahead: " .. raw)
      end)
    end

    it("answers reset ahead and nothing else to a subscribe frame with since = 2^63-1", function()
      local ch = client.unique("ahf-")
      publish_n(srv, ch, 1, 5)
      local w = ws({ token = "bob", device = client.unique("d-") })
      local ans = client.request(w, '{"type":"subscribe","channel":"' .. ch .. '","since":9223372036854775807}')
      assert.equals("subscribed", ans.type, json.encode(ans))
      local r = client.recv_json(w)
      assert.equals("reset", r.type, json.encode(r))
      assert.equals("ahead", r.reason)
      client.publish_ok(srv, { channel = ch, data = "live" })
      local m, raw = client.recv_json(w)
      assert.equals(6, m.seq, raw)
    end)

    it("answers reset epoch for an epoch the channel never had, then everything retained", function()
      local ch = client.unique("ep-")
      publish_n(srv, ch, 1, 5)
      local w = ws({ query = resume_query("bob", client.unique("d-"), { ch }, { [ch] = { since = 2, epoch = "0000deadbeef-9" } }) })
      local r = client.recv_json(w)
      assert.equals("reset", r.type, json.encode(r))
      assert.equals("epoch", r.reason)
      assert.equals(1, r.first_seq)
      assert.equals(5, r.last_seq)
      assert.same(range(1, 5), (recv_seqs(w, ch, 5)))
    end)
  end)
end)

describe("moonpush resume across a server restart", function()
  local srv1, srv2

  lazy_teardown(function()
    if srv1 then srv1:stop() end
    if srv2 then srv2:stop() end
  end)

  it("answers reset epoch, then what the new process retains, for a position of the old process", function()
    srv1 = server.start()
    local ch, gone = "restart-ch", "restart-gone"
    local w = client.ws(srv1, { token = "bob", device = "r1", channels = { ch, gone } })
    for i = 1, 40 do client.publish_ok(srv1, { channel = ch, data = i }) end
    client.publish_ok(srv1, { channel = gone, data = "old" })
    local w1 = client.ws(srv1, { token = "bob", device = "r2", channels = { ch, gone } })
    local old_epoch, old_gone_epoch = w1.welcome.epochs[ch], w1.welcome.epochs[gone]
    assert.is_true(#old_epoch > 0)
    client.close(w)
    client.close(w1)
    assert.equals(0, srv1:stop())

    srv2 = server.start()   -- a new process: the in-memory store is empty
    for i = 1, 5 do client.publish_ok(srv2, { channel = ch, data = "new" .. i }) end
    -- since=2 is within 1..5 of the new process: only the epoch says it is
    -- not the same history
    local q = client.query_string({ token = "bob", device = "r1", channels = ch .. "," .. gone,
      ["since." .. ch] = 2, ["epoch." .. ch] = old_epoch,
      ["since." .. gone] = 1, ["epoch." .. gone] = old_gone_epoch })
    local w2 = client.ws(srv2, { query = q })
    assert.are_not.equal(old_epoch, w2.welcome.epochs[ch])
    local frames = {}
    for i = 1, 7 do frames[i] = client.recv_json(w2) end
    -- per channel order: reset then (for ch) 1..5; the two channels may interleave
    local by = { [ch] = {}, [gone] = {} }
    for _, f in ipairs(frames) do
      assert.is_table(by[f.channel], "frame for an unexpected channel: " .. json.encode(f))
      table.insert(by[f.channel], f)
    end
    local r = by[ch][1]
    assert.equals("reset", r.type, json.encode(r))
    assert.equals("epoch", r.reason)
    assert.equals(w2.welcome.epochs[ch], r.epoch)
    assert.equals(1, r.first_seq)
    assert.equals(5, r.last_seq)
    for i = 1, 5 do
      local m = by[ch][i + 1]
      assert.equals("message", m and m.type)
      assert.equals(i, m.seq)
      assert.equals("new" .. i, m.data)
    end
    local rg = by[gone][1]
    assert.equals("reset", rg and rg.type, "channel never published in the new process: " .. json.encode(rg))
    assert.equals("epoch", rg.reason)
    assert.equals(0, rg.last_seq)
    assert.equals(1, #by[gone], "nothing retained for " .. gone)
    client.publish_ok(srv2, { channel = ch, data = "live" })
    local m = client.recv_message(w2)
    assert.equals(6, m.seq)
    client.close(w2)
    assert.equals(0, srv2:stop())
  end)
end)
