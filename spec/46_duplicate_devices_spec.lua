-- Integration: duplicate logins for a user with many devices (docs/protocol.md,
-- "WebSocket": a second connection of the same user and device on the same
-- route replaces the first with 4002, unless the route sets
-- duplicate_devices = "allow"). The server finds the older connection in an
-- index of (user, device), not by walking the user's connections: these
-- specs pin down that the index keeps the documented behaviour — for one
-- account with hundreds of devices, across routes, and after a config reload
-- that changes a route's policy or moves its index.
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local routes = require "helpers.routes"
local util = require "helpers.util"

local RELOADED = "config reloaded"
local MANY = 500

-- One user per test (the device comes from the query), so a test's count of
-- recipients is not disturbed by another test's connections still closing.
local TOKENS = {}
for _, name in ipairs({ "many", "storm", "cross", "allow", "edge", "ab", "a", "flip1", "flip2", "flip3" }) do
  TOKENS["m-" .. name] = { user = "m-" .. name, kind = "pos", channels = { "*" } }
end

local function pos_route(path, policy)
  return { path = path, type = "websocket", duplicate_devices = policy, plugins = { routes.device_auth(TOKENS) } }
end

-- Opens n devices of user `token` on path; returns the list.
local function open_devices(open, srv, token, path, n, prefix)
  local list = {}
  for i = 1, n do
    list[i] = open:ws(srv, { token = token, device = prefix .. i, path = path })
  end
  return list
end

-- Publishes to user and checks that each connection in `list` gets it:
-- the connections are all still open.
local function assert_all_receive(srv, user, list, expected_recipients)
  local a = client.publish_ok(srv, { user = user, data = "roll call" })
  assert.equals(expected_recipients or #list, a.recipients)
  for i, w in ipairs(list) do
    local m = client.recv_message(w)
    assert.equals("roll call", m.data, "connection " .. i)
  end
end

describe("moonpush duplicate logins, many devices per user", function()
  local srv
  local open = session.tracker()

  lazy_setup(function()
    srv = server.start({}, { config_fn = function(cfg)
      table.insert(cfg.routes, 1, pos_route("/pos", "replace"))
      table.insert(cfg.routes, 2, pos_route("/pos2", "replace"))
      table.insert(cfg.routes, 3, pos_route("/pos-multi", "allow"))
    end })
  end)
  lazy_teardown(function() session.stop(srv) end)
  after_each(function() open:close_all() end)

  it("keeps every one of " .. MANY .. " devices of one user connected", function()
    local list = open_devices(open, srv, "m-many", "/pos", MANY, "pos-")
    assert_all_receive(srv, "m-many", list)
  end)

  it("replaces one device with 4002 while " .. MANY .. " other devices of the user stay", function()
    local list = open_devices(open, srv, "m-storm", "/pos", MANY, "pos-")
    local old = open:ws(srv, { token = "m-storm", device = "till", path = "/pos" })
    local new = open:ws(srv, { token = "m-storm", device = "till", path = "/pos" })
    local code, reason = client.expect_close(old)
    assert.equals(4002, code)
    assert.equals("replaced by a newer connection", reason)
    list[#list + 1] = new
    assert_all_receive(srv, "m-storm", list)
    -- and again: each reconnect of the same device replaces the previous one
    local newer = open:ws(srv, { token = "m-storm", device = "till", path = "/pos" })
    assert.equals(4002, (client.expect_close(new)))
    list[#list] = newer
    assert_all_receive(srv, "m-storm", list)
  end)

  it("does not replace the same user+device on another replace route", function()
    local on1 = open:ws(srv, { token = "m-cross", device = "till", path = "/pos" })
    local on2 = open:ws(srv, { token = "m-cross", device = "till", path = "/pos2" })
    assert_all_receive(srv, "m-cross", { on1, on2 })
    -- a duplicate on /pos2 replaces only the /pos2 one
    local on2b = open:ws(srv, { token = "m-cross", device = "till", path = "/pos2" })
    assert.equals(4002, (client.expect_close(on2)))
    assert_all_receive(srv, "m-cross", { on1, on2b })
  end)

  it("keeps both connections of one device on an allow route, among many devices", function()
    local list = open_devices(open, srv, "m-allow", "/pos-multi", 50, "pos-")
    list[#list + 1] = open:ws(srv, { token = "m-allow", device = "pos-7", path = "/pos-multi" })
    list[#list + 1] = open:ws(srv, { token = "m-allow", device = "pos-7", path = "/pos-multi" })
    assert_all_receive(srv, "m-allow", list)
    -- a replace route's handshake leaves the allow route's connections alone
    list[#list + 1] = open:ws(srv, { token = "m-allow", device = "pos-7", path = "/pos" })
    assert_all_receive(srv, "m-allow", list)
  end)

  it("tells device ids apart exactly: prefixes, case, the longest id", function()
    local long = string.rep("d", 128)
    local ids = { "pos1", "pos10", "POS1", "pos1.", "pos1-", long:sub(1, 127), long }
    local list = {}
    for i, id in ipairs(ids) do
      list[i] = open:ws(srv, { token = "m-edge", device = id, path = "/pos" })
      assert.equals(id, list[i].welcome.device)
    end
    assert_all_receive(srv, "m-edge", list)
    local again = open:ws(srv, { token = "m-edge", device = long, path = "/pos" })
    assert.equals(4002, (client.expect_close(list[#list])))
    list[#list] = again
    assert_all_receive(srv, "m-edge", list)
    -- one byte too long is refused before it could replace anything
    assert.equals(500, client.handshake(srv, { token = "m-edge", device = long .. "d", path = "/pos" }).status)
    assert_all_receive(srv, "m-edge", list)
  end)

  it("does not confuse user ab with device c and user a with device bc", function()
    local ab = open:ws(srv, { token = "m-ab", device = "c", path = "/pos" })
    local a = open:ws(srv, { token = "m-a", device = "bc", path = "/pos" })
    local a2 = open:ws(srv, { token = "m-a", device = "b", path = "/pos" })
    assert_all_receive(srv, "m-ab", { ab })
    assert_all_receive(srv, "m-a", { a, a2 })
  end)
end)

describe("moonpush duplicate logins after a config reload", function()
  local srv
  local open = session.tracker()

  -- `before` routes are inserted ahead of /flip, so its index moves.
  local function config(policy, before)
    local cfg = server.default_config()
    for i, path in ipairs(before or {}) do
      table.insert(cfg.routes, i, pos_route(path, "replace"))
    end
    table.insert(cfg.routes, #(before or {}) + 1, pos_route("/flip", policy))
    return cfg
  end

  local function reload(cfg)
    cfg.listen = srv.config.listen
    local n = srv:log_count(RELOADED)
    util.replace_file(srv.cfgfile, "return " .. server.serialize(cfg) .. "\n")
    assert.is_true(srv:signal("HUP"))
    srv:wait_log(RELOADED, n)
  end

  local function connect(token, device)
    return open:ws(srv, { token = token, device = device, path = "/flip" })
  end

  after_each(function()
    open:close_all()
    local s = srv
    srv = nil
    if s then session.stop(s) end
  end)

  it("replaces every older connection once an allow route becomes replace", function()
    srv = server.start({}, { config_fn = function(cfg) cfg.routes = config("allow").routes end })
    local first, second = connect("m-flip1", "till"), connect("m-flip1", "till")
    local other = connect("m-flip1", "drawer")
    assert_all_receive(srv, "m-flip1", { first, second, other })
    reload(config("replace"))
    local third = connect("m-flip1", "till")
    assert.equals(4002, (client.expect_close(first)))
    assert.equals(4002, (client.expect_close(second)))
    assert_all_receive(srv, "m-flip1", { third, other })
  end)

  it("keeps both connections once a replace route becomes allow", function()
    srv = server.start({}, { config_fn = function(cfg) cfg.routes = config("replace").routes end })
    local first = connect("m-flip2", "till")
    reload(config("allow"))
    local second = connect("m-flip2", "till")
    assert_all_receive(srv, "m-flip2", { first, second })
  end)

  it("still replaces on a route whose index moved in the reload", function()
    srv = server.start({}, { config_fn = function(cfg) cfg.routes = config("replace").routes end })
    local first = connect("m-flip3", "till")
    local kept = connect("m-flip3", "drawer")
    reload(config("replace", { "/new-a", "/new-b" }))
    local second = connect("m-flip3", "till")
    assert.equals(4002, (client.expect_close(first)))
    assert_all_receive(srv, "m-flip3", { second, kept })
    -- the new routes in front take the index /flip had: no cross-replacement
    local on_new = open:ws(srv, { token = "m-flip3", device = "till", path = "/new-a" })
    assert_all_receive(srv, "m-flip3", { second, kept, on_new })
  end)
end)
