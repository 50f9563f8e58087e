-- Integration: the process lifecycle operators expect (issue 10, item 7;
-- docs/operations.md, "Process lifecycle"). A second server started with
-- the same admin socket used to unlink the first one's socket and delete it
-- again on exit: the first server's admin was gone until a restart. Now a
-- live server's socket makes the second refuse to start, a stale one is
-- replaced, and a server removes only its own socket file (pid_file:
-- spec/58). A max_connections past the open-files limit is warned about at
-- start.
local server = require "helpers.server"
local util = require "helpers.util"

local function exists(path)
  local r = os.execute("test -e " .. util.shq(path))
  return r == 0 or r == true
end

-- Starting a server that must refuse: returns the error server.start raised
-- (it carries the exit code and the log).
local function refused(overrides)
  local ok, err = pcall(server.start, overrides)
  assert.is_false(ok, "the server started")
  return tostring(err)
end

-- An admin expression through the client binary on the socket at `sock`:
-- true when it answered (and what it printed).
local function admin_works(sock)
  local p = io.popen(string.format("timeout 10 %s admin %s -e '1 + 1' 2>&1; echo __rc=$?",
    util.shq(server.BIN), util.shq(sock)))
  local out = p:read("*a")
  p:close()
  return out:match("__rc=(%d+)") == "0" and out:match("^2") ~= nil, out
end

describe("moonpush process lifecycle", function()
  local dir, servers

  before_each(function()
    dir = util.mkdtemp("moonpush-lifecycle")
    servers = {}
  end)

  after_each(function()
    for _, s in ipairs(servers) do if not s.stopped then s:stop(2) end end
    util.rm_rf(dir)
  end)

  local function start(overrides)
    local s = server.start(overrides)
    servers[#servers + 1] = s
    return s
  end

  describe("admin socket", function()
    it("refuses to start when a live server answers on the admin socket, and leaves it alone", function()
      local sock = dir .. "/admin.sock"
      local first = start({ admin = { socket = sock } })
      assert.is_true((admin_works(sock)))
      local err = refused({ admin = { socket = sock } })
      assert.truthy(err:find("exit code 1", 1, true), err)
      assert.truthy(err:find("another moonpush is serving this admin socket", 1, true), err)
      -- the first one's admin is still there, and still answers
      assert.is_true(exists(sock))
      local ok, out = admin_works(sock)
      assert.is_true(ok, out)
      assert.equals(0, first:stop())
      assert.is_false(exists(sock), "the socket file outlived its server")
    end)

    it("replaces a stale admin socket nobody listens on", function()
      local sock = dir .. "/admin.sock"
      -- a socket file left behind by a server that died (SIGKILL)
      local dead = start({ admin = { socket = sock } })
      dead:signal("KILL")
      dead:wait(3)
      assert.is_true(exists(sock), "SIGKILL left no socket file: the test proves nothing")
      local srv = start({ admin = { socket = sock } })
      assert.is_true((admin_works(sock)))
      assert.truthy(srv:log():find("stale admin socket", 1, true), srv:log_tail(5))
      assert.equals(0, srv:stop())
    end)

    it("refuses a path that is not a socket, and does not delete it", function()
      local path = dir .. "/not-a-socket"
      util.write_file(path, "keep me\n")
      local err = refused({ admin = { socket = path } })
      assert.truthy(err:find("not a socket", 1, true), err)
      assert.equals("keep me\n", util.read_file(path))
    end)

    it("on exit removes only its own socket file", function()
      local sock = dir .. "/admin.sock"
      local first = start({ admin = { socket = sock } })
      -- an operator moves the first one's socket aside; a second server
      -- creates its own at the path
      assert.is_true(os.rename(sock, dir .. "/first.sock"))
      local second = start({ admin = { socket = sock } })
      assert.is_true((admin_works(sock)))
      assert.equals(0, first:stop())
      assert.is_true(exists(sock), "the first server deleted the second one's admin socket")
      assert.is_true((admin_works(sock)))
      assert.equals(0, second:stop())
      assert.is_false(exists(sock))
    end)
  end)

  it("warns at start when max_connections exceeds the open-files limit", function()
    local srv = start({ max_connections = 2000000000 })
    assert.truthy(srv:log():find("max_connections exceeds the open-files limit", 1, true), srv:log_tail(5))
    assert.truthy(srv:log():find("max_connections=2000000000", 1, true), srv:log_tail(5))
    assert.equals(0, srv:stop())
    local fine = start({ max_connections = 100 })
    assert.is_nil(fine:log():find("open-files limit", 1, true), fine:log_tail(5))
    assert.equals(0, fine:stop())
  end)
end)
