-- Start and stop the real moonpush binary for integration specs.
--
--   local server = require "helpers.server"
--   local srv = server.start({ limits = { max_batch = 5 } })
--   srv.port, srv.url("/health"), srv:log(), srv:alive(), srv:stop() -> exit code
--
-- Each server gets a free port, a temp dir holding its config (the default
-- below, deep-merged with the overrides), its stderr/stdout log, a pid file
-- and an exit-code file written by the wrapper shell when the binary exits.
-- Everything is bounded: start waits at most START_TIMEOUT for the port,
-- stop waits at most STOP_TIMEOUT for the exit, then SIGKILLs.

local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local util = require "helpers.util"

local M = {}

M.START_TIMEOUT = 5
M.STOP_TIMEOUT = 8

local function script_dir()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/[^/]*$") or "."
  local p = io.popen("cd '" .. dir .. "' && pwd")
  local abs = p:read("*l")
  p:close()
  return abs
end

M.ROOT = os.getenv("MOONPUSH_ROOT") or script_dir():gsub("/spec/helpers$", "")
M.BIN = os.getenv("MOONPUSH_BIN") or (M.ROOT .. "/moonpush")
M.PLUGIN_DIR = os.getenv("MOONPUSH_PLUGIN_DIR") or (M.ROOT .. "/plugins")

M.PUBLISHER = "publisher-secret"
-- a publisher allowed only "news" and "orders:*" (for 403 specs)
M.NEWS_PUBLISHER = "news-publisher"

-- Device tokens known to the default config (mirrors examples/moonpush.lua,
-- plus a third alice device and a token limited to one channel).
M.TOKENS = {
  ["alice-phone"]  = { user = "alice", device = "phone", kind = "mobile", channels = { "news", "orders:*" } },
  ["alice-laptop"] = { user = "alice", device = "laptop", kind = "web", channels = { "news" } },
  ["alice-tablet"] = { user = "alice", device = "tablet", kind = "mobile", channels = { "news" } },
  ["bob"]          = { user = "bob", kind = "web", channels = { "*" } },
  ["carol"]        = { user = "carol", kind = "pos", channels = { "sports" } },
}

local copy = util.copy

function M.default_config()
  return {
    listen = "127.0.0.1:0",
    max_connections = 10000,
    plugin_dir = M.PLUGIN_DIR,
    limits = {
      max_header_bytes = 8192,
      max_body_bytes = 1048576,
      max_batch = 1000,
      max_message_bytes = 65536,
      max_subscriptions = 64,
    },
    timeouts = {
      request_ms = 10000,
      idle_ms = 60000,
      ping_ms = 25000,
    },
    routes = {
      {
        path = "/ws",
        type = "websocket",
        plugins = {
          { name = "auth_token", config = { tokens = copy(M.TOKENS) } },
        },
      },
      {
        path = "/publish",
        type = "publish",
        plugins = {
          { name = "auth_token", config = {
              publishers = {
                [M.PUBLISHER] = { name = "backend", channels = { "*" } },
                [M.NEWS_PUBLISHER] = { name = "newsroom", channels = { "news", "orders:*" } },
              },
          } },
        },
      },
      { path = "/health", type = "health" },
    },
  }
end

local function is_array(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n > 0 and n == #t
end

-- Deep merge: tables merge key by key; arrays (e.g. routes) and scalars
-- replace. M.NULL removes a key.
M.NULL = setmetatable({}, { __tostring = function() return "server.NULL" end })

function M.merge(base, over)
  if over == nil then return base end
  for k, v in pairs(over) do
    if v == M.NULL then
      base[k] = nil
    elseif type(v) == "table" and type(base[k]) == "table" and not is_array(v) and not is_array(base[k]) then
      M.merge(base[k], v)
    else
      base[k] = copy(v)
    end
  end
  return base
end

local function serialize(v, indent)
  indent = indent or ""
  local t = type(v)
  if t == "string" then
    return string.format("%q", v)
  elseif t == "number" or t == "boolean" then
    return tostring(v)
  elseif t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      if type(a) == type(b) then return a < b end
      return type(a) == "number"
    end)
    local inner = indent .. "  "
    local out = { "{\n" }
    for _, k in ipairs(keys) do
      local key
      if type(k) == "number" then
        key = "[" .. k .. "]"
      else
        key = "[" .. string.format("%q", k) .. "]"
      end
      out[#out + 1] = inner .. key .. " = " .. serialize(v[k], inner) .. ",\n"
    end
    out[#out + 1] = indent .. "}"
    return table.concat(out)
  end
  error("cannot serialize a " .. t)
end
M.serialize = serialize

local readfile = util.try_read_file
local writefile = util.write_file

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

local function sleep(s) cqueues.sleep(s) end
M.sleep = sleep

-- The specs' default config with `edit(cfg)` applied, through
-- `moonpush --check-config` (at most 20 s). Returns what it printed and its
-- exit code.
function M.check_config(edit)
  local dir = util.mkdtemp("moonpush-check")
  local cfg = M.default_config()
  edit(cfg)
  writefile(dir .. "/moonpush.lua", "return " .. serialize(cfg) .. "\n")
  local p = io.popen(string.format("timeout -k 2 20 %s --check-config %s 2>&1; echo \"__rc=$?\"",
    util.shq(M.BIN), util.shq(dir .. "/moonpush.lua")))
  local out = p:read("*a")
  p:close()
  util.rm_rf(dir)
  return out, tonumber(out:match("__rc=(%d+)%s*$"))
end

-- A port the kernel just handed out (bound to 0, read back, closed).
function M.free_port()
  local l = socket.listen { host = "127.0.0.1", port = 0, reuseaddr = true }
  assert(l:listen())
  local _, _, port = l:localname()
  l:close()
  return port
end

-- True when 127.0.0.1:port accepts a TCP connection.
function M.port_open(port)
  local s = socket.connect { host = "127.0.0.1", port = port }
  s:onerror(function(_, _, why) return why end)
  local ok = s:connect(0.2)
  s:close()
  return ok and true or false
end

local live = {}   -- servers not stopped yet, for logs on failure

local Server = {}
Server.__index = Server

function Server:log()
  if self._log then return self._log end
  return readfile(self.logfile) or ""
end

function Server:log_tail(n)
  n = n or 40
  local lines = {}
  for line in (self:log() .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  if lines[#lines] == "" then lines[#lines] = nil end
  local from = math.max(1, #lines - n + 1)
  return table.concat(lines, "\n", from)
end

-- How many times `needle` (plain text) occurs in the log.
function Server:log_count(needle)
  return util.count(self:log(), needle)
end

-- Waits (bounded, default 3 s) until the log holds more than `before`
-- occurrences of `needle`; returns the newest line with it, or fails the
-- test with the log tail.
function Server:wait_log(needle, before, timeout)
  timeout = timeout or 3
  local deadline = cqueues.monotime() + timeout
  repeat
    local log = self:log()
    if util.count(log, needle) > before then
      local l = util.lines_with(log, needle)
      return l[#l]
    end
    sleep(0.02)
  until cqueues.monotime() > deadline
  error(string.format("no new %q line within %ss; log:\n%s", needle, timeout, self:log_tail(15)), 2)
end

-- Runs `moonpush admin <socket> -e expr` through the client binary (at most
-- 10 s); returns what it printed (stdout and stderr) and its exit code.
function Server:admin(expr)
  local sock = self.dir .. "/moonpush-admin.sock"
  local p = io.popen(string.format("timeout 10 %s admin %s -e %s 2>&1; echo \"__rc=$?\"",
    util.shq(M.BIN), util.shq(sock), util.shq(expr)))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return (out:gsub("__rc=%d+%s*$", "")), rc
end

-- Exit code if the process has exited, else nil.
function Server:exit_code()
  if self.rc ~= nil then return self.rc end
  local rc = readfile(self.rcfile)
  if rc and rc:match("%d") then
    self.rc = tonumber(rc:match("%d+"))
    return self.rc
  end
  return nil
end

function Server:alive()
  return self:exit_code() == nil
end

-- Send a signal (name as for kill(1), e.g. "TERM", "HUP").
function Server:signal(sig)
  if not self.pid or not self:alive() then return false end
  return sh(string.format("kill -%s %d 2>/dev/null", sig, self.pid))
end

-- Wait (bounded) for the process to exit; returns the exit code or nil.
function Server:wait(timeout)
  local deadline = cqueues.monotime() + (timeout or M.STOP_TIMEOUT)
  while cqueues.monotime() < deadline do
    local rc = self:exit_code()
    if rc then return rc end
    sleep(0.02)
  end
  return self:exit_code()
end

-- SIGTERM, wait (bounded) for exit. Returns the exit code, or nil and a
-- message when the server had to be SIGKILLed.
function Server:stop(timeout)
  -- Run finalizers of the clients used with this server now, inside the
  -- spec's protected call, rather than at a random later allocation.
  collectgarbage("collect")
  collectgarbage("collect")
  if self.stopped then return self.rc, self.stop_err end
  self.stopped = true
  local rc, err
  if self:alive() then
    self:signal("TERM")
    rc = self:wait(timeout or M.STOP_TIMEOUT)
    if rc == nil then
      self:signal("KILL")
      self:wait(2)
      err = string.format("moonpush (pid %s) did not exit within %ss of SIGTERM; killed",
        tostring(self.pid), tostring(timeout or M.STOP_TIMEOUT))
    end
  else
    rc = self:exit_code()
    err = "moonpush had already exited with code " .. tostring(rc)
  end
  self._log = readfile(self.logfile) or ""
  live[self] = nil
  if not os.getenv("MOONPUSH_KEEP") then
    sh("rm -rf '" .. self.dir .. "'")
  end
  self.stop_err = err
  if err then return nil, err end
  return rc
end

local function mkdtemp() return util.mkdtemp("moonpush-spec") end

-- Runs the binary once (at most 20 s) on the default config with
-- `edit(cfg)` applied: `args` follows the binary, "%s" standing for the
-- config file (default "--check-config %s"); `env` ("NAME=value ...") goes
-- before it. Returns what it printed (stdout and stderr) and its exit code.
function M.run_config(edit, args, env)
  local dir = mkdtemp()
  local cfg = M.default_config()
  cfg.listen = "127.0.0.1:" .. M.free_port()
  if edit then edit(cfg) end
  local path = dir .. "/moonpush.lua"
  writefile(path, "return " .. serialize(cfg) .. "\n")
  local p = io.popen(string.format("%s timeout -k 2 20 %s %s 2>&1; echo \"__rc=$?\"", env or "",
    util.shq(M.BIN), string.format(args or "--check-config %s", util.shq(path))))
  local out = p:read("*a")
  p:close()
  sh("rm -rf '" .. dir .. "'")
  return (out:gsub("__rc=%d+%s*$", "")), tonumber(out:match("__rc=(%d+)%s*$"))
end

-- Start a server with the default config deep-merged with `overrides`.
-- opts.config_fn(cfg) may edit the merged table before it is written;
-- opts.port listens on that port (a restart where clients expect it);
-- opts.listen(port) returns the `listen` value (port: the plain one).
function M.start(overrides, opts)
  opts = opts or {}
  local f = io.open(M.BIN, "rb")
  if not f then
    error("moonpush binary not found at " .. M.BIN .. " (run `make` first)", 2)
  end
  f:close()

  local cfg = M.merge(M.default_config(), overrides)
  if opts.config_fn then opts.config_fn(cfg) end

  local srv = setmetatable({}, Server)
  local last_err
  for _ = 1, 3 do -- retry on a port race
    srv.port = opts.port or M.free_port()
    -- opts.listen(port) may return a list of listeners (TLS specs); the
    -- plain port stays the one waited for
    cfg.listen = opts.listen and opts.listen(srv.port) or ("127.0.0.1:" .. srv.port)
    srv.config = cfg
    srv.dir = mkdtemp()
    srv.cfgfile = srv.dir .. "/moonpush.lua"
    srv.logfile = srv.dir .. "/moonpush.log"
    srv.pidfile = srv.dir .. "/pid"
    srv.rcfile = srv.dir .. "/rc"
    srv.rc, srv.pid, srv.stopped, srv._log = nil, nil, nil, nil
    writefile(srv.cfgfile, "-- written by spec/helpers/server.lua\nreturn " .. serialize(cfg) .. "\n")
    writefile(srv.dir .. "/run.sh", table.concat({
      "#!/bin/sh",
      -- background jobs of sh start with SIGINT/SIGQUIT ignored: undo that
      string.format("env --default-signal=INT,QUIT '%s' -c '%s' >'%s' 2>&1 </dev/null &", M.BIN, srv.cfgfile, srv.logfile),
      "pid=$!",
      string.format("echo $pid >'%s'", srv.pidfile),
      "wait $pid",
      string.format("echo $? >'%s.tmp' && mv '%s.tmp' '%s'", srv.rcfile, srv.rcfile, srv.rcfile),
      "",
    }, "\n"))
    assert(sh(string.format("sh '%s/run.sh' >/dev/null 2>&1 </dev/null &", srv.dir)))

    local deadline = cqueues.monotime() + M.START_TIMEOUT
    local up = false
    while cqueues.monotime() < deadline do
      if not srv.pid then
        local p = readfile(srv.pidfile)
        srv.pid = p and tonumber(p:match("%d+"))
      end
      if srv:exit_code() then break end
      if srv.pid and M.port_open(srv.port) then up = true break end
      sleep(0.02)
    end
    if up then
      live[srv] = true
      srv.url = function(a, b)
        local path = (a == srv) and b or a
        return "http://127.0.0.1:" .. srv.port .. (path or "/")
      end
      srv.ws_url = function(a, b)
        local path = (a == srv) and b or a
        return "ws://127.0.0.1:" .. srv.port .. (path or "/ws")
      end
      return srv
    end
    local rc = srv:exit_code()
    last_err = string.format("moonpush did not accept connections on port %d within %ss (exit code %s)\n--- config %s\n--- log:\n%s",
      srv.port, M.START_TIMEOUT, tostring(rc), srv.cfgfile, srv:log())
    srv.stopped = nil
    srv:stop(1)
    -- Retry only when the log suggests the port was taken.
    if not last_err:lower():find("address already in use", 1, true) then break end
  end
  error(last_err, 2)
end

-- On a failing test, print the tail of every running server's log.
local ok_busted, busted = pcall(require, "busted")
if ok_busted and type(busted) == "table" and busted.subscribe and not _G.__moonpush_log_hook then
  _G.__moonpush_log_hook = true
  busted.subscribe({ "test", "end" }, function(element, _, status)
    if status == "failure" or status == "error" then
      for srv in pairs(live) do
        io.stderr:write(string.format("\n---- moonpush log (port %d, %s) after failing test %q ----\n%s\n----\n",
          srv.port, srv:alive() and "running" or ("exited " .. tostring(srv:exit_code())),
          tostring(element.name), srv:log_tail(40)))
      end
    end
    return nil, true
  end)
end

-- Stop every server still running (use in a final teardown if needed).
function M.stop_all()
  for srv in pairs(live) do srv:stop() end
end

return M
