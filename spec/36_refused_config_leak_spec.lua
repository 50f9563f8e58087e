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

-- Leak checks on, the reports on stderr (not into files, not suppressed).
local LEAK_ENV = "ASAN_OPTIONS=detect_leaks=1:log_path=stderr LSAN_OPTIONS="

describe("moonpush refused config", function()
  local cases = {
    { "at --check-config", "--check-config %s" },
    { "at start", "-c %s" },
  }
  for _, case in ipairs(cases) do
    it("leaks nothing when refused " .. case[1], function()
      if not sanitized() then
        pending("needs a sanitized server (make check-asan)")
        return
      end
      local out, rc = server.run_config(function(c) c.routes[1].path = "no-slash" end, case[2], LEAK_ENV)
      assert.equals(1, rc, out)
      assert.truthy(out:find("invalid config", 1, true), out)
      assert.is_nil(out:find("LeakSanitizer", 1, true), out)
    end)
  end
end)
