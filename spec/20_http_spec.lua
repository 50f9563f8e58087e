-- Integration: the HTTP surface of the real server (health, routing,
-- methods, keep-alive). docs/protocol.md "Routes", "Errors over HTTP", "Health".
local server = require "helpers.server"
local client = require "helpers.client"

describe("moonpush HTTP", function()
  local srv

  lazy_setup(function()
    srv = server.start()
  end)

  lazy_teardown(function()
    if srv then assert.equals(0, srv:stop()) end
  end)

  describe("GET /health", function()
    it("answers 200 with status ok, connections and uptime_ms", function()
      local status, body, headers = client.health(srv)
      assert.equals(200, status)
      assert.matches("^application/json", headers:get("content-type"))
      assert.is_table(body)
      assert.equals("ok", body.status)
      assert.is_number(body.connections)
      assert.is_true(body.connections >= 0)
      assert.is_number(body.uptime_ms)
      assert.is_true(body.uptime_ms >= 0)
    end)

    it("counts open WebSocket connections", function()
      local _, before = client.health(srv)
      local a = client.ws(srv, { token = "bob", device = client.unique("h-") })
      local b = client.ws(srv, { token = "bob", device = client.unique("h-") })
      local _, during = client.health(srv)
      assert.equals(before.connections + 2, during.connections)
      client.close(a)
      client.close(b)
      -- closes are processed asynchronously: poll (bounded)
      local deadline = client.now() + 2
      local after
      repeat
        server.sleep(0.02)
        _, after = client.health(srv)
      until after.connections == before.connections or client.now() > deadline
      assert.equals(before.connections, after.connections)
    end)

    it("has an increasing uptime_ms", function()
      local _, a = client.health(srv)
      server.sleep(0.05)
      local _, b = client.health(srv)
      assert.is_true(b.uptime_ms > a.uptime_ms, "uptime did not increase: " .. a.uptime_ms .. " -> " .. b.uptime_ms)
    end)
  end)

  describe("routing", function()
    for _, path in ipairs({ "/nope", "/", "/favicon.ico", "/api/v1/publish" }) do
      it("answers 404 not_found for the unknown route " .. path, function()
        local status, body = client.http(srv, path)
        assert.equals(404, status)
        assert.same("not_found", body and body.error)
        assert.is_string(body.message)
      end)
    end

    it("answers 404 not_found to a POST on an unknown route", function()
      local status, body = client.http(srv, "/nope", { method = "POST", body = "{}",
        headers = { ["content-type"] = "application/json" } })
      assert.equals(404, status)
      assert.equals("not_found", body.error)
    end)
  end)

  describe("methods", function()
    local cases = {
      { "POST", "/health", "GET" },
      { "DELETE", "/health", "GET" },
      { "GET", "/publish", "POST" },
      { "PUT", "/publish", "POST" },
      { "POST", "/ws", "GET" },
    }
    for _, c in ipairs(cases) do
      local method, path, allow = c[1], c[2], c[3]
      it("answers 405 method_not_allowed with Allow: " .. allow .. " to " .. method .. " " .. path, function()
        local status, body, headers = client.http(srv, path, {
          method = method, body = method ~= "GET" and "{}" or nil,
          headers = { ["content-type"] = "application/json",
                      authorization = "Bearer " .. server.PUBLISHER },
        })
        assert.equals(405, status)
        assert.equals("method_not_allowed", body and body.error)
        local allow_header = headers:get("allow")
        assert.is_string(allow_header, "no Allow header")
        assert.matches(allow, allow_header)
      end)
    end
  end)

  describe("plain GET on the websocket route", function()
    it("answers 426 upgrade_required", function()
      local status, body, headers = client.http(srv, "/ws?token=bob")
      assert.equals(426, status)
      assert.equals("upgrade_required", body and body.error)
    end)

    it("names websocket in the Upgrade header of the 426 (RFC 7231 6.5.15)", function()
      local status, _, headers = client.http(srv, "/ws?token=bob")
      assert.equals(426, status)
      local up = headers:get("upgrade")
      assert.is_string(up, "426 without an Upgrade header")
      assert.matches("[Ww]eb[Ss]ocket", up)
    end)
  end)

  describe("errors", function()
    it("gives every error a JSON body with error and message", function()
      local resp, err, c = client.raw_request(srv,
        "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
      c:close()
      assert.is_table(resp, err)
      assert.equals(404, resp.status)
      assert.matches("^application/json", resp.headers["content-type"] or "")
      assert.is_table(resp.json, "body is not JSON: " .. tostring(resp.body))
      assert.equals("not_found", resp.json.error)
      assert.is_string(resp.json.message)
    end)
  end)

  describe("keep-alive", function()
    it("keeps the connection open after a 4xx on a well-formed request", function()
      local c = client.tcp(srv)
      assert(c:send("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"))
      local r1, e1 = c:response()
      assert.is_table(r1, e1)
      assert.equals(404, r1.status)
      assert(c:send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
      local r2, e2 = c:response()
      c:close()
      assert.is_table(r2, e2)
      assert.equals(200, r2.status)
      assert.equals("ok", r2.json and r2.json.status)
    end)

    it("serves pipelined requests in order", function()
      local c = client.tcp(srv)
      assert(c:send("GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n"))
      local r1 = c:response()
      local r2 = c:response()
      c:close()
      assert.equals(200, r1 and r1.status)
      assert.equals(404, r2 and r2.status)
    end)

    it("closes the connection after answering Connection: close", function()
      local c = client.tcp(srv)
      assert(c:send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
      local r = c:response()
      assert.equals(200, r and r.status)
      assert.is_true((c:closed_within(2)))
      c:close()
    end)

    it("serves HTTP/1.0 requests", function()
      local c = client.tcp(srv)
      assert(c:send("GET /health HTTP/1.0\r\n\r\n"))
      local r, err = c:response()
      c:close()
      assert.is_table(r, err)
      assert.equals(200, r.status)
      assert.equals("ok", r.json and r.json.status)
    end)
  end)
end)
