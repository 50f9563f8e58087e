-- Integration: plugin hot reload (docs/plugins.md: "Plugins are reloaded
-- when their file changes, without dropping a connection"; "a failing
-- validation refuses the load and the old version keeps serving").
--
-- Each test copies spec/fixtures/plugins/switch_auth.lua into a temp dir
-- that comes first in plugin_path, starts its own server, edits the copy
-- and waits (bounded) for the reload line in the log.
local server = require "helpers.server"
local client = require "helpers.client"

local ROOT = server.ROOT
local FIXTURES = ROOT .. "/spec/fixtures/plugins"
local TEMPLATE_FILE = FIXTURES .. "/switch_auth.lua"
local RELOAD_WAIT = 3

local RELOADED = "plugin reloaded"
local REFUSED = "plugin reload refused"

local function readfile(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function overwrite(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- write a temp file next to it, then rename it over the plugin
local function replace(path, s)
  local tmp = path .. ".new"
  overwrite(tmp, s)
  assert(os.rename(tmp, path))
end

local function mkdtemp()
  local p = io.popen("mktemp -d /tmp/moonpush-plugins.XXXXXX")
  local dir = p:read("*l")
  p:close()
  assert(dir and dir ~= "", "mktemp failed")
  return dir
end

-- the template with its settings changed; every variant differs in size
local TEMPLATE = readfile(TEMPLATE_FILE)
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

local function count(s, needle)
  local n, i = 0, 1
  while true do
    local a, b = s:find(needle, i, true)
    if not a then return n end
    n, i = n + 1, b + 1
  end
end

local function lines_with(s, needle)
  local out = {}
  for line in (s .. "\n"):gmatch("([^\n]*)\n") do
    if line:find(needle, 1, true) then out[#out + 1] = line end
  end
  return out
end

describe("moonpush plugin hot reload", function()
  local srv, dir, file
  local open = {}

  -- Waits (bounded) until the log holds more than `before` lines with
  -- `needle`; returns the newest such line or fails with the log tail.
  local function wait_log(needle, before, timeout)
    local deadline = client.now() + (timeout or RELOAD_WAIT)
    repeat
      local log = srv:log()
      if count(log, needle) > before then
        local l = lines_with(log, needle)
        return l[#l]
      end
      server.sleep(0.05)
    until client.now() > deadline
    error(string.format("no new %q line within %ss; log:\n%s", needle, timeout or RELOAD_WAIT, srv:log_tail(15)), 2)
  end

  local function counts()
    local log = srv:log()
    return count(log, RELOADED), count(log, REFUSED)
  end

  local function handshake(token)
    local resp, err, c = client.raw_request(srv, client.upgrade_request(srv,
      { path = "/sw", token = token, device = client.unique("sw-") }))
    c:close()
    assert.is_table(resp, err)
    return resp
  end

  local function ws(q)
    local w = client.ws(srv, q)
    open[#open + 1] = w
    return w
  end

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
        { path = "/ws", type = "websocket", plugins = { { name = "auth_token", config = { tokens = server.TOKENS } } } },
        { path = "/publish", type = "publish", plugins = { { name = "auth_token", config = {
            publishers = { [server.PUBLISHER] = { name = "backend", channels = { "*" } } } } } } },
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
    dir = mkdtemp()
    file = dir .. "/switch_auth.lua"
    overwrite(file, TEMPLATE)
    start_server()
    -- the file's first version is the one serving
    assert.equals(403, handshake("later").status)
  end)

  after_each(function()
    client.close_all(open)
    open = {}
    local s = srv
    srv = nil
    local rc, err = s:stop()
    os.execute("rm -rf '" .. dir .. "'")
    assert.equals(0, rc, err)
  end)

  local function deny_to_allow(write)
    local ch = client.unique("hot-")
    local old = ws({ path = "/sw", token = "always", device = client.unique("old-"), channels = { ch } })
    assert.same({ type = "mode", mode = "deny" }, client.request(old, { type = "mode" }))
    local reloaded = counts()
    write(file, ALLOW)
    local line = wait_log(RELOADED, reloaded)
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
    wait_log(RELOADED, reloaded)
    assert.equals(101, handshake("later").status)
    -- back to "deny", padded to the size of the "allow" version
    local DENY_SAME_SIZE = variant({ ['local MODE = "deny"'] = 'local MODE  = "deny"' })
    assert.equals(#ALLOW, #DENY_SAME_SIZE)
    reloaded = counts()
    overwrite(file, DENY_SAME_SIZE)
    wait_log(RELOADED, reloaded)
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
    wait_log(RELOADED, 0)
    assert.equals(101, handshake("later").status, "edit written at " .. wrote_at)
  end)

  it("refuses a version with a syntax error, logging file and line, and keeps the old one serving", function()
    local _, refused = counts()
    replace(file, SYNTAX_ERROR)
    local line = wait_log(REFUSED, refused)
    assert.matches("file=" .. file, line, 1, true)
    assert.matches(file .. ":" .. SYNTAX_LINE .. ":", line, 1, true)
    assert.equals(0, (counts()))
    assert_old_version_serves()
    -- a fixed version afterwards is taken
    local reloaded = counts()
    replace(file, ALLOW)
    wait_log(RELOADED, reloaded)
    assert.equals(101, handshake("later").status)
  end)

  it("refuses a file that returns something other than a table", function()
    local _, refused = counts()
    replace(file, "return 42 -- not a plugin\n")
    local line = wait_log(REFUSED, refused)
    assert.matches(file, line, 1, true)
    assert.matches("table", line, 1, true)
    assert_old_version_serves()
  end)

  it("refuses a file that raises while loading", function()
    local _, refused = counts()
    replace(file, 'error("cannot load this version")\n' .. TEMPLATE)
    local line = wait_log(REFUSED, refused)
    assert.matches("cannot load this version", line, 1, true)
    assert_old_version_serves()
  end)

  it("refuses a new version whose validate() rejects the route's config", function()
    local _, refused = counts()
    replace(file, STRICT)
    local line = wait_log(REFUSED, refused)
    assert.matches(file, line, 1, true)
    assert.matches("level must be strict", line, 1, true)
    assert_old_version_serves()
  end)
end)
