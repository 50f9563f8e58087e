-- Integration: SIGTERM closes every WebSocket with 1001 "server shutting
-- down" and the process exits 0. A fresh server per test: each one ends it.
local server = require "helpers.server"
local client = require "helpers.client"

describe("moonpush shutdown", function()
  it("sends close 1001 to connected clients on SIGTERM and exits 0", function()
    local srv = server.start()
    local ok, err = pcall(function()
      local raw = client.raw_ws(srv, { token = "bob", device = "raw" })
      local lh = client.ws(srv, { token = "alice-phone" })
      local rc, stop_err = srv:stop()
      assert.equals(0, rc, stop_err)
      -- the close frames were written before exit; they are in our buffers
      local code, reason = raw:expect_close(2)
      assert.equals(1001, code, "raw client: " .. tostring(reason))
      assert.equals("server shutting down", reason)
      assert.is_true((raw:closed_within(2)))
      raw:close()
      local lcode, lreason = client.expect_close(lh, 2)
      assert.equals(1001, lcode)
      assert.equals("server shutting down", lreason)
    end)
    if srv:alive() then srv:stop() end
    assert(ok, err)
  end)

  it("sends close 1001 to many clients, also mid-stream, on SIGTERM", function()
    local srv = server.start()
    local ok, err = pcall(function()
      local ch = "bye"
      local conns = {}
      for i = 1, 20 do
        conns[i] = client.raw_ws(srv, { token = "bob", device = "d" .. i, channels = { ch } })
      end
      for i = 1, 5 do client.publish_ok(srv, { channel = ch, data = i }) end
      local rc, stop_err = srv:stop()
      assert.equals(0, rc, stop_err)
      for i, c in ipairs(conns) do
        local code, reason, skipped = c:expect_close(2)
        assert.equals(1001, code, "client " .. i .. ": " .. tostring(reason))
        -- the 5 messages, then the reconnect hint (docs/protocol.md)
        assert.equals(6, skipped, "client " .. i .. " did not get the 5 messages and the reconnect hint before the close")
        c:close()
      end
    end)
    if srv:alive() then srv:stop() end
    assert(ok, err)
  end)

  it("exits 0 on SIGTERM with no clients and stops listening", function()
    local srv = server.start()
    local port = srv.port
    assert.equals(0, srv:stop())
    assert.is_false(server.port_open(port))
  end)

  it("exits within 1 s of SIGTERM when no client is connected", function()
    local srv = server.start()
    local t0 = client.now()
    local rc, err = srv:stop()
    local elapsed = client.now() - t0
    assert.equals(0, rc, err)
    assert.is_true(elapsed < 1, string.format("took %.2fs to exit with no connections", elapsed))
  end)

  it("exits soon after SIGTERM once every client answered the close", function()
    local srv = server.start()
    local w = client.ws(srv, { token = "bob", device = "answers" })
    local t0 = client.now()
    srv:signal("TERM")
    -- lua-http answers the server's close frame while receiving
    local code = client.expect_close(w, 3)
    local rc = srv:wait(8)
    local elapsed = client.now() - t0
    if rc == nil then srv:stop() end
    assert.equals(1001, code)
    assert.equals(0, rc)
    assert.is_true(elapsed < 2, string.format("took %.2fs to exit after the client answered", elapsed))
  end)

  it("exits 0 on SIGINT", function()
    local srv = server.start()
    srv:signal("INT")
    local rc = srv:wait(5)
    if rc == nil then srv:stop() end
    assert.equals(0, rc)
  end)

  it("exits 0 on SIGTERM while a publish request is half sent", function()
    local srv = server.start()
    local c = client.tcp(srv)
    assert(c:send("POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"chan"))
    server.sleep(0.05)
    local rc, err = srv:stop()
    c:close()
    assert.equals(0, rc, err)
  end)
end)
