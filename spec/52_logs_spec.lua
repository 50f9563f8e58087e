-- Integration: logs (docs/operations.md "Logs"): json format, access lines,
-- log.file and its reopen on SIGUSR1, and what is never logged at info
-- (tokens, query strings, message bodies). Each test starts its own server
-- with the log settings it checks; waits are bounded.
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local routes = require "helpers.routes"
local util = require "helpers.util"

local cjson = client.json
local WAIT = 3

-- nil while the log file does not exist (yet)
local readfile, copy = util.try_read_file, util.copy

local function lines(s)
  local out = {}
  for line in (s or ""):gmatch("([^\n]*)\n") do out[#out + 1] = line end
  return out
end

-- Secrets the specs look for in the logs.
local DEVICE_TOKEN = "devtok-S3CRET-7f3a9b"
local PUBLISHER_TOKEN = "pubtok-S3CRET-c41d2e"

local function overrides(log)
  local tokens = copy(server.TOKENS)
  tokens[DEVICE_TOKEN] = { user = "logan", device = "desk", kind = "web", channels = { "*" } }
  return {
    log = log,
    routes = {
      { path = "/ws", type = "websocket", plugins = { routes.device_auth(tokens) } },
      { path = "/publish", type = "publish", plugins = { routes.publisher_auth({
          [PUBLISHER_TOKEN] = { name = "backend", channels = { "*" } },
          [server.PUBLISHER] = { name = "probe", channels = { "*" } } }) } },
      { path = "/health", type = "health" },
      { path = "/metrics", type = "metrics" },
    },
  }
end

-- Traffic touching every kind of line the server writes at info: handshakes
-- with the token in the query, publishes with a body marker (header token,
-- query token, bad JSON, bad token), a 404, health, an admin publish.
local function traffic(srv, marker)
  local ch = "logs-" .. marker
  local w = client.ws(srv, { token = DEVICE_TOKEN, device = "desk", channels = { ch } })
  client.publish_ok(srv, { channel = ch, data = { body_marker = marker } }, { token = PUBLISHER_TOKEN })
  client.recv_message(w)
  client.publish_ok(srv, { user = "logan", data = "user-" .. marker }, { token = PUBLISHER_TOKEN, query_token = true })
  client.recv_message(w)
  local st = client.publish(srv, '{"channel":"' .. ch .. '","data":"bad-' .. marker .. '"', { token = PUBLISHER_TOKEN })
  assert.equals(400, st)
  st = client.publish(srv, { channel = ch, data = "denied-" .. marker }, { token = "wrong-" .. marker })
  assert.equals(401, st)
  st = client.http(srv, "/no-route-" .. marker .. "?token=" .. DEVICE_TOKEN)
  assert.equals(404, st)
  st = client.http(srv, "/health?token=" .. PUBLISHER_TOKEN)
  assert.equals(200, st)
  -- a publish from the admin REPL
  local out, rc = srv:admin("publish('" .. ch .. "', { admin_marker = 'adm-" .. marker .. "' })")
  assert.equals(0, rc, out)
  client.recv_message(w)
  -- a client-sent frame with the marker (not JSON the server understands)
  client.send_json(w, { type = "subscribe", channel = ch, extra = "frame-" .. marker })
  client.close(w)
end

describe("moonpush logs", function()
  local srv, dir

  before_each(function() dir = util.mkdtemp("moonpush-logs") end)

  after_each(function()
    local s = srv
    srv = nil
    util.rm_rf(dir)
    if s then session.stop(s) end
  end)

  -- Waits until pred(text) for the file (or the server log); returns the text.
  local function wait_for(get, pred, what)
    local deadline = client.now() + WAIT
    local text
    repeat
      text = get() or ""
      if pred(text) then return text end
      server.sleep(0.02)
    until client.now() > deadline
    error("not within " .. WAIT .. "s: " .. what .. "\n--- log:\n" .. text, 2)
  end

  describe("json format", function()
    it("writes every line as a JSON object with ts, level and msg", function()
      srv = server.start(overrides({ format = "json" }))
      traffic(srv, client.unique("json-"))
      local rc, err = srv:stop()
      assert.equals(0, rc, err)
      local all = lines(srv:log())
      assert.is_true(#all >= 8, "only " .. #all .. " log lines")
      for i, line in ipairs(all) do
        local v, derr = cjson.decode(line)
        assert.is_table(v, string.format("line %d is not JSON (%s): %s", i, tostring(derr), line))
        assert.is_number(v.ts, "ts in line " .. i .. ": " .. line)
        assert.is_true(v.ts > 1.5e12, "ts is not unix ms: " .. line)
        assert.truthy(({ debug = true, info = true, warn = true, error = true })[v.level], "level: " .. line)
        assert.is_string(v.msg, line)
        assert.not_equals("", v.msg, line)
      end
    end)

    it("writes one access line (msg http) per request with method, path and status", function()
      srv = server.start(overrides({ format = "json" }))
      local marker = client.unique("acc-")
      assert.equals(200, (client.health(srv)))
      assert.equals(404, (client.http(srv, "/nowhere-" .. marker .. "?token=" .. DEVICE_TOKEN .. "&x=1")))
      client.publish_ok(srv, { channel = "acc", data = 1 }, { token = PUBLISHER_TOKEN, query_token = true })
      local w = client.ws(srv, { token = DEVICE_TOKEN, device = "desk" })
      client.close(w)
      local rc, err = srv:stop()
      assert.equals(0, rc, err)
      local access = {}
      for _, line in ipairs(lines(srv:log())) do
        local v = cjson.decode(line)
        assert.is_table(v, line)
        if v.msg == "http" then access[#access + 1] = v end
      end
      assert.equals(4, #access, "access lines: " .. cjson.encode(access))
      local function find(method, path)
        for _, v in ipairs(access) do
          if v.method == method and v.path == path then return v end
        end
        error("no access line for " .. method .. " " .. path .. " in " .. cjson.encode(access), 2)
      end
      assert.equals("200", tostring(find("GET", "/health").status))
      local nf = find("GET", "/nowhere-" .. marker)
      assert.equals("404", tostring(nf.status))
      assert.equals("200", tostring(find("POST", "/publish").status))
      assert.equals("101", tostring(find("GET", "/ws").status))
      for _, v in ipairs(access) do
        assert.is_nil(tostring(v.path):find("?", 1, true), "query string in the path: " .. cjson.encode(v))
        assert.is_not_nil(v.remote, "no remote: " .. cjson.encode(v))
      end
      local text = srv:log()
      assert.is_nil(text:find(DEVICE_TOKEN, 1, true), "the device token is in the log")
      assert.is_nil(text:find(PUBLISHER_TOKEN, 1, true), "the publisher token is in the log")
      assert.is_nil(text:find("x=1", 1, true), "the query string is in the log")
    end)

    it("keeps a value holding quotes whole (the error of a refused reload)", function()
      srv = server.start(overrides({ format = "json" }))
      local f = assert(io.open(srv.cfgfile, "wb"))
      f:write('return { listen = "a" "b" }\n')
      f:close()
      assert.is_true(srv:signal("HUP"))
      local line = wait_for(function() return srv:log() end,
        function(t) return t:find("config reload refused", 1, true) ~= nil end, "the refusal line")
      for _, l in ipairs(lines(line)) do
        if l:find("config reload refused", 1, true) then line = l end
      end
      local v = cjson.decode(line)
      assert.is_table(v, "not JSON: " .. line)
      assert.equals("error", v.level)
      -- Lua says: moonpush.lua:1: '}' expected near '"b"'
      assert.truthy(tostring(v.error):find([['}' expected near '"b"']], 1, true),
        "the error value was cut at its first quote: " .. line)
    end)

    it("writes numbers as JSON numbers and strings as JSON strings", function()
      srv = server.start(overrides({ format = "json" }))
      assert.equals(200, (client.health(srv)))
      assert.equals(404, (client.http(srv, "/nowhere")))
      client.publish_ok(srv, { channel = "numbers", data = 1 }, { token = PUBLISHER_TOKEN })
      local w = client.ws(srv, { token = DEVICE_TOKEN, device = "desk" })
      client.close(w)
      -- a target that looks like a number is still a user id: a string
      local out, rc = srv:admin("kick('12345')")
      assert.equals(0, rc, out)
      local rc2, err = srv:stop()
      assert.equals(0, rc2, err)
      local access, kick = 0, nil
      for _, line in ipairs(lines(srv:log())) do
        local v = cjson.decode(line)
        assert.is_table(v, line)
        if v.msg == "http" then
          access = access + 1
          for _, k in ipairs({ "conn", "status", "bytes", "ms" }) do
            assert.is_number(v[k], k .. " is not a JSON number: " .. line)
          end
          for _, k in ipairs({ "method", "path", "remote", "route" }) do
            assert.is_string(v[k], k .. " is not a JSON string: " .. line)
          end
          assert.is_true(v.status >= 100 and v.status <= 599, line)
          assert.is_true(v.ms >= 0, line)
        elseif v.msg == "admin kick" then
          kick = v
        elseif v.msg == "listening" then
          assert.is_string(v.addr, line)   -- addr=%s:%d: a string, not a number
        end
      end
      assert.equals(4, access)
      assert.is_table(kick, "no admin kick line")
      assert.equals("12345", kick.target, "the kick target is not the string it was")
      assert.equals(0, kick.count)
      assert.is_number(kick.count)
    end)

    it("measures a request's real duration: ms > 0 for one whose auth hook works a while", function()
      -- The whole handshake (read, hook, answer) happens within one loop
      -- iteration: a duration taken from libev's cached loop time is 0.
      local o = overrides({ format = "json" })
      o.plugin_path = { server.ROOT .. "/spec/fixtures/plugins", server.PLUGIN_DIR }
      table.insert(o.routes, 1, { path = "/burn", type = "websocket", budget = 500000000,
        plugins = { { name = "burn_auth", config = { iterations = 3000000 } } } })
      srv = server.start(o)
      local w = client.ws(srv, { path = "/burn", token = "anyone", device = "slow" })
      assert.equals("burner", w.welcome.user)
      client.close(w)
      local rc, err = srv:stop()
      assert.equals(0, rc, err)
      local line
      for _, l in ipairs(lines(srv:log())) do
        local v = cjson.decode(l)
        if v and v.msg == "http" and v.path == "/burn" then line = v end
      end
      assert.is_table(line, "no access line for /burn:\n" .. srv:log())
      assert.equals(101, tonumber(line.status))
      assert.is_true(tonumber(line.ms) > 0, "ms is " .. tostring(line.ms) .. " for a request that ran a hook for a while")
    end)

    it("writes no access lines with log.access = false", function()
      srv = server.start(overrides({ format = "json", access = false }))
      assert.equals(200, (client.health(srv)))
      assert.equals(404, (client.http(srv, "/nope")))
      local rc, err = srv:stop()
      assert.equals(0, rc, err)
      for _, line in ipairs(lines(srv:log())) do
        local v = cjson.decode(line)
        assert.is_table(v, line)
        assert.not_equals("http", v.msg, line)
      end
    end)
  end)

  describe("logfmt", function()
    it("writes every line as ts=<ms> level=<lvl> msg=...", function()
      srv = server.start(overrides({ format = "logfmt" }))
      traffic(srv, client.unique("fmt-"))
      local rc, err = srv:stop()
      assert.equals(0, rc, err)
      local all = lines(srv:log())
      assert.is_true(#all >= 8)
      for _, line in ipairs(all) do
        assert.truthy(line:match('^ts=%d+ level=%a+ msg="[^"]*"'), "not logfmt: " .. line)
      end
      local access = 0
      for _, line in ipairs(all) do
        if line:find('msg="http"', 1, true) then
          access = access + 1
          assert.truthy(line:find(" method=%u+"), line)
          assert.truthy(line:find(" status=%d%d%d"), line)
          assert.truthy(line:find(' path="/[^"?]*"'), line)
        end
      end
      assert.is_true(access >= 6, "only " .. access .. " access lines")
    end)
  end)

  describe("secrets", function()
    for _, format in ipairs({ "logfmt", "json" }) do
      it("never logs a token, a query string or a message body at info (" .. format .. ")", function()
        srv = server.start(overrides({ format = format, level = "info" }))
        local marker = client.unique("MARK-" .. format .. "-")
        traffic(srv, marker)
        local rc, err = srv:stop()
        assert.equals(0, rc, err)
        local text = srv:log()
        for _, secret in ipairs({ DEVICE_TOKEN, PUBLISHER_TOKEN, "wrong-" .. marker, "token=" }) do
          local at = text:find(secret, 1, true)
          assert.is_nil(at, "the log holds " .. secret .. ":\n" .. text)
        end
        for _, body in ipairs({ "body_marker", "user-" .. marker, "bad-" .. marker, "denied-" .. marker,
                                "adm-" .. marker, "frame-" .. marker }) do
          assert.is_nil(text:find(body, 1, true), "the log holds the message body " .. body .. ":\n" .. text)
        end
        -- the 404 path itself (no query) is logged: the log is not just empty
        assert.truthy(text:find("/no-route-" .. marker, 1, true), "no access line for the 404:\n" .. text)
      end)
    end
  end)

  describe("admin actions", function()
    it("logs an admin kick naming the kicked user and the count", function()
      srv = server.start(overrides({ format = "json" }))
      local w = client.ws(srv, { token = DEVICE_TOKEN, device = "desk" })
      local out, rc = srv:admin("kick('logan')")
      assert.equals(0, rc, out)
      assert.equals(4003, (client.expect_close(w, 3)))
      local text = wait_for(function() return srv:log() end,
        function(t) return t:find('"admin kick"', 1, true) ~= nil end, "the admin kick line")
      local line
      for _, l in ipairs(lines(text)) do
        if l:find('"admin kick"', 1, true) then line = l end
      end
      local v = cjson.decode(line)
      assert.is_table(v, line)
      assert.equals("logan", v.target, "the kick line names the wrong target: " .. line)
      assert.equals("1", tostring(v.count), line)
    end)
  end)

  describe("log.file", function()
    it("appends lines to the file instead of stderr", function()
      local file = dir .. "/moonpush-app.log"
      srv = server.start(overrides({ file = file }))
      local marker = client.unique("file-")
      assert.equals(404, (client.http(srv, "/to-file-" .. marker)))
      local text = wait_for(function() return readfile(file) end,
        function(t) return t:find("/to-file-" .. marker, 1, true) ~= nil end, "the access line in the file")
      for _, line in ipairs(lines(text)) do
        assert.truthy(line:match("^ts=%d+ level=%a+ msg="), "not a log line: " .. line)
      end
      assert.is_nil(srv:log():find("/to-file-" .. marker, 1, true), "the access line went to stderr too")
      assert.is_nil(srv:log():find('msg="http"', 1, true), "access lines on stderr")
    end)

    it("reopens the file on SIGUSR1 after it was moved away", function()
      local file = dir .. "/moonpush-app.log"
      local rotated = dir .. "/moonpush-app.log.1"
      srv = server.start(overrides({ file = file, format = "json" }))
      local m1 = client.unique("before-")
      assert.equals(404, (client.http(srv, "/rot-" .. m1)))
      wait_for(function() return readfile(file) end,
        function(t) return t:find("/rot-" .. m1, 1, true) ~= nil end, "the first access line in the file")
      assert.is_true(os.rename(file, rotated))

      -- until the reopen, lines go on to the moved file (same inode)
      local m2 = client.unique("between-")
      assert.equals(404, (client.http(srv, "/rot-" .. m2)))
      wait_for(function() return readfile(rotated) end,
        function(t) return t:find("/rot-" .. m2, 1, true) ~= nil end, "the second line in the moved file")

      assert.is_true(srv:signal("USR1"))
      -- the signal is handled asynchronously: request until a line lands in a new file
      local m3
      local text = wait_for(function()
        m3 = client.unique("after-")
        client.http(srv, "/rot-" .. m3)
        return readfile(file)
      end, function(t) return t:find("/rot-", 1, true) ~= nil end, "a new file at the original path")
      assert.is_nil(text:find("/rot-" .. m1, 1, true), "the new file holds old lines")
      assert.is_nil(text:find("/rot-" .. m2, 1, true), "the new file holds old lines")
      local final = client.unique("final-")
      assert.equals(404, (client.http(srv, "/rot-" .. final)))
      text = wait_for(function() return readfile(file) end,
        function(t) return t:find("/rot-" .. final, 1, true) ~= nil end, "the last line in the new file")
      for _, line in ipairs(lines(text)) do
        assert.is_table(cjson.decode(line), "not JSON: " .. line)
      end
      local old = readfile(rotated)
      assert.is_nil(old:find("/rot-" .. final, 1, true), "the moved file still gets lines after SIGUSR1")
      -- the server is still fine, and SIGUSR1 did not stop it
      assert.is_true(srv:alive())
      client.assert_serves(srv)
    end)

    it("logs at debug only after log_level('debug'), and not the tokens even then", function()
      local file = dir .. "/moonpush-app.log"
      srv = server.start(overrides({ file = file, level = "info" }))
      assert.equals(200, (client.health(srv)))
      local out, rc = srv:admin("log_level('debug')")
      assert.equals(0, rc, out)
      local before = readfile(file) or ""
      assert.is_nil(before:find("level=debug", 1, true), "debug lines at level info")
      local w = client.ws(srv, { token = DEVICE_TOKEN, device = "desk" })
      client.publish_ok(srv, { user = "logan", data = 1 }, { token = PUBLISHER_TOKEN })
      client.recv_message(w)
      client.close(w)
      local text = wait_for(function() return readfile(file) end,
        function(t) return t:find('level=debug msg="ws connected"', 1, true) ~= nil end,
        "a debug line for the connection after log_level('debug')")
      -- tokens stay out of the log at any level
      assert.is_nil(text:find(DEVICE_TOKEN, 1, true), text)
      assert.is_nil(text:find(PUBLISHER_TOKEN, 1, true), text)
    end)
  end)
end)
