-- Integration: the process lifecycle operators expect (issue 10, item 7;
-- docs/operations.md, "Process lifecycle"). A second server started with
-- the same admin socket used to unlink the first one's socket and delete it
-- again on exit: the first server's admin was gone until a restart. Now a
-- live server's socket makes the second refuse to start, a stale one is
-- replaced, and a server removes only its own socket file. pid_file is
-- written at start, refused when it names a live moonpush, and removed at
-- exit only if it is still ours. A max_connections past the open-files
-- limit is warned about at start.
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

  describe("pid_file", function()
    it("is written with the server's pid at start and removed at exit", function()
      local pf = dir .. "/moonpush.pid"
      local srv = start({ pid_file = pf })
      assert.equals(tostring(srv.pid) .. "\n", util.read_file(pf))
      assert.equals(0, srv:stop())
      assert.is_false(exists(pf), "the pid file outlived its server")
    end)

    it("refuses to start when it names a live moonpush", function()
      local pf = dir .. "/moonpush.pid"
      local first = start({ pid_file = pf })
      local err = refused({ pid_file = pf })
      assert.truthy(err:find("exit code 1", 1, true), err)
      assert.truthy(err:find("another moonpush is running with this pid_file", 1, true), err)
      assert.truthy(err:find("pid=" .. first.pid, 1, true), err)
      assert.equals(tostring(first.pid) .. "\n", util.read_file(pf), "the refused server touched the pid file")
      assert.equals(0, first:stop())
    end)

    it("replaces a stale pid file: a dead pid, or a live process that is not moonpush", function()
      local pf = dir .. "/moonpush.pid"
      local sh = io.popen("sh -c 'echo $$'")
      local dead_pid = sh:read("*l")   -- that shell has exited
      sh:close()
      for _, stale in ipairs({ dead_pid, "1", "junk" }) do
        util.write_file(pf, stale .. "\n")
        local srv = start({ pid_file = pf })
        assert.equals(tostring(srv.pid) .. "\n", util.read_file(pf))
        assert.equals(0, srv:stop())
      end
    end)

    it("is left alone at exit when it no longer holds the server's pid", function()
      local pf = dir .. "/moonpush.pid"
      local srv = start({ pid_file = pf })
      util.write_file(pf, "424242\n")   -- a newer server's, say
      assert.equals(0, srv:stop())
      assert.equals("424242\n", util.read_file(pf))
    end)

    it("is refused when it is not a path", function()
      local err = refused({ pid_file = 42 })
      assert.truthy(err:find("pid_file must be a path", 1, true), err)
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
