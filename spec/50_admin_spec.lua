-- Integration: the admin REPL (docs/operations.md "Admin REPL", "Admin wire
-- protocol"). Through the real client binary (`moonpush admin SOCK -e ...`,
-- a script on stdin, `--tcp`) and raw over the Unix socket (JSON lines).
-- One shared server for most tests; the reload, TCP and config-check tests
-- start their own. Every wait is bounded: the client binary runs under
-- timeout(1), socket reads carry a timeout.
local socket = require "cqueues.socket"
local errno = require "cqueues.errno"
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local routes = require "helpers.routes"
local util = require "helpers.util"

local cjson = client.json
local ROOT = server.ROOT
local FIXTURES = ROOT .. "/spec/fixtures/plugins"
local T = 5            -- seconds: any one admin answer
local CLI_LIMIT = 15   -- seconds: timeout(1) around one run of the client

---------------------------------------------------------------------------
-- small things
---------------------------------------------------------------------------

local readfile, writefile, shq, copy = util.read_file, util.write_file, util.shq, util.copy
local function mkdtemp() return util.mkdtemp("moonpush-ops") end

-- Runs a shell command line, bounded; returns stdout, stderr, exit code.
local function run(cmdline, stdin)
  local dir = mkdtemp()
  local full = string.format("timeout -k 2 %d %s 2>%s", CLI_LIMIT, cmdline, shq(dir .. "/err"))
  if stdin then
    writefile(dir .. "/in", stdin)
    full = full .. " <" .. shq(dir .. "/in")
  else
    full = full .. " </dev/null"
  end
  local p = io.popen(full .. "; echo \"__rc=$?\"")
  local out = p:read("*a")
  p:close()
  local err = readfile(dir .. "/err")
  util.rm_rf(dir)
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  out = out:gsub("__rc=%d+%s*$", "")
  return out, err, rc
end

-- `moonpush admin SOCK [-e EXPR]...` (exprs: a string or a list).
local function cli(sock, exprs, stdin)
  local args = { shq(server.BIN), "admin", shq(sock) }
  if type(exprs) == "string" then exprs = { exprs } end
  for _, e in ipairs(exprs or {}) do
    args[#args + 1] = "-e"
    args[#args + 1] = shq(e)
  end
  return run(table.concat(args, " "), stdin)
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- A raw admin connection: one JSON object per line each way.
local Admin = {}
Admin.__index = Admin

local function admin_connect(opts)
  local s
  if opts.path then
    s = socket.connect { path = opts.path }
  else
    s = socket.connect { host = opts.host or "127.0.0.1", port = opts.port }
  end
  s:onerror(function(_, _, why) return why end)
  s:setmode("b", "b")
  local ok, err = s:connect(T)
  if not ok then error("admin connect failed: " .. tostring(err), 2) end
  return setmetatable({ s = s }, Admin)
end

function Admin:send(v)
  local line = type(v) == "string" and v or cjson.encode(v)
  self.s:clearerr()
  assert(self.s:xwrite(line .. "\n", "bn", T))
  assert(self.s:flush(T))
end

-- Next answer line decoded; nil, "eof" | "timeout" | err when none.
function Admin:recv(timeout)
  self.s:clearerr()
  local line, err = self.s:xread("*L", "b", timeout or T)
  if line == nil then
    self.s:clearerr()
    if err == nil then return nil, "eof" end
    if err == errno.ETIMEDOUT then return nil, "timeout" end
    if err == errno.ECONNRESET then return nil, "eof" end
    return nil, tostring(err)
  end
  if not line:find("\n$") then return nil, "eof" end
  local v = cjson.decode(line)
  if type(v) ~= "table" then error("admin answer is not a JSON object: " .. line, 2) end
  return v, line
end

function Admin:ask(v, timeout)
  self:send(v)
  local a, err = self:recv(timeout)
  if not a then error("no admin answer: " .. tostring(err), 2) end
  return a
end

-- Evaluate and insist on ok; returns the printed output.
function Admin:eval(code, timeout)
  local a = self:ask({ eval = code }, timeout)
  if a.ok ~= true then error("admin eval of " .. code .. " failed: " .. cjson.encode(a), 2) end
  return a.output
end

function Admin:num(code)
  local out = self:eval(code)
  local n = tonumber(trim(out))
  if not n then error("admin eval of " .. code .. " printed " .. out .. ", not a number", 2) end
  return n
end

-- True when the server closed the connection within timeout.
function Admin:closed_within(timeout)
  local deadline = client.now() + timeout
  while client.now() < deadline do
    self.s:clearerr()
    local data, err = self.s:xread(-4096, "b", math.max(0.01, deadline - client.now()))
    if data == nil then
      self.s:clearerr()
      if err == nil or err == errno.ECONNRESET then return true end
      if err == errno.ETIMEDOUT then return false end
      return true
    end
  end
  return false
end

function Admin:close()
  pcall(self.s.close, self.s)
end

local function health_ok(srv)
  local st, body = client.health(srv)
  return st == 200 and type(body) == "table" and body.status == "ok"
end

-- Device tokens for the shared server: one user per token family so that
-- kicks of one test reach nobody else's connections.
local TOKENS = copy(server.TOKENS)
for i = 1, 6 do
  TOKENS["kick-" .. i] = { user = "kicked" .. i, kind = "web", channels = { "*" } }
end
TOKENS["dave"] = { user = "dave", kind = "web", channels = { "*" } }

local function ops_routes(ws_plugins)
  return {
    { path = "/ws", type = "websocket", plugins = ws_plugins },
    { path = "/publish", type = "publish", plugins = { routes.publisher_auth() } },
    { path = "/health", type = "health" },
  }
end

---------------------------------------------------------------------------
-- the shared server
---------------------------------------------------------------------------

describe("moonpush admin", function()
  local srv, sock
  local ws, track = session.shared_server(function()
    srv = server.start({ routes = ops_routes({ routes.device_auth(TOKENS) }) })
    sock = srv.dir .. "/moonpush-admin.sock"
    return srv
  end)

  local function raw()
    return track(admin_connect({ path = sock }))
  end

  describe("client binary", function()
    it("creates the socket next to the config file with mode 0600", function()
      local out, err, rc = run("stat -c %a " .. shq(sock))
      assert.equals(0, rc, err)
      assert.equals("600", trim(out))
    end)

    it("prints an evaluated expression and exits 0", function()
      local out, err, rc = cli(sock, "1 + 2")
      assert.equals(0, rc, err)
      assert.equals("3", trim(out))
      out, err, rc = cli(sock, { "'a' .. 'b'", "string.rep('x', 3)" })
      assert.equals(0, rc, err)
      assert.equals('"ab"\n"xxx"', trim(out))
    end)

    it("prints stats() as a table of counters", function()
      local out, err, rc = cli(sock, "stats()")
      assert.equals(0, rc, err)
      for _, key in ipairs({ "connections", "websockets", "handshakes", "messages_published", "kicks",
                             "reloads", "store" }) do
        assert.truthy(out:find("%f[%w_]" .. key .. " = "), "stats() lacks " .. key .. ":\n" .. out)
      end
    end)

    it("exits 1 with the error on stderr when a chunk raises, and the server goes on", function()
      local out, err, rc = cli(sock, "error('deliberate-boom')")
      assert.equals(1, rc, out .. err)
      assert.truthy(err:find("deliberate-boom", 1, true), err)
      assert.truthy(health_ok(srv))
    end)

    it("exits 1 on a syntax error typed, and the server goes on", function()
      local out, err, rc = cli(sock, "x = = 1")
      assert.equals(1, rc, out .. err)
      assert.truthy(err:lower():find("error", 1, true), err)
      assert.truthy(err:find("unexpected symbol", 1, true) or err:find("near", 1, true), err)
      assert.truthy(health_ok(srv))
      -- the same session keeps working after the error
      out, err, rc = cli(sock, { "x = = 1", "40 + 2" })
      assert.equals(1, rc)
      assert.truthy(out:find("42", 1, true), out .. err)
    end)

    it("exits 2 when no server listens on the socket", function()
      local out, err, rc = cli(srv.dir .. "/no-such.sock", "1")
      assert.equals(2, rc, out .. err)
      assert.truthy(#err > 0, "no message on stderr")
    end)

    it("runs a multi-line chunk from a stdin script, then calls what it defined", function()
      local script = table.concat({
        "function triple(x)",
        "  local y = x * 3",
        "  return y",
        "end",
        "triple(14)",
        "",
      }, "\n")
      local out, err, rc = cli(sock, nil, script)
      assert.equals(0, rc, out .. err)
      assert.equals("42", trim(out))
    end)

    it("reports a stdin script that ends inside an unfinished chunk", function()
      local out, err, rc = cli(sock, nil, "function broken()\n  return 1\n")
      assert.equals(1, rc, out .. err)
      assert.truthy(#err > 0)
      assert.truthy(health_ok(srv))
    end)
  end)

  describe("API", function()
    it("stats() numbers change after a client connects and a publish", function()
      local a = raw()
      local ws0 = a:num("stats().websockets")
      local hs0 = a:num("stats().handshakes")
      local pub0 = a:num("stats().messages_published")
      local q0 = a:num("stats().frames_queued")
      local ch = client.unique("stats-")
      local w = ws({ token = "bob", device = client.unique("st-"), channels = { ch } })
      assert.equals(ws0 + 1, a:num("stats().websockets"))
      assert.equals(hs0 + 1, a:num("stats().handshakes"))
      client.publish_ok(srv, { channel = ch, data = { n = 1 } })
      client.recv_message(w)
      assert.equals(pub0 + 1, a:num("stats().messages_published"))
      assert.equals(q0 + 1, a:num("stats().frames_queued"))
      client.close(w)
    end)

    it("clients() lists a connected WebSocket with user, device, kind and route", function()
      local dev = client.unique("cl-")
      local ch = client.unique("clch-")
      local w = ws({ token = "dave", device = dev, channels = { ch } })
      local out, err, rc = cli(sock, "clients('dave')")
      assert.equals(0, rc, err)
      assert.truthy(out:find('user = "dave"', 1, true), out)
      assert.truthy(out:find('device = "' .. dev .. '"', 1, true), out)
      assert.truthy(out:find('route = "/ws"', 1, true), out)
      assert.truthy(out:find('kind = "web"', 1, true), out)
      assert.truthy(out:find('"' .. ch .. '"', 1, true), out)
      assert.truthy(out:find('"user:dave"', 1, true), out)
      -- the id is the connection id of the welcome frame
      local a = raw()
      assert.equals(tonumber(w.welcome.conn), a:num("clients('dave')[1].id"))
      assert.equals(1, a:num("#clients({ user = 'dave', route = '/ws', kind = 'web' })"))
      assert.equals(0, a:num("#clients({ user = 'dave', kind = 'mobile' })"))
      client.close(w)
    end)

    it("users() counts the connections of each online user", function()
      ws({ token = "alice-phone" })
      ws({ token = "alice-laptop" })
      ws({ token = "carol", device = client.unique("u-") })
      local a = raw()
      assert.equals(2, a:num("users().alice"))
      assert.equals(1, a:num("users().carol"))
      local out = cli(sock, "users()")
      assert.truthy(out:find("alice = 2", 1, true), out)
    end)

    it("kick(user, reason) closes every connection of that user with 4003 and the reason, no one else's", function()
      local k1 = ws({ token = "kick-1", device = "a" })
      local k2 = ws({ token = "kick-1", device = "b" })
      local other = ws({ token = "kick-2", device = "a" })
      local out, err, rc = cli(sock, "kick('kicked1', 'maintenance window')")
      assert.equals(0, rc, err)
      assert.equals("2", trim(out))
      for _, w in ipairs({ k1, k2 }) do
        local code, reason = client.expect_close(w, 3)
        assert.equals(4003, code)
        assert.equals("maintenance window", reason)
      end
      -- the other user is still connected and served
      client.publish_ok(srv, { user = "kicked2", data = { still = "here" } })
      local m = client.recv_message(other)
      assert.equals("here", m.data.still)
      assert.equals(1, raw():num("users().kicked2"))
    end)

    it("kick(conn id) closes only that connection, with reason kicked by default", function()
      local k1 = ws({ token = "kick-3", device = "a" })
      local k2 = ws({ token = "kick-3", device = "b" })
      local id = tonumber(k1.welcome.conn)
      local a = raw()
      assert.equals(1, a:num("kick(" .. id .. ")"))
      local code, reason = client.expect_close(k1, 3)
      assert.equals(4003, code)
      assert.equals("kicked", reason)
      client.publish_ok(srv, { user = "kicked3", data = 7 })
      assert.equals(7, client.recv_message(k2).data)
      assert.equals(0, a:num("kick(" .. id .. ")"))
      assert.equals(0, a:num("kick('nobody-is-called-this')"))
    end)

    it("kick() with a bad target is an error answer", function()
      local a = raw()
      local ans = a:ask({ eval = "kick({})" })
      assert.is_false(ans.ok)
      assert.is_string(ans.error)
    end)

    it("publish({user=...}, data) reaches the user's device", function()
      local w = ws({ token = "carol", device = client.unique("pub-") })
      local marker = client.unique("admin-pub-")
      local out, err, rc = cli(sock, "publish({ user = 'carol' }, { marker = '" .. marker .. "' })")
      assert.equals(0, rc, err)
      assert.truthy(out:find("recipients = 1", 1, true), out)
      assert.truthy(out:find('channel = "user:carol"', 1, true), out)
      local m = client.recv_message(w)
      assert.equals("user:carol", m.channel)
      assert.equals(marker, m.data.marker)
    end)

    it("publish(channel, data) reaches a subscriber of the channel", function()
      local ch = client.unique("adm-ch-")
      local w = ws({ token = "bob", device = client.unique("pc-"), channels = { ch } })
      local a = raw()
      a:eval("publish('" .. ch .. "', { n = 5 })")
      local m = client.recv_message(w)
      assert.equals(ch, m.channel)
      assert.equals(5, m.data.n)
    end)

    it("history(channel) shows the retained messages decoded, with the seqs", function()
      local ch = client.unique("hist-")
      client.publish_ok(srv, { channel = ch, data = { n = 1 } })
      client.publish_ok(srv, { channel = ch, data = { n = 2 } })
      local a = raw()
      assert.equals(2, a:num("history('" .. ch .. "').last_seq"))
      assert.equals(1, a:num("history('" .. ch .. "').first_seq"))
      assert.equals(2, a:num("#history('" .. ch .. "').messages"))
      assert.equals(2, a:num("history('" .. ch .. "').messages[2].data.n"))
      assert.equals(2, a:num("history('" .. ch .. "', 1).messages[1].seq"))
      local out, err, rc = cli(sock, "history('" .. ch .. "')")
      assert.equals(0, rc, err)
      assert.truthy(out:find("epoch = ", 1, true), out)
      assert.truthy(out:find("n = 2", 1, true), out)
    end)

    it("log_level('debug') sets the level that log_level() then reports", function()
      local a = raw()
      finally(function() pcall(a.eval, a, "log_level('info')") end)
      assert.equals('"info"', trim(a:eval("log_level()")))
      a:eval("log_level('debug')")
      assert.equals('"debug"', trim(a:eval("log_level()")))
      local out, err, rc = cli(sock, "log_level()")
      assert.equals(0, rc, err)
      assert.equals('"debug"', trim(out))
      -- an unknown level is refused and changes nothing
      local bad = a:eval("(function() local ok, why = log_level('loud') return tostring(ok) .. ' | ' .. tostring(why) end)()")
      assert.truthy(bad:find('"nil | log levels', 1, true), bad)
      assert.equals('"debug"', trim(a:eval("log_level()")))
      a:eval("log_level('info')")
      assert.equals('"info"', trim(a:eval("log_level()")))
    end)

    it("aborts an infinite loop with an error naming the budget; the server answers at once after", function()
      local a = raw()
      local t0 = client.now()
      local ans = a:ask({ eval = "while true do end" }, 10)
      local took = client.now() - t0
      assert.is_false(ans.ok)
      assert.truthy(tostring(ans.error):lower():find("budget", 1, true), cjson.encode(ans))
      assert.is_true(took < 5, string.format("the loop ran %.2fs before it was aborted", took))
      t0 = client.now()
      assert.truthy(health_ok(srv))
      assert.is_true(client.now() - t0 < 1, "/health slow after the aborted loop")
      -- the same admin session still works
      assert.equals(4, a:num("2 + 2"))
      -- and through the client: exit 1, message on stderr
      local out, err, rc = cli(sock, "while true do end")
      assert.equals(1, rc, out .. err)
      assert.truthy(err:lower():find("budget", 1, true), err)
      client.assert_serves(srv)
    end)

    it("keeps session globals between lines of one session only", function()
      local a = raw()
      a:eval("session_value = 41")
      assert.equals(42, a:num("session_value + 1"))
    end)

    it("shows the other API functions: help(), routes(), plugins()", function()
      local out, err, rc = cli(sock, { "help()", "routes()", "plugins()" })
      assert.equals(0, rc, err)
      assert.truthy(out:find("kick", 1, true), out)
      assert.truthy(out:find('path = "/publish"', 1, true), out)
      assert.truthy(out:find('"auth_token"', 1, true), out)
    end)
  end)

  describe("wire protocol", function()
    it("answers an expression with ok and the printed output", function()
      local a = raw()
      local ans = a:ask({ eval = "6 * 7" })
      assert.same({ ok = true, output = "42" }, ans)
    end)

    it("answers a statement with ok and empty output", function()
      local a = raw()
      local ans = a:ask({ eval = "local z = 1" })
      assert.is_true(ans.ok)
      assert.equals("", ans.output)
    end)

    it("answers an unfinished chunk with incomplete, and the whole chunk once finished", function()
      local a = raw()
      local ans = a:ask({ eval = "function f()" })
      assert.same({ ok = false, incomplete = true }, ans)
      ans = a:ask({ eval = "function f()\n  return 'done'" })
      assert.same({ ok = false, incomplete = true }, ans)
      ans = a:ask({ eval = "function f()\n  return 'done'\nend" })
      assert.is_true(ans.ok, cjson.encode(ans))
      assert.equals('"done"', a:eval("f()"))
      -- a table and a string left open are unfinished too
      assert.same({ ok = false, incomplete = true }, a:ask({ eval = "t = {" }))
      assert.same({ ok = false, incomplete = true }, a:ask({ eval = "s = [[abc" }))
    end)

    it("answers a syntax error with ok=false and the message, and keeps the connection", function()
      local a = raw()
      local ans = a:ask({ eval = "return = 1" })
      assert.is_false(ans.ok)
      assert.is_nil(ans.incomplete)
      assert.is_string(ans.error)
      assert.equals(3, a:num("1 + 2"))
    end)

    it("completes names: 'sta' offers stats(", function()
      local a = raw()
      local ans = a:ask({ complete = "sta" })
      assert.is_true(ans.ok)
      assert.is_table(ans.candidates)
      local found = false
      for _, c in ipairs(ans.candidates) do
        assert.equals("sta", c:sub(1, 3))
        if c == "stats(" then found = true end
      end
      assert.is_true(found, cjson.encode(ans))
      -- table.field paths
      ans = a:ask({ complete = "string.re" })
      assert.is_true(ans.ok)
      local has_rep = false
      for _, c in ipairs(ans.candidates) do
        assert.equals("string.re", c:sub(1, 9))
        if c == "string.rep(" then has_rep = true end
      end
      assert.is_true(has_rep, cjson.encode(ans))
    end)

    it("answers a line that is not a JSON object with ok=false, and goes on", function()
      local a = raw()
      local ans = a:ask("this is not json")
      assert.is_false(ans.ok)
      assert.is_string(ans.error)
      ans = a:ask({ nothing = "known" })
      assert.is_false(ans.ok)
      assert.equals(5, a:num("2 + 3"))
    end)

    it("serves several admin connections at once", function()
      local a, b = raw(), raw()
      a:eval("shared_probe = 1")
      assert.equals(9, b:num("4 + 5"))
      assert.equals(2, a:num("shared_probe + 1"))
    end)
  end)
end)

---------------------------------------------------------------------------
-- reload() with a broken plugin: its own server, plugin copied to a temp dir
---------------------------------------------------------------------------

-- reload()'s two results as one printed string: "ok-or-summary | why"
local RELOAD_BOTH = "(function() local ok, why = reload() return tostring(ok) .. ' | ' .. tostring(why) end)()"

describe("moonpush admin reload()", function()
  local srv, sock, dir, plugin_file
  local open = session.tracker()

  before_each(function()
    dir = mkdtemp()
    plugin_file = dir .. "/ops_auth.lua"
    writefile(plugin_file, readfile(FIXTURES .. "/ops_auth.lua"))
    srv = server.start({
      plugin_path = { dir, ROOT .. "/plugins" },
      routes = ops_routes({ { name = "ops_auth", config = { tokens = copy(TOKENS) } } }),
    })
    sock = srv.dir .. "/moonpush-admin.sock"
  end)

  after_each(function()
    open:close_all()
    local s = srv
    srv = nil
    util.rm_rf(dir)
    session.stop(s)
  end)

  it("refuses a plugin file with a syntax error, shows why, and the old plugin keeps serving", function()
    local before = open:ws(srv, { token = "bob", device = "before" })
    assert.equals("ops-v1", before.welcome.kind)

    local src = readfile(plugin_file)
    writefile(plugin_file, (src:gsub('local VERSION = "ops%-v1"', 'local VERSION = = "ops-v2"')))
    -- reload() returns nil, why (both made visible: see the next test for
    -- how the REPL prints a bare reload())
    local out, err, rc = cli(sock, RELOAD_BOTH)
    assert.equals(0, rc, out .. err)
    assert.truthy(out:find('"nil | ', 1, true), "reload() did not return nil: " .. out)
    assert.truthy(out:find("ops_auth", 1, true), "the reason does not name the plugin: " .. out)
    assert.truthy(out:find("unexpected symbol", 1, true), "the reason does not give the syntax error: " .. out)

    -- the old version keeps serving: open connection and new handshakes
    local after = open:ws(srv, { token = "bob", device = "after" })
    assert.equals("ops-v1", after.welcome.kind)
    client.publish_ok(srv, { user = "bob", data = "still-on" })
    assert.equals("still-on", client.recv_message(before).data)
    assert.equals("still-on", client.recv_message(after).data)

    -- a good version reloads: reload() returns a summary, new handshakes use it
    writefile(plugin_file, (src:gsub('"ops%-v1"', '"ops-v2"')))
    out, err, rc = cli(sock, "reload()")
    assert.equals(0, rc, out .. err)
    assert.truthy(out:match('^%s*"'), "reload() of a good plugin did not return a summary: " .. out)
    local fresh = open:ws(srv, { token = "bob", device = "fresh" })
    assert.equals("ops-v2", fresh.welcome.kind)
    -- nothing was dropped
    client.publish_ok(srv, { user = "bob", data = "after-reload" })
    assert.equals("after-reload", client.recv_message(before).data)
  end)

  it("prints nil and the reason when reload() is refused (a bare `reload()` typed)", function()
    local src = readfile(plugin_file)
    writefile(plugin_file, (src:gsub('local VERSION = "ops%-v1"', 'local VERSION = = "ops-v2"')))
    local out, err, rc = cli(sock, "reload()")
    assert.equals(0, rc, out .. err)
    -- docs: "returns the summary of changes, or nil, why"; an expression is printed
    assert.truthy(out:match("^%s*nil"), "reload() printed " .. string.format("%q", out) .. " instead of nil, why")
    assert.truthy(out:find("ops_auth", 1, true), "the reason is not shown: " .. string.format("%q", out))
  end)

  it("refuses a broken config file, shows why, and the running config stays", function()
    local original = readfile(srv.cfgfile)
    writefile(srv.cfgfile, (original:gsub('"/health"', '"no-slash"', 1)))
    local out, err, rc = cli(sock, RELOAD_BOTH)
    assert.equals(0, rc, out .. err)
    assert.truthy(out:find('"nil | ', 1, true), out)
    assert.truthy(out:find("path", 1, true), out)
    assert.truthy(health_ok(srv))
    local a = admin_connect({ path = sock })
    assert.equals(1, a:num("stats().reload_failures"))
    a:close()
    writefile(srv.cfgfile, original)
  end)
end)

---------------------------------------------------------------------------
-- TCP admin with a token
---------------------------------------------------------------------------

describe("moonpush admin over TCP", function()
  local srv, port
  local TOKEN = "tcp-admin-token-0123456789"

  lazy_setup(function()
    port = server.free_port()
    srv = server.start({ admin = { listen = "127.0.0.1:" .. port, token = TOKEN } })
  end)

  lazy_teardown(function()
    if srv then session.stop(srv) end
  end)

  it("refuses a wrong token: ok=false, then the connection is closed", function()
    local a = admin_connect({ port = port })
    finally(function() a:close() end)
    local ans = a:ask({ token = "wrong-token-wrong-token" })
    assert.is_false(ans.ok)
    assert.equals("bad token", ans.error)
    assert.is_true(a:closed_within(3), "connection still open after a bad token")
  end)

  it("refuses an eval before the token, and closes", function()
    local a = admin_connect({ port = port })
    finally(function() a:close() end)
    local ans = a:ask({ eval = "stats()" })
    assert.is_false(ans.ok)
    assert.is_nil(ans.output)
    assert.is_true(a:closed_within(3))
  end)

  it("accepts the right token, then evaluates", function()
    local a = admin_connect({ port = port })
    finally(function() a:close() end)
    assert.same({ ok = true }, a:ask({ token = TOKEN }))
    assert.equals(42, a:num("40 + 2"))
  end)

  it("works through the client with --tcp and --token; a wrong token exits 2", function()
    local base = shq(server.BIN) .. " admin --tcp 127.0.0.1:" .. port .. " --token "
    local out, err, rc = run(base .. shq(TOKEN) .. " -e " .. shq("users()"))
    assert.equals(0, rc, out .. err)
    assert.equals("{}", trim(out))
    out, err, rc = run(base .. shq("not-the-token-at-all") .. " -e " .. shq("users()"))
    assert.equals(2, rc, out .. err)
    assert.truthy(err:find("bad token", 1, true), err)
    assert.truthy(health_ok(srv))
  end)
end)

---------------------------------------------------------------------------
-- TCP admin: failed logins are limited per address and logged
---------------------------------------------------------------------------

describe("moonpush admin over TCP, failed logins", function()
  local srv, port
  local TOKEN = "tcp-admin-token-0123456789"

  before_each(function()
    port = server.free_port()
    srv = server.start({ admin = { listen = "127.0.0.1:" .. port, token = TOKEN } })
  end)

  after_each(function()
    if srv then session.stop(srv) end
  end)

  -- One login on a fresh connection: the answer, and whether it was closed.
  local function login(token)
    local a = admin_connect({ port = port })
    finally(function() a:close() end)
    local ans = a:ask({ token = token })
    return ans, ans.ok ~= true and a:closed_within(3)
  end

  -- A connection while the address is shut out: answered at once, closed.
  local function shut_out()
    local a = admin_connect({ port = port })
    finally(function() a:close() end)
    local ans, err = a:recv(3)
    assert.is_table(ans, "no answer to a shut-out connection: " .. tostring(err))
    assert.is_true(a:closed_within(3), "a shut-out connection stayed open")
    return ans
  end

  it("shuts an address out after 5 bad tokens, for a delay that grows, the right token included", function()
    for i = 1, 5 do
      local ans, closed = login("wrong-token-number-" .. i)
      assert.equals("bad token", ans.error, "attempt " .. i)
      assert.is_true(closed, "attempt " .. i)
    end
    -- 20 more at full speed: none is looked at, the right token neither
    local t0 = client.now()
    for _ = 1, 20 do
      local ans = shut_out()
      assert.is_false(ans.ok)
      assert.truthy(ans.error:find("too many failed admin logins from 127.0.0.1: retry in", 1, true), ans.error)
      assert.equals(1, ans.retry_after)
      if client.now() - t0 > 0.8 then break end
    end
    assert.equals(5, srv:log_count('msg="admin: bad token"'), "other than 5 tokens were checked")
    -- after the delay one more try: wrong again, the next delay is longer
    server.sleep(1.1)
    local ans = login("wrong-token-number-6")
    assert.equals("bad token", ans.error)
    assert.equals(2, shut_out().retry_after)
    server.sleep(2.1)
    -- the right token gets in and clears the record: 5 free failures again
    local ok = login(TOKEN)
    assert.same({ ok = true }, ok)
    for i = 1, 4 do assert.equals("bad token", (login("again-" .. i)).error) end
    assert.equals("bad token", (login("again-5")).error)
    assert.equals(1, shut_out().retry_after)
  end)

  it("keeps the right token working below the limit", function()
    for i = 1, 4 do assert.equals("bad token", (login("wrong-" .. i)).error) end
    local a = admin_connect({ port = port })
    finally(function() a:close() end)
    assert.same({ ok = true }, a:ask({ token = TOKEN }))
    assert.equals(42, a:num("40 + 2"))
  end)

  it("logs the remote address of every login, good or bad, and of a shut-out connection", function()
    login("wrong-token-for-the-log")
    local line = srv:wait_log('msg="admin: bad token"', 0)
    assert.truthy(line:match("remote=127%.0%.0%.1:%d+"), line)
    assert.truthy(line:find("failures=1", 1, true), line)
    login(TOKEN)
    line = srv:wait_log('msg="admin: authenticated"', 0)
    assert.truthy(line:match("remote=127%.0%.0%.1:%d+"), line)
    for i = 1, 5 do login("wrong-" .. i) end
    shut_out()
    line = srv:wait_log("too many failures", 0)
    assert.truthy(line:match("remote=127%.0%.0%.1:%d+"), line)
    assert.truthy(line:find("retry_in=1", 1, true), line)
  end)
end)

---------------------------------------------------------------------------
-- config validation of the admin section
---------------------------------------------------------------------------

describe("moonpush admin config", function()
  local dir

  before_each(function() dir = mkdtemp() end)
  after_each(function() util.rm_rf(dir) end)

  local function check(admin)
    local cfg = server.default_config()
    cfg.listen = "127.0.0.1:" .. server.free_port()
    cfg.admin = admin
    local path = dir .. "/moonpush.lua"
    writefile(path, "return " .. server.serialize(cfg) .. "\n")
    return run(shq(server.BIN) .. " --check-config " .. shq(path))
  end

  it("refuses admin.listen on a non-loopback address", function()
    local out, err, rc = check({ listen = "0.0.0.0:" .. server.free_port(), token = "0123456789abcdef-long" })
    assert.equals(1, rc, out .. err)
    assert.truthy((out .. err):find("loopback", 1, true), out .. err)
  end)

  it("refuses admin.listen without a token of 16+ characters", function()
    local out, err, rc = check({ listen = "127.0.0.1:" .. server.free_port(), token = "short" })
    assert.equals(1, rc, out .. err)
    assert.truthy((out .. err):find("admin.token", 1, true), out .. err)
  end)

  it("accepts admin.listen on loopback with a long token", function()
    local out, err, rc = check({ listen = "127.0.0.1:" .. server.free_port(), token = "0123456789abcdef-long" })
    assert.equals(0, rc, out .. err)
  end)

  it("refuses a non-loopback admin.listen at start: exit 1 with a message", function()
    local cfg = server.default_config()
    cfg.listen = "127.0.0.1:" .. server.free_port()
    cfg.admin = { listen = "0.0.0.0:" .. server.free_port(), token = "0123456789abcdef-long" }
    local path = dir .. "/moonpush.lua"
    writefile(path, "return " .. server.serialize(cfg) .. "\n")
    local out, err, rc = run(shq(server.BIN) .. " -c " .. shq(path))
    assert.equals(1, rc, out .. err)
    assert.truthy((out .. err):find("loopback", 1, true), out .. err)
  end)
end)
