-- Integration: the outbound budget holds the largest messages (issue 10,
-- item 9; docs/operations.md, limits.max_outbound_bytes). It used to default
-- to 1 MiB, the same as max_body_bytes, so a subscriber reading at full speed
-- was closed 4001 after three 1 MB messages. Unset, it now holds four of the
-- largest messages (at least 4 MiB); set below one of them (max_body_bytes +
-- 512 bytes of envelope) it is refused with a message that says why.
local cqueues = require "cqueues"
local server = require "helpers.server"
local client = require "helpers.client"

local check = server.run_config   -- through --check-config: output, exit code

describe("moonpush outbound budget", function()
  it("delivers ten 1 MB messages to a subscriber reading at full speed (defaults)", function()
    local srv = server.start({ limits = { max_body_bytes = 1048576, max_outbound_bytes = server.NULL } })
    local ch = client.unique("big-")
    local ws = client.ws(srv, { token = "bob", device = client.unique("reader-"), channels = { ch } })
    -- three publishers at once, as a backend with a connection pool
    -- publishes: their bodies arrive together, so up to three messages are
    -- queued before the first is written (never more: see below)
    local N, SIZE, PUBLISHERS = 10, 1000000, 3
    local got, closed, pub_err = {}, nil, nil
    local pad = ("x"):rep(SIZE)
    local cq = cqueues.new()
    for p = 1, PUBLISHERS do
      cq:wrap(function()
        local ok, err = pcall(function()
          for i = p, N, PUBLISHERS do
            -- at most PUBLISHERS messages ahead of the reader: three 1 MB
            -- messages fit the default budget however slowly this (maybe
            -- loaded) machine lets the reader run, and passed the old 1 MiB
            while #got < i - PUBLISHERS and not closed do cqueues.sleep(0.01) end
            local a = client.publish_ok(srv, { channel = ch, data = { i = i, pad = pad } }, { timeout = 10 })
            assert(a.recipients == 1, "message " .. i .. " reached " .. tostring(a.recipients) .. " subscribers")
          end
        end)
        if not ok then pub_err = pub_err or err end
      end)
    end
    cq:wrap(function()
      while #got < N do
        local m, raw = client.next_frame(ws, 10)
        if not m then closed = raw or "closed" return end
        if m.type == "message" then got[#got + 1] = m.data.i end
      end
    end)
    assert(cq:loop(60))
    client.close(ws)
    local log = srv:log_tail(10)
    assert.equals(0, srv:stop())
    assert.is_nil(pub_err, pub_err)
    assert.is_nil(closed, "the reader was closed after " .. #got .. " messages\n" .. log)
    table.sort(got)
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, got)
    assert.is_nil(log:find("slow consumer", 1, true), log)
  end)

  it("refuses a max_outbound_bytes that cannot hold the largest message, saying why", function()
    local out, rc = check(function(c) c.limits.max_body_bytes = 1048576; c.limits.max_outbound_bytes = 1048576 end)
    assert.equals(1, rc, out)
    assert.truthy(out:find("limits.max_outbound_bytes (1048576) is smaller than the largest message", 1, true), out)
    assert.truthy(out:find("max_body_bytes 1048576", 1, true), out)
    assert.truthy(out:find("4001", 1, true), out)
  end)

  it("accepts a max_outbound_bytes that holds max_body_bytes plus the envelope", function()
    local out, rc = check(function(c) c.limits.max_body_bytes = 65536; c.limits.max_outbound_bytes = 65536 + 512 end)
    assert.equals(0, rc, out)
  end)
end)
