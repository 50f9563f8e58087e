-- Integration: CORS on HTTP routes that set `cors` (docs/protocol.md "CORS",
-- docs/operations.md "Config"): a browser page on an allowed origin gets its
-- preflight answered and may read the answers; other origins, and routes
-- without `cors`, get no CORS headers at all. The config is validated.
local server = require "helpers.server"
local client = require "helpers.client"
local util = require "helpers.util"


local DEMO = "http://127.0.0.1:8000"
local DEMO2 = "http://localhost:8000"
local EVIL = "http://evil.example"

local PUBLISHERS = { publishers = { [server.PUBLISHER] = { name = "backend", channels = { "*" } } } }

local function routes()
  local auth = { { name = "auth_token", config = util.copy(PUBLISHERS) } }
  return {
    { path = "/ws", type = "websocket", plugins = {
        { name = "auth_token", config = { tokens = util.copy(server.TOKENS) } } } },
    { path = "/publish", type = "publish", plugins = util.copy(auth),
      cors = { origins = { DEMO, DEMO2 }, max_age = 600 } },
    { path = "/plain", type = "publish", plugins = util.copy(auth) },
    { path = "/history", type = "history", plugins = util.copy(auth),
      cors = { origins = "*", headers = { "X-Request-Id" } } },
    { path = "/health", type = "health" },
  }
end

-- One raw request on a new connection; returns the response table.
local function request(srv, method, path, headers, body)
  local lines = { string.format("%s %s HTTP/1.1", method, path), "Host: 127.0.0.1" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  local resp, err, conn = client.raw_request(srv, table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
  conn:close()
  assert(resp, err)
  return resp
end

local function has_no_cors(resp)
  for _, h in ipairs(resp.header_list) do
    assert.falsy(h[1]:find("^access%-control%-"), "unexpected CORS header " .. h[1] .. ": " .. h[2])
  end
end

local PUBLISH_BODY = '{"channel":"news","data":{"text":"from a page"}}'

describe("CORS", function()
  local srv

  lazy_setup(function()
    srv = server.start({ routes = routes() })
  end)

  lazy_teardown(function()
    if srv then assert.equals(0, srv:stop()) end
  end)

  describe("preflight", function()
    it("answers 204 with origin, methods, headers and max age for an allowed origin", function()
      for _, origin in ipairs({ DEMO, DEMO2 }) do
        local r = request(srv, "OPTIONS", "/publish", {
          Origin = origin, ["Access-Control-Request-Method"] = "POST",
          ["Access-Control-Request-Headers"] = "authorization,content-type" })
        assert.equals(204, r.status)
        assert.equals(origin, r.headers["access-control-allow-origin"])
        assert.equals("Origin", r.headers["vary"])
        assert.equals("POST, OPTIONS", r.headers["access-control-allow-methods"])
        assert.equals("Authorization, Content-Type", r.headers["access-control-allow-headers"])
        assert.equals("600", r.headers["access-control-max-age"])
        assert.is_nil(r.headers["content-length"], "a 204 has no Content-Length")
        assert.equals("", r.body)
      end
    end)

    it("refuses an origin that is not listed with 403 and no CORS headers", function()
      for _, origin in ipairs({ EVIL, DEMO .. "/", "http://127.0.0.1:8001", "https://127.0.0.1:8000" }) do
        local r = request(srv, "OPTIONS", "/publish", { Origin = origin, ["Access-Control-Request-Method"] = "POST" })
        assert.equals(403, r.status, origin)
        assert.equals("origin_not_allowed", r.json.error)
        has_no_cors(r)
      end
    end)

    it("refuses a preflight without Origin", function()
      local r = request(srv, "OPTIONS", "/publish", { ["Access-Control-Request-Method"] = "POST" })
      assert.equals(403, r.status)
      has_no_cors(r)
    end)

    it("with origins = \"*\" echoes any origin; lists GET and the extra headers", function()
      local r = request(srv, "OPTIONS", "/history?channel=news", { Origin = EVIL, ["Access-Control-Request-Method"] = "GET" })
      assert.equals(204, r.status)
      assert.equals(EVIL, r.headers["access-control-allow-origin"])
      assert.equals("GET, OPTIONS", r.headers["access-control-allow-methods"])
      assert.equals("Authorization, Content-Type, X-Request-Id", r.headers["access-control-allow-headers"])
      assert.equals("600", r.headers["access-control-max-age"], "the default max_age")
    end)
  end)

  describe("requests", function()
    it("a publish from an allowed origin gets Access-Control-Allow-Origin and Vary", function()
      local r = request(srv, "POST", "/publish", { Origin = DEMO2, ["Content-Type"] = "application/json",
        Authorization = "Bearer " .. server.PUBLISHER }, PUBLISH_BODY)
      assert.equals(200, r.status)
      assert.is_number(r.json.seq)
      assert.equals(DEMO2, r.headers["access-control-allow-origin"])
      assert.equals("Origin", r.headers["vary"])
      assert.equals("Retry-After", r.headers["access-control-expose-headers"])
    end)

    it("errors carry them too, so the page can read why", function()
      local r = request(srv, "POST", "/publish", { Origin = DEMO, ["Content-Type"] = "application/json",
        Authorization = "Bearer wrong" }, PUBLISH_BODY)
      assert.equals(401, r.status)
      assert.equals(DEMO, r.headers["access-control-allow-origin"])
    end)

    it("a publish from another origin is served without CORS headers (the browser hides it)", function()
      local r = request(srv, "POST", "/publish", { Origin = EVIL, ["Content-Type"] = "application/json",
        Authorization = "Bearer " .. server.PUBLISHER }, PUBLISH_BODY)
      assert.equals(200, r.status)
      has_no_cors(r)
      assert.is_nil(r.headers["vary"])
    end)

    it("a GET on a \"*\" route answers with the origin", function()
      local r = request(srv, "GET", "/history?channel=news", { Origin = DEMO,
        Authorization = "Bearer " .. server.PUBLISHER })
      assert.equals(200, r.status)
      assert.equals(DEMO, r.headers["access-control-allow-origin"])
    end)

    it("does not carry an allowed origin over to the next request on a keep-alive connection", function()
      local c = client.tcp(srv)
      local function send(headers)
        local lines = { "POST /publish HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
          "Authorization: Bearer " .. server.PUBLISHER, "Content-Length: " .. #PUBLISH_BODY }
        for _, h in ipairs(headers) do lines[#lines + 1] = h end
        assert(c:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. PUBLISH_BODY))
        return assert(c:response())
      end
      assert.equals(DEMO, send({ "Origin: " .. DEMO }).headers["access-control-allow-origin"])
      local second = send({})
      assert.equals(200, second.status)
      has_no_cors(second)
      c:close()
    end)
  end)

  describe("on SIGHUP", function()
    it("takes the reloaded origins: the new one allowed, the dropped one not", function()
      local own = server.start({ routes = routes() })
      local cfg = util.copy(own.config)
      for _, r in ipairs(cfg.routes) do
        if r.path == "/publish" then r.cors = { origins = { EVIL } } end
      end
      local before = own:log_count("config reloaded")
      util.write_file(own.cfgfile, "return " .. server.serialize(cfg) .. "\n")
      assert.is_true(own:signal("HUP"))
      own:wait_log("config reloaded", before)
      local r = request(own, "OPTIONS", "/publish", { Origin = EVIL, ["Access-Control-Request-Method"] = "POST" })
      assert.equals(204, r.status)
      assert.equals(EVIL, r.headers["access-control-allow-origin"])
      r = request(own, "OPTIONS", "/publish", { Origin = DEMO, ["Access-Control-Request-Method"] = "POST" })
      assert.equals(403, r.status)
      assert.equals(0, own:stop())
    end)
  end)

  describe("a route without cors", function()
    it("answers OPTIONS 405 and a request with Origin without CORS headers", function()
      local r = request(srv, "OPTIONS", "/plain", { Origin = DEMO, ["Access-Control-Request-Method"] = "POST" })
      assert.equals(405, r.status)
      has_no_cors(r)
      r = request(srv, "POST", "/plain", { Origin = DEMO, ["Content-Type"] = "application/json",
        Authorization = "Bearer " .. server.PUBLISHER }, PUBLISH_BODY)
      assert.equals(200, r.status)
      has_no_cors(r)
      r = request(srv, "GET", "/health", { Origin = DEMO })
      assert.equals(200, r.status)
      has_no_cors(r)
    end)
  end)

  describe("config", function()
    -- The specs' default config with one edit, through --check-config.
    local check = server.check_config

    local function publish_route(cfg)
      for _, r in ipairs(cfg.routes) do if r.type == "publish" then return r end end
    end

    it("accepts a list of origins, \"*\", max_age and headers", function()
      local out, rc = check(function(c) publish_route(c).cors = { origins = { DEMO, "https://app.example.com",
        "http://[::1]:8000" }, max_age = 0, headers = { "X-Trace" } } end)
      assert.equals(0, rc, out)
      out, rc = check(function(c) publish_route(c).cors = { origins = "*" } end)
      assert.equals(0, rc, out)
    end)

    local BAD = {
      { "an origin with a path", { origins = { DEMO .. "/app" } }, "origins%[1%] must be an origin" },
      { "an origin with a trailing slash", { origins = { DEMO .. "/" } }, "origins%[1%]" },
      { "an origin without scheme", { origins = { "127.0.0.1:8000" } }, "origins%[1%]" },
      { "an empty origin list", { origins = {} }, "origins must be" },
      { "no origins", { max_age = 5 }, "origins must be" },
      { "a negative max_age", { origins = "*", max_age = -1 }, "max_age must be an integer from 0 to 86400" },
      { "a max_age past a day", { origins = "*", max_age = 1e9 }, "max_age" },
      { "a header name with a space", { origins = "*", headers = { "X Trace" } }, "headers%[1%]" },
      { "an unknown key", { origins = "*", credentials = true }, "unknown key routes%[%d%]%.cors%.credentials" },
      { "a string", "*", "cors must be a table" },
    }
    for _, case in ipairs(BAD) do
      it("refuses " .. case[1], function()
        local out, rc = check(function(c) publish_route(c).cors = case[2] end)
        assert.equals(1, rc, out)
        assert.matches(case[3], out)
      end)
    end

    it("refuses cors on a websocket or health route", function()
      for _, t in ipairs({ "websocket", "health" }) do
        local out, rc = check(function(c)
          for _, r in ipairs(c.routes) do if r.type == t then r.cors = { origins = "*" } end end
        end)
        assert.equals(1, rc, out)
        assert.matches("cors applies to publish, history, presence and sse routes only", out)
      end
    end)
  end)
end)
