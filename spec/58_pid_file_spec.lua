-- Integration: the `pid_file` option (docs/operations.md, "Config"): the
-- server's pid, written once it listens, relative to the config file,
-- removed at a clean exit; a path it cannot write stops the start with a
-- clear log line. One that names a live moonpush stops the start; a stale
-- one is replaced; at exit it is removed only if it is still ours (issue
-- 10, item 7).
local server = require "helpers.server"
local util = require "helpers.util"

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- The port accepts connections from listen() on, a moment before the pid
-- file is written: wait for it (bounded).
local function wait_file(path)
  local deadline = os.time() + 5
  while not exists(path) and os.time() <= deadline do server.sleep(0.01) end
  return util.read_file(path)
end

-- The same, for a file that held `old` before the server started.
local function wait_file_not(path, old)
  local deadline = os.time() + 5
  while util.read_file(path) == old and os.time() <= deadline do server.sleep(0.01) end
  return util.read_file(path)
end

describe("pid_file", function()
  it("holds the server's pid while it runs (a relative path is next to the config)", function()
    local srv = server.start({ pid_file = "moonpush.pid" })
    local file = srv.dir .. "/moonpush.pid"
    assert.equals(srv.pid .. "\n", wait_file(file))
    assert.is_false(exists(file .. ".tmp"))
    assert.equals(0, srv:stop())
  end)

  it("is removed at a clean exit", function()
    local other = util.mkdtemp("moonpush-pid")
    local file = other .. "/run.pid"
    local srv = server.start({ pid_file = file })
    assert.equals(srv.pid .. "\n", wait_file(file))
    assert.equals(0, srv:stop())
    assert.is_false(exists(file))
    util.rm_rf(other)
  end)

  it("refuses to start when the pid file cannot be written", function()
    -- it may exit before or just after its port was seen open
    local ok, srv = pcall(server.start, { pid_file = "/nonexistent-dir/moonpush.pid" })
    local log = ok and srv:log() or srv
    if ok then
      assert.equals(1, srv:wait())
      log = srv:log()
      srv:stop()
    else
      assert.matches("exit code 1", log)
    end
    assert.matches('cannot write the pid file" file=/nonexistent%-dir/moonpush.pid error="No such file or directory"', log)
  end)

  it("is checked with the config: a pid_file that is not a path is refused", function()
    local ok, err = pcall(server.start, { pid_file = 42 })
    assert.is_false(ok)
    assert.matches("pid_file must be a path", err)
  end)

  -- issue 10, item 7: a second server with the same pid_file
  describe("naming another server", function()
    local dir
    before_each(function() dir = util.mkdtemp("moonpush-pid") end)
    after_each(function() util.rm_rf(dir) end)

    it("refuses to start when it names a live moonpush, and leaves the file alone", function()
      local pf = dir .. "/moonpush.pid"
      local first = server.start({ pid_file = pf })
      assert.equals(first.pid .. "\n", wait_file(pf))
      local ok, err = pcall(server.start, { pid_file = pf })
      assert.is_false(ok, "the second server started")
      err = tostring(err)
      assert.truthy(err:find("exit code 1", 1, true), err)
      assert.truthy(err:find("another moonpush is running with this pid_file", 1, true), err)
      assert.truthy(err:find("pid=" .. first.pid, 1, true), err)
      assert.equals(first.pid .. "\n", util.read_file(pf), "the refused server touched the pid file")
      assert.equals(0, first:stop())
      assert.is_false(exists(pf))
    end)

    it("replaces a stale one: a dead pid, a live process that is not moonpush, junk", function()
      local pf = dir .. "/moonpush.pid"
      local sh = io.popen("sh -c 'echo $$'")
      local dead_pid = sh:read("*l")   -- that shell has exited
      sh:close()
      for _, stale in ipairs({ dead_pid, "1", "junk" }) do
        util.write_file(pf, stale .. "\n")
        local srv = server.start({ pid_file = pf })
        assert.equals(srv.pid .. "\n", wait_file_not(pf, stale .. "\n"))
        assert.equals(0, srv:stop())
      end
    end)

    it("is left alone at exit when it no longer holds the server's pid", function()
      local pf = dir .. "/moonpush.pid"
      local srv = server.start({ pid_file = pf })
      assert.equals(srv.pid .. "\n", wait_file(pf))
      util.write_file(pf, "424242\n")   -- a newer server's, say
      assert.equals(0, srv:stop())
      assert.equals("424242\n", util.read_file(pf))
    end)
  end)
end)
