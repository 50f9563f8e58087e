-- Integration: loading a config runs under an instruction budget
-- (docs/operations.md, "Config file"). A config or plugin file whose code
-- never ends is refused with a message instead of hanging `--check-config`,
-- the start, a SIGHUP reload or a plugin hot reload; the running server goes
-- on serving. Found by the config fuzz harness (fuzz/config.c): these
-- inputs are also its regressions (fuzz/regressions/config/).
local server = require "helpers.server"
local client = require "helpers.client"
local util = require "helpers.util"
local session = require "helpers.session"

local shq, mkdtemp, writefile, readfile = util.shq, util.mkdtemp, util.write_file, util.read_file
local replace = util.replace_file

local LIMIT = 20   -- seconds any command here may take before it counts as a hang

-- Runs a command line with a time limit; returns its output and exit code
-- (124: timeout(1) had to stop it).
local function run(cmdline)
  local dir = mkdtemp("moonpush-budget")
  local p = io.popen(string.format("timeout -k 2 %d %s >%s 2>&1 </dev/null; echo $?", LIMIT, cmdline,
    shq(dir .. "/out")))
  local rc = tonumber(p:read("*a"):match("(%d+)%s*$"))
  p:close()
  local out = readfile(dir .. "/out")
  util.rm_rf(dir)
  return out, rc
end

-- A valid config (the specs' default) with `prelude` run first.
local function config_text(prelude, over)
  local cfg = server.merge(server.default_config(), over)
  cfg.listen = (over and over.listen) or ("127.0.0.1:" .. server.free_port())
  return prelude .. "\nreturn " .. server.serialize(cfg) .. "\n"
end

local NEVER_ENDS = {
  ["a loop"] = "local i = 0 while true do i = i + 1 end",
  ["a tail call"] = "local function f() return f() end f()",
  ["a loop in a metamethod"] = "local t = setmetatable({}, { __index = function() while true do end end }) local _ = t.x",
}

describe("moonpush config budget", function()
  local dir

  before_each(function() dir = mkdtemp("moonpush-budget") end)
  after_each(function() util.rm_rf(dir) end)

  for what, code in pairs(NEVER_ENDS) do
    it("refuses a config that never ends (" .. what .. ") with --check-config, exit 1", function()
      local path = dir .. "/moonpush.lua"
      writefile(path, config_text(code))
      local out, rc = run(shq(server.BIN) .. " --check-config " .. shq(path))
      assert.equals(1, rc, out)
      assert.truthy(out:find("instruction budget", 1, true), out)
    end)
  end

  it("refuses to start with a config that never ends", function()
    local path = dir .. "/moonpush.lua"
    writefile(path, config_text(NEVER_ENDS["a loop"]))
    local out, rc = run(shq(server.BIN) .. " -c " .. shq(path))
    assert.equals(1, rc, out)
    assert.truthy(out:find("instruction budget", 1, true), out)
  end)

  it("refuses a plugin whose file never ends at load", function()
    writefile(dir .. "/spin.lua", "while true do end\nreturn { auth = function() return {} end }\n")
    local path = dir .. "/moonpush.lua"
    writefile(path, config_text("", {
      plugin_path = { dir, server.PLUGIN_DIR },
      routes = { { path = "/spin", type = "publish", plugins = { { name = "spin" } } } },
    }))
    local out, rc = run(shq(server.BIN) .. " --check-config " .. shq(path))
    assert.equals(1, rc, out)
    assert.truthy(out:find("instruction budget", 1, true), out)
  end)

  it("loads a config that computes a lot, but ends", function()
    -- 200,000 generated tokens: far more work than any real config does
    local path = dir .. "/moonpush.lua"
    writefile(path, config_text("local n = 0 for i = 1, 200000 do n = n + #tostring(i) end assert(n > 0)"))
    local out, rc = run(shq(server.BIN) .. " --check-config " .. shq(path))
    assert.equals(0, rc, out)
  end)
end)

describe("moonpush reloads under the budget", function()
  local srv, dir

  before_each(function()
    dir = mkdtemp("moonpush-budget")
    writefile(dir .. "/spin_auth.lua", readfile(server.PLUGIN_DIR .. "/auth_token.lua"))
    srv = server.start({
      plugin_path = { dir, server.PLUGIN_DIR },
      routes = {
        { path = "/ws", type = "websocket",
          plugins = { { name = "spin_auth", config = { tokens = server.TOKENS } } } },
        { path = "/health", type = "health" },
      },
    })
  end)

  after_each(function()
    local s = srv
    srv = nil
    session.stop_and_remove(s, dir)
  end)

  local function still_serves()
    assert.equals(200, (client.http(srv, "/health")))
    local ws = client.ws(srv, { token = "bob" })
    assert.equals("bob", ws.welcome.user)
    client.close(ws)
  end

  it("refuses a SIGHUP reload of a config that never ends, and goes on serving", function()
    local before = srv:log_count("config reload refused")
    replace(srv.cfgfile, config_text(NEVER_ENDS["a loop"], { listen = srv.config.listen }))
    assert.is_true(srv:signal("HUP"))
    local line = srv:wait_log("config reload refused", before, 10)
    assert.truthy(line:find("instruction budget", 1, true), line)
    still_serves()
  end)

  it("refuses a hot reload of a plugin file that never ends, and goes on serving", function()
    local before = srv:log_count("plugin reload refused")
    replace(dir .. "/spin_auth.lua", "while true do end\n" .. readfile(server.PLUGIN_DIR .. "/auth_token.lua"))
    local line = srv:wait_log("plugin reload refused", before, 10)
    assert.truthy(line:find("instruction budget", 1, true), line)
    still_serves()
  end)
end)
