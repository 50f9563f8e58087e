-- Integration: `make install` into a staging DESTDIR with PREFIX=/usr, then
-- the installed binary runs with the installed example config from cwd /
-- (nothing of the source tree on its way: MOONPUSH_LUA_DIR unset), loads the
-- installed Lua runtime and bundled plugins, answers /health and publishes;
-- the systemd unit verifies; `make uninstall` removes all but the config.
-- docs/operations.md "Install and run as a service".
local server = require "helpers.server"
local client = require "helpers.client"
local util = require "helpers.util"

local shq = util.shq
local ROOT = server.ROOT

local run = util.run

-- make, not the make running `make test`: its jobserver flags stay out.
-- -o moonpush: install the binary the other specs test, never rebuild it
-- here (a sanitized run's CFLAGS would not reach this make).
local function make(target, dest)
  return run(string.format("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -o moonpush -C %s %s DESTDIR=%s PREFIX=/usr",
    shq(ROOT), target, shq(dest)))
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

describe("make install", function()
  local dest, rundir, bin, cfgfile, logfile, pid, port
  local srv   -- { port } for helpers.client

  lazy_setup(function()
    dest = util.mkdtemp("moonpush-install")
    rundir = util.mkdtemp("moonpush-run")
    local out, rc = make("install", dest)
    assert.equals(0, rc, out)
    bin = dest .. "/usr/bin/moonpush"
    -- The installed example config, on a free loopback port instead of
    -- 0.0.0.0:8080, next to the original so relative paths stay the same.
    local text = util.read_file(dest .. "/etc/moonpush/moonpush.lua")
    port = server.free_port()
    local n
    text, n = text:gsub('listen = "0%.0%.0%.0:8080"', 'listen = "127.0.0.1:' .. port .. '"')
    assert.equals(1, n, "the example config's listen line moved: update this spec")
    cfgfile = dest .. "/etc/moonpush/spec.lua"
    util.write_file(cfgfile, text)
    logfile = rundir .. "/moonpush.log"
    -- As the service starts it: RUNTIME_DIRECTORY holds the admin socket.
    local p = io.popen(string.format(
      "cd / && env -u MOONPUSH_LUA_DIR RUNTIME_DIRECTORY=%s %s -c %s >%s 2>&1 </dev/null & echo $!",
      shq(rundir), shq(bin), shq(cfgfile), shq(logfile)))
    pid = tonumber(p:read("*l"))
    p:close()
    local deadline = client.now() + server.START_TIMEOUT
    while client.now() < deadline and not server.port_open(port) do server.sleep(0.02) end
    assert.is_true(server.port_open(port), "installed server did not start:\n" .. (util.try_read_file(logfile) or ""))
    srv = { port = port }
  end)

  lazy_teardown(function()
    if pid then
      os.execute("kill -TERM " .. pid .. " 2>/dev/null")
      local deadline = client.now() + server.STOP_TIMEOUT
      local function alive()
        local ok = os.execute("kill -0 " .. pid .. " 2>/dev/null")
        return ok == true or ok == 0
      end
      while client.now() < deadline and alive() do
        server.sleep(0.02)
      end
      os.execute("kill -KILL " .. pid .. " 2>/dev/null")
    end
    if dest then util.rm_rf(dest) end
    if rundir then util.rm_rf(rundir) end
  end)

  it("puts the binary, Lua runtime, plugins, example config and unit under DESTDIR", function()
    for _, f in ipairs({ "/usr/bin/moonpush", "/usr/share/moonpush/lua/moonpush/core.lua",
                         "/usr/share/moonpush/lua/moonpush/config.lua",
                         "/usr/share/moonpush/plugins/auth_token.lua", "/usr/share/moonpush/plugins/auth_jwt.lua",
                         "/usr/share/moonpush/examples/moonpush.lua", "/usr/share/moonpush/examples/web/app.js",
                         "/usr/share/moonpush/clients/js/moonpush.js", "/usr/share/doc/moonpush/operations.md",
                         "/etc/moonpush/moonpush.lua", "/usr/lib/systemd/system/moonpush.service" }) do
      assert.is_true(exists(dest .. f), f .. " was not installed")
    end
    local unit = util.read_file(dest .. "/usr/lib/systemd/system/moonpush.service")
    assert.truthy(unit:find("ExecStart=/usr/bin/moonpush -c /etc/moonpush/moonpush.lua", 1, true), unit)
    assert.falsy(unit:find("/usr/local", 1, true), "PREFIX=/usr unit still names /usr/local")
  end)

  it("runs from / on the installed runtime: /health answers, a publish is accepted", function()
    local status, body = client.health(srv)
    assert.equals(200, status)
    assert.equals("ok", body.status)
    local answer = client.publish_ok(srv, { channel = "news", data = { text = "installed" } })
    assert.is_number(answer.seq)
  end)

  it("loads its Lua runtime and bundled plugins from the install, not the source tree", function()
    local sock = rundir .. "/moonpush-admin.sock"
    local _, is_sock = run("test -S " .. shq(sock))
    assert.equals(0, is_sock, "no admin socket in RUNTIME_DIRECTORY")
    local out, rc = run(string.format("timeout 10 %s admin %s -e %s", shq(bin), shq(sock),
      shq('package.searchpath("moonpush.core", package.path)')))
    assert.equals(0, rc, out)
    assert.truthy(out:find(dest .. "/usr/bin/../share/moonpush/lua/moonpush/core.lua", 1, true), out)
    out, rc = run(string.format("timeout 10 %s admin %s -e %s", shq(bin), shq(sock), shq("plugins()[1].file")))
    assert.equals(0, rc, out)
    assert.truthy(out:find("/share/moonpush/plugins/auth_token.lua", 1, true), out)
    assert.falsy(out:find(ROOT, 1, true), out)
  end)

  it("validates the installed config as is, from /", function()
    local out, rc = run(string.format("cd / && env -u MOONPUSH_LUA_DIR %s --check-config %s",
      shq(bin), shq(dest .. "/etc/moonpush/moonpush.lua")))
    assert.equals(0, rc, out)
  end)

  it("ships a unit that systemd-analyze verify accepts (when systemd-analyze is there)", function()
    local _, has = run("command -v systemd-analyze")
    if has ~= 0 then return end
    -- verify checks that ExecStart's binary exists: point it at the staged one.
    local unit = util.read_file(dest .. "/usr/lib/systemd/system/moonpush.service")
    local staged = rundir .. "/moonpush.service"
    util.write_file(staged, (unit:gsub("/usr/bin/moonpush", bin)))
    local out, rc = run("systemd-analyze verify " .. shq(staged))
    assert.equals(0, rc, out)
    assert.equals("", out, "systemd-analyze verify complained")
  end)

  it("keeps an existing config on reinstall; uninstall leaves only the config", function()
    util.write_file(dest .. "/etc/moonpush/moonpush.lua", "-- mine\n" .. util.read_file(cfgfile))
    local out, rc = make("install", dest)
    assert.equals(0, rc, out)
    assert.matches("^%-%- mine\n", util.read_file(dest .. "/etc/moonpush/moonpush.lua"))
    out, rc = make("uninstall", dest)
    assert.equals(0, rc, out)
    assert.is_false(exists(bin))
    assert.is_false(exists(dest .. "/usr/share/moonpush/lua/moonpush/core.lua"))
    assert.is_false(exists(dest .. "/usr/lib/systemd/system/moonpush.service"))
    assert.is_true(exists(dest .. "/etc/moonpush/moonpush.lua"))
  end)
end)
