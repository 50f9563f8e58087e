-- Unit spec for plugins/ratelimit.lua (no server), against the real C
-- token buckets of moonpush.limit. Every test uses its own route names so
-- buckets never leak between tests.

local moonpush = require "moonpush"
local unit = require "helpers.plugin_unit"

local PLUGIN = "plugins/ratelimit.lua"

local serial = 0
local function fresh_route()
  serial = serial + 1
  return "/rl" .. serial .. "-" .. math.floor(moonpush.now())
end

local function ctx(phase, route, extra)
  local c = { phase = phase, route = route, remote_addr = "10.0.0.1:5123", ip = "10.0.0.1" }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

-- Calls the hook n times; returns how many were allowed and the last denial.
local function hit(plugin, n, c, conf)
  local allowed, denial = 0, nil
  for _ = 1, n do
    local ok, err = plugin.ratelimit(c, conf)
    if err then denial = err else allowed = allowed + 1 assert.is_nil(ok) end
  end
  return allowed, denial
end

describe("ratelimit", function()
  local plugin

  before_each(function()
    plugin = dofile(PLUGIN)
  end)

  describe("its options", function()
    it("accept each kind of limit alone and all together", function()
      for _, k in ipairs({ "per_ip", "per_user", "per_publisher", "per_token" }) do
        assert.same({ [k] = { rate = 1, burst = 1 } }, unit.accepts(plugin, { [k] = { rate = 1, burst = 1 } }))
      end
      unit.accepts(plugin, {
        per_ip = { rate = 0.5, burst = 10 }, per_user = { rate = 5, burst = 5 },
        per_publisher = { rate = 100, burst = 200 }, per_token = { rate = 1, burst = 2 },
        phases = { "connect", "message" }, scope = "shared",
      })
    end)

    local bad = {
      { "a config without any limit", {}, "set at least one of per_ip, per_token, per_user, per_publisher" },
      { "a limit that is not a table", { per_ip = 5 }, 'option "per_ip" must be a table, got 5' },
      { "a zero rate", { per_ip = { rate = 0, burst = 1 } },
        'option "per_ip.rate" must be a number of events per second > 0, got 0' },
      { "a negative rate", { per_ip = { rate = -1, burst = 1 } }, 'option "per_ip.rate" must be' },
      { "an infinite rate", { per_ip = { rate = math.huge, burst = 1 } }, "got inf" },
      { "a missing burst", { per_ip = { rate = 1 } }, 'option "per_ip.burst" is required (a number >= 1)' },
      { "a burst below 1", { per_ip = { rate = 1, burst = 0.5 } }, 'option "per_ip.burst" must be a number >= 1, got 0.5' },
      { "a misspelt limit key", { per_ip = { rat = 1, rate = 1, burst = 1 } },
        'unknown option "per_ip.rat" (did you mean "per_ip.rate"?)' },
      { "an unknown kind of limit", { per_ips = { rate = 1, burst = 1 } },
        'unknown option "per_ips" (did you mean "per_ip"?)' },
      { "an unknown phase", { per_ip = { rate = 1, burst = 1 }, phases = { "connect", "close" } },
        'option "phases[2]" must be one of "connect", "publish", "message", got "close"' },
      { "an empty phases list", { per_ip = { rate = 1, burst = 1 }, phases = {} }, 'option "phases" must be a non-empty list' },
      { "phases given as a string", { per_ip = { rate = 1, burst = 1 }, phases = "connect" },
        'option "phases" must be a non-empty list of "connect", "publish", "message", got "connect"' },
      { "an empty scope", { per_ip = { rate = 1, burst = 1 }, scope = "" }, 'option "scope" must be a string of 1-64 bytes' },
      { "a scope over 64 bytes", { per_ip = { rate = 1, burst = 1 }, scope = string.rep("s", 65) }, 'option "scope"' },
    }
    for _, case in ipairs(bad) do
      it("refuse " .. case[1], function() unit.refuses(plugin, case[2], case[3]) end)
    end
  end)

  it("allows a burst, then denies with 429 rate_limited and a whole retry_after", function()
    local conf = { per_ip = { rate = 1, burst = 3 } }
    local allowed, denial = hit(plugin, 5, ctx("connect", fresh_route()), conf)
    assert.equal(3, allowed)
    assert.equal(429, denial.status)
    assert.equal("rate_limited", denial.code)
    assert.equal(1, denial.retry_after)
    assert.matches("ip limit", denial.message)
  end)

  it("rounds retry_after up to the next whole second", function()
    local conf = { per_ip = { rate = 0.1, burst = 1 } }
    local _, denial = hit(plugin, 2, ctx("connect", fresh_route()), conf)
    assert.equal(10, denial.retry_after)
  end)

  it("refills the bucket with time", function()
    local conf = { per_ip = { rate = 200, burst = 1 } }
    local c = ctx("publish", fresh_route())
    assert.equal(1, (hit(plugin, 2, c, conf)))
    local t = moonpush.now()
    while moonpush.now() - t < 20 do end   -- 20 ms: 4 tokens' worth, capped at 1
    assert.equal(1, (hit(plugin, 2, c, conf)))
  end)

  it("keeps a bucket per IP", function()
    local route, conf = fresh_route(), { per_ip = { rate = 1, burst = 1 } }
    assert.equal(1, (hit(plugin, 2, ctx("connect", route, { ip = "10.0.0.1" }), conf)))
    assert.equal(1, (hit(plugin, 2, ctx("connect", route, { ip = "10.0.0.2" }), conf)))
  end)

  it("takes the IP from remote_addr when ctx.ip is absent, IPv4 and IPv6", function()
    local route, conf = fresh_route(), { per_ip = { rate = 1, burst = 1 } }
    local a = ctx("connect", route, { remote_addr = "10.0.0.9:1111" }) a.ip = nil
    local b = ctx("connect", route, { remote_addr = "10.0.0.9:2222" }) b.ip = nil
    assert.equal(1, (hit(plugin, 1, a, conf)))
    assert.equal(0, (hit(plugin, 1, b, conf)))   -- same IP, other port
    local v6a = ctx("connect", route, { remote_addr = "[::1]:1111" }) v6a.ip = nil
    local v6b = ctx("connect", route, { remote_addr = "[::1]:2222" }) v6b.ip = nil
    assert.equal(1, (hit(plugin, 1, v6a, conf)))
    assert.equal(0, (hit(plugin, 1, v6b, conf)))
  end)

  it("keeps separate buckets per route, and shares them through scope", function()
    local conf = { per_ip = { rate = 1, burst = 1 } }
    local r1, r2 = fresh_route(), fresh_route()
    assert.equal(1, (hit(plugin, 2, ctx("connect", r1), conf)))
    assert.equal(1, (hit(plugin, 2, ctx("connect", r2), conf)))
    local shared = { per_ip = { rate = 1, burst = 1 }, scope = "scope-" .. fresh_route() }
    assert.equal(1, (hit(plugin, 1, ctx("connect", fresh_route()), shared)))
    assert.equal(0, (hit(plugin, 1, ctx("connect", fresh_route()), shared)))
  end)

  it("keeps separate buckets per phase", function()
    local route, conf = fresh_route(), { per_ip = { rate = 1, burst = 2 } }
    assert.equal(2, (hit(plugin, 3, ctx("connect", route), conf)))
    assert.equal(2, (hit(plugin, 3, ctx("message", route, { user = "alice" }), conf)))
  end)

  it("applies only in the configured phases", function()
    local route = fresh_route()
    local conf = { per_ip = { rate = 1, burst = 1 }, phases = { "message" } }
    assert.equal(5, (hit(plugin, 5, ctx("connect", route), conf)))
    assert.equal(1, (hit(plugin, 5, ctx("message", route, { user = "a" }), conf)))
  end)

  it("limits per user in the message phase and skips it where no user is known", function()
    local route, conf = fresh_route(), { per_user = { rate = 1, burst = 2 } }
    assert.equal(5, (hit(plugin, 5, ctx("connect", route), conf)))
    assert.equal(2, (hit(plugin, 5, ctx("message", route, { user = "alice" }), conf)))
    assert.equal(2, (hit(plugin, 5, ctx("message", route, { user = "bob" }), conf)))
  end)

  it("limits per user across IPs", function()
    local route, conf = fresh_route(), { per_user = { rate = 1, burst = 2 } }
    assert.equal(2, (hit(plugin, 2, ctx("message", route, { user = "alice", ip = "10.1.1.1" }), conf)))
    local _, denial = hit(plugin, 1, ctx("message", route, { user = "alice", ip = "10.2.2.2" }), conf)
    assert.matches("user limit", denial.message)
  end)

  it("limits per publisher name", function()
    local route, conf = fresh_route(), { per_publisher = { rate = 1, burst = 3 } }
    assert.equal(3, (hit(plugin, 4, ctx("publish", route, { publisher = "billing" }), conf)))
    assert.equal(3, (hit(plugin, 4, ctx("publish", route, { publisher = "erp" }), conf)))
  end)

  it("limits per token", function()
    local route, conf = fresh_route(), { per_token = { rate = 1, burst = 1 } }
    assert.equal(1, (hit(plugin, 2, ctx("publish", route, { token = "t1" }), conf)))
    assert.equal(1, (hit(plugin, 2, ctx("publish", route, { token = "t2" }), conf)))
    assert.equal(3, (hit(plugin, 3, ctx("publish", route), conf)))   -- no token: skipped
  end)

  it("stops at the first limit that denies", function()
    local route = fresh_route()
    local conf = { per_ip = { rate = 1, burst = 1 }, per_publisher = { rate = 1, burst = 5 } }
    local _, denial = hit(plugin, 2, ctx("publish", route, { publisher = "p" }), conf)
    assert.matches("ip limit", denial.message)
  end)

  it("copes with values too long for a limiter key", function()
    local route, conf = fresh_route(), { per_user = { rate = 1, burst = 1 } }
    local long = string.rep("u", 300)
    assert.equal(1, (hit(plugin, 2, ctx("message", route, { user = long }), conf)))
    assert.equal(1, (hit(plugin, 1, ctx("message", route, { user = long .. "x" }), conf)))
  end)

  describe("bucket keys", function()
    local keys, real

    before_each(function()
      keys, real = {}, moonpush.limit
      moonpush.limit = function(key, rate, burst)
        keys[#keys + 1] = key
        return true
      end
      plugin = dofile(PLUGIN)   -- picks up the spy
    end)

    after_each(function()
      moonpush.limit = real
    end)

    it("are <scope>|<phase>|<kind>|<value>, checked in the order ip, token, user, publisher", function()
      plugin.ratelimit(ctx("message", "/ws", { ip = "127.0.0.1", user = "alice", token = "tok", publisher = "p" }), {
        per_ip = { rate = 1, burst = 1 }, per_user = { rate = 1, burst = 1 },
        per_publisher = { rate = 1, burst = 1 }, per_token = { rate = 1, burst = 1 },
      })
      assert.equal(4, #keys)
      assert.equal("/ws|message|ip|127.0.0.1", keys[1])
      assert.matches("^/ws|message|token|#", keys[2])
      assert.equal("/ws|message|user|alice", keys[3])
      assert.equal("/ws|message|publisher|p", keys[4])
    end)

    it("never hold the token itself", function()
      local token = "secret-token-value"
      plugin.ratelimit(ctx("connect", "/ws", { token = token }), { per_token = { rate = 1, burst = 1 } })
      assert.is_nil(keys[1]:find(token, 1, true))
      assert.equal("/ws|connect|token|#" .. moonpush.base64url_encode(moonpush.sha256(token)), keys[1])
    end)

    it("use scope instead of the route when set", function()
      plugin.ratelimit(ctx("connect", "/ws"), { per_ip = { rate = 1, burst = 1 }, scope = "all-ws" })
      assert.equal("all-ws|connect|ip|10.0.0.1", keys[1])
    end)

    it("stay within the limiter's 256 bytes", function()
      plugin.ratelimit(ctx("message", "/ws", { user = string.rep("x", 400) }), { per_user = { rate = 1, burst = 1 } })
      assert.is_true(#keys[1] <= 256)
    end)
  end)

  it("loads through the server's plugin loader", function()
    local p = unit.load_through_server(PLUGIN, "ratelimit")
    assert.is_function(p.ratelimit)
  end)
end)
