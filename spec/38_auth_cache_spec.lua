-- Integration: a keep-alive connection reuses its last auth answer (issue
-- 13; docs/plugins.md "Auth answers on keep-alive connections"). The auth
-- hook's calls are read from /metrics (moonpush_plugin_calls_total), scraped
-- on another connection.
local server = require "helpers.server"
local client = require "helpers.client"
local util = require "helpers.util"

local ROOT = server.ROOT
local FIXTURE = ROOT .. "/spec/fixtures/plugins/counting_auth.lua"

describe("moonpush auth cache on keep-alive connections", function()
  local srv, dir, file

  local function config(tokbook)
    return {
      plugin_path = { dir, ROOT .. "/plugins" },
      routes = {
        { path = "/pub", type = "publish", plugins = { { name = "counting_auth" } } },
        { path = "/tok", type = "publish", plugins = { { name = "auth_token", config = { publishers = tokbook } } } },
        { path = "/rl", type = "publish", plugins = {
            { name = "counting_auth" },
            { name = "ratelimit", config = { per_token = { rate = 0.01, burst = 3 }, phases = { "publish" } } },
        } },
        { path = "/history", type = "history", plugins = { { name = "counting_auth" } } },
        { path = "/metrics", type = "metrics" },
        { path = "/health", type = "health" },
      },
    }
  end
  local BOOK = { tokA = { name = "a", channels = { "*" } }, tokB = { name = "b", channels = { "*" } } }

  local function metric(name, label)
    local c = client.tcp(srv)
    assert(c:send("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    local resp = assert(c:response())
    c:close()
    assert.equals(200, resp.status)
    local body = resp.body
    local pat = "\n" .. name .. (label and ("{" .. label .. "}") or "") .. " "
    local at = body:find(pat, 1, true)
    if not at then return 0 end
    return tonumber(body:match("^(%S+)", at + #pat))
  end
  local function calls() return metric("moonpush_plugin_calls_total", 'plugin="counting_auth"') end

  local function publish(conn, path, token)
    local body = '{"channel":"' .. client.unique("ac-") .. '","data":1}'
    assert(conn:send("POST " .. path .. " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" ..
                     "Authorization: Bearer " .. token .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body))
    local resp = assert(conn:response())
    return resp.status, resp
  end

  -- the statuses of publishes with these tokens, in order, on conn
  local function statuses(conn, path, tokens)
    local out = {}
    for i, t in ipairs(tokens) do out[i] = publish(conn, path, t) end
    return out
  end

  -- n publishes with token on a new connection: the auth hook calls they made
  local function hook_calls(n, token)
    local c0 = calls()
    local conn = client.tcp(srv)
    for _ = 1, n do assert.equals(200, publish(conn, "/pub", token)) end
    conn:close()
    return calls() - c0
  end

  -- a request with the token in the query string only
  local function get(conn, target)
    assert(conn:send("GET " .. target .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
    return assert(conn:response()).status
  end
  local function post_query(conn, query)
    local body = '{"channel":"' .. client.unique("ac-") .. '","data":1}'
    assert(conn:send("POST /pub?" .. query .. " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" ..
                     "Content-Length: " .. #body .. "\r\n\r\n" .. body))
    return assert(conn:response()).status
  end

  local function wait_log(needle, before) return srv:wait_log(needle, before) end

  before_each(function()
    dir = util.mkdtemp("moonpush-ac")
    file = dir .. "/counting_auth.lua"
    util.write_file(file, util.read_file(FIXTURE))
    srv = server.start(config(BOOK))
  end)
  after_each(function() srv:stop() end)

  it("runs the auth hook once for many publishes on one connection", function()
    assert.equals(1, hook_calls(20, "good"))
    assert.is_true(metric("moonpush_auth_cache_hits_total") >= 19)
  end)

  it("authenticates again for another token, and refuses a bad one after a good one", function()
    local c0 = calls()
    local conn = client.tcp(srv)
    assert.same({ 200, 200, 401, 200, 401 }, statuses(conn, "/pub", { "good", "good2", "bad", "good", "bad" }))
    conn:close()
    assert.is_true(calls() >= c0 + 4)
  end)

  it("reuses a query-token answer for history reads of other channels", function()
    local c0 = calls()
    local conn = client.tcp(srv)
    for i = 1, 5 do assert.equals(200, get(conn, "/history?channel=c" .. i .. "&token=good")) end
    assert.equals(c0 + 1, calls())
    assert.equals(401, get(conn, "/history?channel=c1&token=bad"))
    conn:close()
  end)

  it("judges a request whose encoded parameter name decodes to token again", function()
    local conn = client.tcp(srv)
    assert.equals(200, post_query(conn, "token=good"))
    -- the core decodes %74oken to token and keeps the first: req.token is "bad"
    assert.equals(401, post_query(conn, "%74oken=bad&token=good"))
    conn:close()
  end)

  it("authenticates again once the identity has expired", function()
    local c0 = calls()
    local conn = client.tcp(srv)
    assert.same({ 200, 200 }, statuses(conn, "/pub", { "short", "short" }))
    assert.equals(c0 + 1, calls())
    server.sleep(1.5)
    assert.equals(200, publish(conn, "/pub", "short"))
    assert.equals(c0 + 2, calls())
    conn:close()
  end)

  it("never reuses an identity the plugin returned with cache = false", function()
    assert.equals(3, hook_calls(3, "nocache"))
  end)

  it("forgets its answers on a config reload (SIGHUP)", function()
    local conn = client.tcp(srv)
    assert.equals(200, publish(conn, "/pub", "good"))
    local c0 = calls()
    local before = util.count(srv:log(), "config reloaded")
    assert.is_true(srv:signal("HUP"))
    wait_log("config reloaded", before)
    assert.equals(200, publish(conn, "/pub", "good"))
    assert.equals(c0 + 1, calls())
    conn:close()
  end)

  it("forgets its answers on a plugin hot reload", function()
    local conn = client.tcp(srv)
    assert.same({ 200, 200 }, statuses(conn, "/pub", { "good", "good" }))
    local before = util.count(srv:log(), "plugin reloaded")
    util.replace_file(file, (util.read_file(FIXTURE):gsub('local DENY = nil', 'local DENY = "good" ')))
    wait_log("plugin reloaded", before)
    assert.equals(401, publish(conn, "/pub", "good"))
    conn:close()
  end)

  it("refuses a token revoked by a config reload on the same connection", function()
    local conn = client.tcp(srv)
    assert.same({ 200, 200 }, statuses(conn, "/tok", { "tokA", "tokA" }))
    local cfg = server.merge(server.default_config(), config({ tokB = BOOK.tokB }))
    cfg.listen = srv.config.listen
    util.write_file(srv.cfgfile, "return " .. server.serialize(cfg) .. "\n")
    local before = util.count(srv:log(), "config reloaded")
    assert.is_true(srv:signal("HUP"))
    wait_log("config reloaded", before)
    assert.equals(401, publish(conn, "/tok", "tokA"))
    assert.equals(200, publish(conn, "/tok", "tokB"))
    conn:close()
  end)

  it("still applies the publish rate limit to every request", function()
    local conn = client.tcp(srv)
    assert.same({ 200, 200, 200, 429 }, statuses(conn, "/rl", { "good", "good", "good", "good" }))
    conn:close()
  end)
end)
