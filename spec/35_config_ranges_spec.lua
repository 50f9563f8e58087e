-- Integration: config numbers past what the C side can hold are refused
-- with their range (docs/operations.md, "Config"), at `--check-config` as at
-- start, instead of turning into whatever the conversion gives (undefined in
-- C; on x86 max_connections = 1e10 became INT_MIN and the server refused
-- every connection). Found by the config fuzz harness (fuzz/config.c, UBSan
-- float-cast-overflow in lua_host.c read_limits); fuzz/regressions/config/
-- keeps its input.
local server = require "helpers.server"
local util = require "helpers.util"

local shq, mkdtemp, writefile, readfile = util.shq, util.mkdtemp, util.write_file, util.read_file

local LIMIT = 20

local function run(cmdline)
  local dir = mkdtemp("moonpush-ranges")
  local p = io.popen(string.format("timeout -k 2 %d %s >%s 2>&1 </dev/null; echo $?", LIMIT, cmdline,
    shq(dir .. "/out")))
  local rc = tonumber(p:read("*a"):match("(%d+)%s*$"))
  p:close()
  local out = readfile(dir .. "/out")
  util.rm_rf(dir)
  return out, rc
end

-- The specs' default config with `edit(cfg)` applied, through --check-config.
local function check(edit)
  local dir = mkdtemp("moonpush-ranges")
  local cfg = server.default_config()
  cfg.listen = "127.0.0.1:" .. server.free_port()
  edit(cfg)
  writefile(dir .. "/moonpush.lua", "return " .. server.serialize(cfg) .. "\n")
  local out, rc = run(shq(server.BIN) .. " --check-config " .. shq(dir .. "/moonpush.lua"))
  util.rm_rf(dir)
  return out, rc
end

local INT_MAX = 2147483647

-- what to set, and a word of the message that must name it
local TOO_BIG = {
  { "max_connections", function(c) c.max_connections = 1e10 end, "max_connections" },
  { "plugin_budget", function(c) c.plugin_budget = 2 ^ 31 end, "plugin_budget" },
  { "limits.max_header_bytes", function(c) c.limits.max_header_bytes = 8.1e27 end, "limits.max_header_bytes" },
  { "limits.socket_send_buffer", function(c) c.limits.socket_send_buffer = 2 ^ 40 end, "limits.socket_send_buffer" },
  { "timeouts.idle_ms", function(c) c.timeouts.idle_ms = 1e300 end, "timeouts.idle_ms" },
  { "a route's budget", function(c) c.routes[1].budget = 1e12 end, ".budget" },
  { "a route's acks.max_tries", function(c) c.routes[1].acks = { max_tries = 1e11 } end, "acks.max_tries" },
  { "history.max_messages", function(c) c.history = { max_messages = 5e9 } end, "history.max_messages" },
  { "history.max_age_ms", function(c) c.history = { max_age_ms = 1e300 } end, "history.max_age_ms" },
  { "a history policy's max_age_ms", function(c)
      c.history = { channels = { { pattern = "x*", max_age_ms = 1e300 } } }
    end, "history.channels[1]" },
}

describe("moonpush config ranges", function()
  for _, case in ipairs(TOO_BIG) do
    local what, edit, word = case[1], case[2], case[3]
    it("refuses " .. what .. " past what the server can hold, naming it", function()
      local out, rc = check(edit)
      assert.equals(1, rc, out)
      assert.truthy(out:find(word, 1, true), out)
    end)
  end

  it("accepts the largest int values, and 64-bit sized history values", function()
    local out, rc = check(function(c)
      c.max_connections = INT_MAX
      c.plugin_budget = INT_MAX
      c.limits.max_channels = INT_MAX
      c.timeouts = { request_ms = INT_MAX, ping_ms = INT_MAX - 1, idle_ms = INT_MAX }
      c.routes[1].budget = INT_MAX
      c.history = { max_messages = 1000000, max_age_ms = 4e15, max_bytes = 4e15 }
    end)
    assert.equals(0, rc, out)
  end)

  it("refuses to start with max_connections past the range, instead of refusing every connection", function()
    local dir = mkdtemp("moonpush-ranges")
    local cfg = server.default_config()
    cfg.listen = "127.0.0.1:" .. server.free_port()
    cfg.max_connections = 1e10
    writefile(dir .. "/moonpush.lua", "return " .. server.serialize(cfg) .. "\n")
    local out, rc = run(shq(server.BIN) .. " -c " .. shq(dir .. "/moonpush.lua"))
    util.rm_rf(dir)
    assert.equals(1, rc, out)
    assert.truthy(out:find("max_connections must be an integer from 1 to 2147483647", 1, true), out)
  end)
end)
