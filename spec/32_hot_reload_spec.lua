-- Integration: plugin hot reload (docs/plugins.md: "Plugins are reloaded
-- when their file changes, without dropping a connection"; "a failing
-- validation refuses the load and the old version keeps serving").
--
-- Each test copies spec/fixtures/plugins/switch_auth.lua into a temp dir
-- that comes first in plugin_path, starts its own server, edits the copy
-- and waits (bounded) for the reload line in the log.
local server = require "helpers.server"
local client = require "helpers.client"
local session = require "helpers.session"
local routes = require "helpers.routes"
local util = require "helpers.util"

local ROOT = server.ROOT
local FIXTURES = ROOT .. "/spec/fixtures/plugins"
local TEMPLATE_FILE = FIXTURES .. "/switch_auth.lua"

local RELOADED = "plugin reloaded"
local REFUSED = "plugin reload refused"

-- the two ways of writing a new version: in place, or a temp file next to
-- it renamed over the plugin
local overwrite, replace = util.write_file, util.replace_file

-- the template with its settings changed; every variant differs in size
local TEMPLATE = util.read_file(TEMPLATE_FILE)
local function variant(subs)
  local s = TEMPLATE
  for from, to in pairs(subs) do
    local a, b = s:find(from, 1, true)
    assert(a, "template lacks " .. from)
    s = s:sub(1, a - 1) .. to .. s:sub(b + 1)
  end
  return s
end
local ALLOW = variant({ ['local MODE = "deny"'] = 'local MODE = "allow"' })
local STRICT = variant({ ["local REQUIRED = nil"] = 'local REQUIRED = "strict"' })
local SYNTAX_ERROR = variant({ ["local REQUIRED = nil"] = "local REQUIRED = = nil" })
local SYNTAX_LINE = (function()
  local n = 0
  for line in (TEMPLATE .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find("local REQUIRED = nil", 1, true) then return n end
  end
end)()

describe("moonpush plugin hot reload", function()
  local srv, dir, file
  local open = session.tracker()

  local function counts()
    local log = srv:log()
    return util.count(log, RELOADED), util.count(log, REFUSED)
  end

  local function handshake(token)
    return client.handshake(srv, { path = "/sw", token = token, device = client.unique("sw-") })
  end

  local function ws(q) return open:ws(srv, q) end

  local function assert_old_version_serves()
    local resp = handshake("later")
    assert.equals(403, resp.status)
    assert.equals("switched_off", resp.json and resp.json.error)
    local w = ws({ path = "/sw", token = "always", device = client.unique("sw-") })
    assert.equals("sw-always", w.welcome.user)
    assert.same({ type = "mode", mode = "deny" }, client.request(w, { type = "mode" }))
  end

  local function start_server()
    srv = server.start({
      plugin_path = { dir, FIXTURES, ROOT .. "/plugins" },
      routes = {
        { path = "/sw", type = "websocket", plugins = { { name = "switch_auth", config = { level = "lenient" } } } },
        { path = "/ws", type = "websocket", plugins = { routes.device_auth() } },
        { path = "/publish", type = "publish", plugins = { routes.publisher_auth() } },
        { path = "/health", type = "health" },
      },
    })
  end

  -- sleep until just after the wall clock's next whole second
  local function align_to_second()
    local t = os.time()
    local deadline = client.now() + 1.5
    while os.time() == t and client.now() < deadline do server.sleep(0.005) end
  end

  before_each(function()
    dir = util.mkdtemp("moonpush-plugins")
    file = dir .. "/switch_auth.lua"
    overwrite(file, TEMPLATE)
    start_server()
    -- the file's first version is the one serving
    assert.equals(403, handshake("later").status)
  end)

  after_each(function()
    open:close_all()
    local s = srv
    srv = nil
    session.stop_and_remove(s, dir)
  end)

  local function deny_to_allow(write)
    local ch = client.unique("hot-")
    local old = ws({ path = "/sw", token = "always", device = client.unique("old-"), channels = { ch } })
    assert.same({ type = "mode", mode = "deny" }, client.request(old, { type = "mode" }))
    local reloaded = counts()
    write(file, ALLOW)
    local line = srv:wait_log(RELOADED, reloaded)
    assert.matches(file, line, 1, true)
    -- the next handshake sees the new version
    local w = ws({ path = "/sw", token = "later", device = client.unique("new-") })
    assert.equals("sw-later", w.welcome.user)
    -- the connection made before the reload was not dropped: it still
    -- receives, and its hooks are the new version's
    local ans = client.publish_ok(srv, { channel = ch, data = "after reload" })
    assert.equals(1, ans.recipients)
    local m = client.recv_message(old)
    assert.equals("after reload", m.data)
    assert.same({ type = "mode", mode = "allow" }, client.request(old, { type = "mode" }))
  end

  it("picks up a new version written to a temp file and renamed over the plugin", function()
    deny_to_allow(replace)
  end)

  it("picks up a new version written over the plugin in place", function()
    deny_to_allow(overwrite)
  end)

  -- Edits within one second of each other: stat() times in whole seconds
  -- cannot tell the versions apart, the size or the contents can.
  it("picks up a second edit within the same second that keeps the file size", function()
    align_to_second()
    local reloaded = counts()
    overwrite(file, ALLOW)
    srv:wait_log(RELOADED, reloaded)
    assert.equals(101, handshake("later").status)
    -- back to "deny", padded to the size of the "allow" version
    local DENY_SAME_SIZE = variant({ ['local MODE = "deny"'] = 'local MODE  = "deny"' })
    assert.equals(#ALLOW, #DENY_SAME_SIZE)
    reloaded = counts()
    overwrite(file, DENY_SAME_SIZE)
    srv:wait_log(RELOADED, reloaded)
    assert.equals(403, handshake("later").status)
  end)

  it("picks up an edit of the same size made within the second the server loaded the file", function()
    srv:stop()
    align_to_second()
    overwrite(file, TEMPLATE)
    start_server()
    -- same size as the first version: "deny" -> "open"
    local OPEN = variant({ ['local MODE = "deny"'] = 'local MODE = "open"' })
    assert.equals(#TEMPLATE, #OPEN)
    local f = assert(io.open(file, "r+b"))   -- rewrite in place: the size never changes
    f:write(OPEN)
    f:close()
    local wrote_at = os.time()
    srv:wait_log(RELOADED, 0)
    assert.equals(101, handshake("later").status, "edit written at " .. wrote_at)
  end)

  it("refuses a version with a syntax error, logging file and line, and keeps the old one serving", function()
    local _, refused = counts()
    replace(file, SYNTAX_ERROR)
    local line = srv:wait_log(REFUSED, refused)
    assert.matches("file=" .. file, line, 1, true)
    assert.matches(file .. ":" .. SYNTAX_LINE .. ":", line, 1, true)
    assert.equals(0, (counts()))
    assert_old_version_serves()
    -- a fixed version afterwards is taken
    local reloaded = counts()
    replace(file, ALLOW)
    srv:wait_log(RELOADED, reloaded)
    assert.equals(101, handshake("later").status)
  end)

  it("refuses a file that returns something other than a table", function()
    local _, refused = counts()
    replace(file, "return 42 -- not a plugin\n")
    local line = srv:wait_log(REFUSED, refused)
    assert.matches(file, line, 1, true)
    assert.matches("table", line, 1, true)
    assert_old_version_serves()
  end)

  it("refuses a file that raises while loading", function()
    local _, refused = counts()
    replace(file, 'error("cannot load this version")\n' .. TEMPLATE)
    local line = srv:wait_log(REFUSED, refused)
    assert.matches("cannot load this version", line, 1, true)
    assert_old_version_serves()
  end)

  it("refuses a new version whose validate() rejects the route's config", function()
    local _, refused = counts()
    replace(file, STRICT)
    local line = srv:wait_log(REFUSED, refused)
    assert.matches(file, line, 1, true)
    assert.matches("level must be strict", line, 1, true)
    assert_old_version_serves()
  end)
end)
