-- Integration: a refused config leaks nothing (issue 10, item 11). main()
-- returned without closing the Lua state, so LeakSanitizer reported
-- lua-cjson's encode buffer (1,023 bytes) each time a config was refused.
-- Meaningful against a sanitized server (`make check-asan` runs every spec
-- with MOONPUSH_BIN=build-asan/moonpush); with a plain build it is pending.
local server = require "helpers.server"
local util = require "helpers.util"

local shq = util.shq

local function sanitized()
  local p = io.popen("ldd " .. shq(server.BIN) .. " 2>/dev/null")
  local out = p:read("*a")
  p:close()
  return out:find("libasan", 1, true) ~= nil
end

-- Runs the server on a config with `edit` applied, leak checks on and the
-- reports on stderr; returns what it printed and its exit code.
local function run(args_fn, edit)
  local dir = util.mkdtemp("moonpush-leak")
  local cfg = server.default_config()
  cfg.listen = "127.0.0.1:" .. server.free_port()
  edit(cfg)
  local path = dir .. "/moonpush.lua"
  util.write_file(path, "return " .. server.serialize(cfg) .. "\n")
  local p = io.popen(string.format(
    "ASAN_OPTIONS=detect_leaks=1:log_path=stderr LSAN_OPTIONS= timeout -k 2 30 %s %s 2>&1; echo \"__rc=$?\"",
    shq(server.BIN), args_fn(path)))
  local out = p:read("*a")
  p:close()
  util.rm_rf(dir)
  return (out:gsub("__rc=%d+%s*$", "")), tonumber(out:match("__rc=(%d+)%s*$"))
end

describe("moonpush refused config", function()
  local cases = {
    { "at --check-config", function(path) return "--check-config " .. shq(path) end },
    { "at start", function(path) return "-c " .. shq(path) end },
  }
  for _, case in ipairs(cases) do
    it("leaks nothing when refused " .. case[1], function()
      if not sanitized() then
        pending("needs a sanitized server (make check-asan)")
        return
      end
      local out, rc = run(case[2], function(c) c.routes[1].path = "no-slash" end)
      assert.equals(1, rc, out)
      assert.truthy(out:find("invalid config", 1, true), out)
      assert.is_nil(out:find("LeakSanitizer", 1, true), out)
    end)
  end
end)
