-- The server a describe block tests against and the connections its tests
-- open, closed after each test so no test leaks sockets into the next.
--
-- One server for the whole block (started on first use, stopped at the end
-- with exit code 0):
--
--   local srv
--   local ws, track = session.shared_server(function()
--     srv = server.start({ limits = { max_batch = 5 } })
--     return srv
--   end)
--   -- ws(q): client.ws(srv, q), closed after each test
--   -- track(conn): any other connection (raw, admin), closed after each test
--
-- A server per test, or anything else: a tracker of its own.
--
--   local open = session.tracker()
--   open:ws(srv, q); open:add(conn); open:close_all(); session.stop(srv)

local busted = require "busted"
local luassert = require "luassert"
local client = require "helpers.client"

local M = {}

local Tracker = {}
Tracker.__index = Tracker

function M.tracker()
  return setmetatable({ list = {} }, Tracker)
end

-- Remember conn (lua-http WebSocket, raw client, admin connection); returns it.
function Tracker:add(conn)
  self.list[#self.list + 1] = conn
  return conn
end

-- client.ws(srv, q), remembered.
function Tracker:ws(srv, q)
  return self:add(client.ws(srv, q))
end

-- Close everything remembered (a WebSocket with a close frame, anything
-- else with its close method) and forget it.
function Tracker:close_all()
  for _, c in ipairs(self.list) do
    if c.readyState ~= nil then client.close(c) else pcall(c.close, c) end
  end
  self.list = {}
end

-- Stop srv and insist on exit code 0.
function M.stop(srv)
  local rc, err = srv:stop()
  luassert.equals(0, rc, err)
end

-- For a server per test with a temp dir of its own (plugin files): stop
-- srv, remove dir whatever the exit code, then insist on exit code 0.
function M.stop_and_remove(srv, dir)
  local rc, err = srv:stop()
  require("helpers.util").rm_rf(dir)
  luassert.equals(0, rc, err)
end

-- One server for the enclosing describe block: start() (which returns the
-- server) runs in lazy_setup, the server is stopped with exit code 0 in
-- lazy_teardown, and the connections opened with ws(q) or passed to
-- track(conn) are closed after each test. Returns ws, track.
function M.shared_server(start)
  local srv
  local open = M.tracker()
  busted.lazy_setup(function()
    srv = start()
  end)
  busted.lazy_teardown(function()
    if srv then M.stop(srv) end
  end)
  busted.after_each(function()
    open:close_all()
  end)
  local function ws(q) return open:ws(srv, q) end
  local function track(conn) return open:add(conn) end
  return ws, track
end

return M
