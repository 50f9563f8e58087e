-- A real headless Chromium for the browser specs, driven over the DevTools
-- protocol (CDP) with lua-http's WebSocket client: no npm, no driver
-- download, just Debian's `chromium` package.
--
--   local browser = require "helpers.browser"
--   local br = browser.start()                  -- Chromium + a static file server
--   local page = br:open("/harness.html")       -- a new tab on the static server
--   page:js("return 1 + 1")                     -- 2 (body of an async function, awaited)
--   br:stop()                                   -- always: kills Chromium's process group
--
-- The static server runs inside this process on a cqueues controller that is
-- stepped only while we wait for Chromium, which is the only time the page
-- can fetch anything. It serves:
--   /moonpush.js      clients/js/moonpush.js (read on every request)
--   /harness.html     a page that loads /harness.js (spec/helpers/browser_harness.js)
--   /examples/web/*   the demo page
--   /clients/js/*     the client, where the demo page imports it from
--
-- Chromium runs in a process group of its own (setsid), with a fresh
-- --user-data-dir, and is killed by that group's id in stop(), or by its
-- watchdog shell if this process dies first. Every wait is bounded.

local cqueues = require "cqueues"
local websocket = require "http.websocket"
local http_server = require "http.server"
local http_headers = require "http.headers"
local cjson = require "cjson"
local ffi = require "ffi"
local util = require "helpers.util"
local server = require "helpers.server"

local M = {}

M.CHROMIUM = os.getenv("MOONPUSH_CHROMIUM") or "/usr/bin/chromium"
M.START_TIMEOUT = 30      -- Chromium writes DevToolsActivePort (slow on a loaded machine)
M.CALL_TIMEOUT = 20       -- one CDP call, unless the caller says otherwise
M.FLAGS = {
  "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-extensions", "--disable-default-apps", "--mute-audio",
  -- CI containers have a small /dev/shm (Debian's launcher means to add
  -- this when /dev/shm is small, but its test breaks on some mounts)
  "--disable-dev-shm-usage",
  -- background tabs must not be throttled: specs run several clients at once
  "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
  "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
}

local now = cqueues.monotime

pcall(ffi.cdef, "int getpid(void);")
local function getpid() return ffi.C.getpid() end

-- os.execute's success across Lua versions (LuaJIT answers 0, 5.2+ true).
local function sh(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

-- True when Chromium is installed (specs fail with a clear message otherwise).
function M.available()
  local f = io.open(M.CHROMIUM, "rb")
  if f then f:close() return true end
  return false
end

---------------------------------------------------------------------------
-- static files
---------------------------------------------------------------------------

local TYPES = { html = "text/html; charset=utf-8", js = "text/javascript; charset=utf-8",
                css = "text/css; charset=utf-8", json = "application/json" }

local HARNESS_HTML = [[<!doctype html>
<html><head><meta charset="utf-8"><title>moonpush browser spec</title></head>
<body><script type="module" src="/harness.js"></script></body></html>
]]

-- The file a request path maps to, or nil (no "..": only these trees).
local function file_for(path)
  path = path:gsub("%?.*$", "")
  if path:find("..", 1, true) then return nil end
  if path == "/moonpush.js" then return server.ROOT .. "/clients/js/moonpush.js" end
  if path == "/harness.js" then return server.ROOT .. "/spec/helpers/browser_harness.js" end
  if path:match("^/examples/web/") or path:match("^/clients/js/") then
    if path:sub(-1) == "/" then path = path .. "index.html" end
    return server.ROOT .. path
  end
  return nil
end

local function respond(stream, status, ctype, body)
  local h = http_headers.new()
  h:append(":status", tostring(status))
  h:append("content-type", ctype)
  h:append("cache-control", "no-store")
  stream:write_headers(h, false)
  stream:write_chunk(body, true)
end

local function serve(_, stream)
  local req = stream:get_headers()
  local path = req:get(":path") or "/"
  if path:gsub("%?.*$", "") == "/harness.html" then
    return respond(stream, 200, TYPES.html, HARNESS_HTML)
  end
  local file = file_for(path)
  local body = file and util.try_read_file(file)
  if not body then return respond(stream, 404, "text/plain", "not found\n") end
  return respond(stream, 200, TYPES[file:match("%.(%w+)$")] or "application/octet-stream", body)
end

---------------------------------------------------------------------------
-- Chromium and its DevTools socket
---------------------------------------------------------------------------

local Browser = {}
Browser.__index = Browser

local Page = {}
Page.__index = Page

-- Steps the controller (static server, CDP reader) until done() is true or
-- `timeout` seconds pass; returns whether done() became true.
function Browser:step_until(done, timeout)
  local deadline = now() + timeout
  while not done() do
    local left = deadline - now()
    if left <= 0 then return false end
    local ok, err = self.cq:step(math.min(left, 0.25))
    if not ok then error("browser helper: " .. tostring(err), 0) end
    if self.dead then error("browser helper: " .. self.dead, 0) end
  end
  return true
end

-- The CDP reader: answers by id into self.answers, events to their page.
function Browser:reader()
  while true do
    local data, err = self.ws:receive()
    if not data then
      if not self.stopping then self.dead = "DevTools connection ended: " .. tostring(err) end
      return
    end
    local msg = cjson.decode(data)
    if msg.id then
      self.answers[msg.id] = msg
    else
      local page = msg.sessionId and self.sessions[msg.sessionId]
      if page then page:event(msg.method, msg.params) end
    end
  end
end

-- One CDP call; returns its result or raises with the CDP error.
function Browser:call(method, params, session, timeout)
  self.next_id = self.next_id + 1
  local id = self.next_id
  local frame = cjson.encode({ id = id, method = method, params = params or {}, sessionId = session })
  local sent, send_err = false, nil
  self.cq:wrap(function()
    local ok, err = self.ws:send(frame, "text", 5)
    sent, send_err = true, (not ok) and tostring(err) or nil
  end)
  timeout = timeout or M.CALL_TIMEOUT
  if not self:step_until(function() return self.answers[id] ~= nil end, timeout) then
    error(string.format("CDP %s: no answer within %ss%s", method, timeout,
      sent and "" or " (not even sent)"), 2)
  end
  if send_err then error("CDP " .. method .. ": send failed: " .. send_err, 2) end
  local answer = self.answers[id]
  self.answers[id] = nil
  if answer.error then
    error(string.format("CDP %s failed: %s", method, cjson.encode(answer.error)), 2)
  end
  return answer.result
end

local function read_active_port(dir, pid, timeout)
  local deadline = now() + timeout
  while now() < deadline do
    local s = util.try_read_file(dir .. "/DevToolsActivePort")
    local port, path = (s or ""):match("^(%d+)\n([^\n]+)")
    if port then return tonumber(port), path end
    if not sh("kill -0 " .. pid .. " 2>/dev/null") then break end
    cqueues.sleep(0.05)
  end
  return nil
end

-- Starts Chromium and the static server. Raises (after cleaning up) when
-- Chromium does not come up within START_TIMEOUT.
function M.start()
  if not M.available() then
    error(M.CHROMIUM .. " not found: install Debian's chromium package (make deps does)", 2)
  end
  local self = setmetatable({ answers = {}, sessions = {}, pages = {}, next_id = 0 }, Browser)
  self.cq = cqueues.new()
  self.http = assert(http_server.listen {
    host = "127.0.0.1", port = 0, cq = self.cq, onstream = serve,
    onerror = function() end,   -- a tab closed mid-request is not our failure
  })
  assert(self.http:listen())
  local _, _, port = self.http:localname()
  self.static_port = port
  self.origin = "http://127.0.0.1:" .. port

  self.dir = util.mkdtemp("moonpush-chromium")
  local args = {}
  for _, f in ipairs(M.FLAGS) do args[#args + 1] = util.shq(f) end
  args[#args + 1] = util.shq("--user-data-dir=" .. self.dir .. "/profile")
  args[#args + 1] = "about:blank"
  -- setsid, run in the background by a shell without job control, is not a
  -- group leader and so does not fork: Chromium keeps its pid and leads a
  -- process group of its own. The shell stays as a watchdog that kills that
  -- group when stop() removes the `alive` file or when this spec process
  -- dies without a teardown (a killed busted), and reaps it.
  local alive = self.dir .. "/alive"
  util.write_file(alive, "")
  util.write_file(self.dir .. "/run.sh", table.concat({
    "#!/bin/sh",
    "setsid " .. util.shq(M.CHROMIUM) .. " " .. table.concat(args, " ")
      .. " >" .. util.shq(self.dir .. "/chromium.log") .. " 2>&1 </dev/null &",
    "echo $! >" .. util.shq(self.dir .. "/pid"),
    string.format("while kill -0 %d 2>/dev/null && [ -e %s ]; do sleep 0.2; done", getpid(), util.shq(alive)),
    "kill -KILL -$! 2>/dev/null",
    "wait",
    "",
  }, "\n"))
  assert(sh("sh " .. util.shq(self.dir .. "/run.sh") .. " >/dev/null 2>&1 </dev/null &"))
  local deadline = now() + 5
  while not self.pid and now() < deadline do
    local p = util.try_read_file(self.dir .. "/pid")
    self.pid = p and tonumber(p:match("%d+"))
    if not self.pid then cqueues.sleep(0.02) end
  end
  if not self.pid then
    self:stop()
    error("Chromium did not start (no pid)", 2)
  end
  local dport, dpath = read_active_port(self.dir .. "/profile", self.pid, M.START_TIMEOUT)
  if not dport then
    local log = util.try_read_file(self.dir .. "/chromium.log") or ""
    self:stop()
    error("Chromium wrote no DevToolsActivePort within " .. M.START_TIMEOUT .. "s; log:\n" .. log:sub(-2000), 2)
  end
  self.ws = websocket.new_from_uri("ws://127.0.0.1:" .. dport .. dpath)
  local ok, err = self.ws:connect(10)
  if not ok then
    self:stop()
    error("cannot connect to Chromium's DevTools socket: " .. tostring(err), 2)
  end
  self.cq:wrap(function() self:reader() end)
  return self
end

-- The tail of Chromium's own log (for failure messages).
function Browser:log_tail(n)
  local log = util.try_read_file(self.dir .. "/chromium.log") or ""
  return log:sub(-(n or 2000))
end

-- Closes Chromium (politely, then TERM and KILL to its process group) and
-- the static server; removes the profile. Safe to call twice.
function Browser:stop()
  if self.stopped then return end
  self.stopped = true
  self.stopping = true
  if self.ws and not self.dead then
    pcall(self.call, self, "Browser.close", nil, nil, 3)
  end
  if self.ws then pcall(self.ws.close, self.ws, 1000, "done", 1) end
  if self.dir then os.remove(self.dir .. "/alive") end     -- the watchdog kills the group
  if self.pid then
    local function gone()
      return not sh("kill -0 -" .. self.pid .. " 2>/dev/null")
    end
    local deadline = now() + 5
    while not gone() and now() < deadline do cqueues.sleep(0.05) end
    if not gone() then
      sh("kill -TERM -" .. self.pid .. " 2>/dev/null")
      deadline = now() + 3
      while not gone() and now() < deadline do cqueues.sleep(0.05) end
    end
    if not gone() then sh("kill -KILL -" .. self.pid .. " 2>/dev/null") end
  end
  if self.http then pcall(self.http.close, self.http) end
  if self.dir and not os.getenv("MOONPUSH_KEEP") then util.rm_rf(self.dir) end
end

---------------------------------------------------------------------------
-- pages
---------------------------------------------------------------------------

-- A new tab at `path` on the static server (or a full URL). By default waits
-- until `window.harness` exists (wait_for = a JS expression, or false).
function Browser:open(path, wait_for)
  local url = path:match("^%a+:") and path or (self.origin .. path)
  local target = self:call("Target.createTarget", { url = "about:blank" })
  local att = self:call("Target.attachToTarget", { targetId = target.targetId, flatten = true })
  local page = setmetatable({ browser = self, target = target.targetId, session = att.sessionId,
                              console = {}, errors = {} }, Page)
  self.sessions[page.session] = page
  self.pages[#self.pages + 1] = page
  page:call("Runtime.enable")
  page:call("Page.enable")
  page:call("Page.navigate", { url = url })
  if wait_for ~= false then
    page:wait_js(wait_for or "window.harness !== undefined", 15)
  end
  return page
end

function Page:call(method, params, timeout)
  return self.browser:call(method, params, self.session, timeout)
end

local MAX_CONSOLE = 200

function Page:event(method, params)
  if method == "Runtime.consoleAPICalled" then
    local parts = {}
    for _, a in ipairs(params.args or {}) do
      parts[#parts + 1] = a.value ~= nil and tostring(a.value) or (a.description or a.type)
    end
    table.insert(self.console, params.type .. ": " .. table.concat(parts, " "))
    if #self.console > MAX_CONSOLE then table.remove(self.console, 1) end
  elseif method == "Runtime.exceptionThrown" then
    local d = params.exceptionDetails or {}
    table.insert(self.errors, (d.exception and d.exception.description) or d.text or "exception")
  elseif method == "Inspector.targetCrashed" then
    table.insert(self.errors, "the tab crashed")
  end
end

-- What the page printed and threw, for failure messages.
function Page:diagnostics()
  return "console:\n  " .. table.concat(self.console, "\n  ", math.max(1, #self.console - 30))
      .. "\nuncaught:\n  " .. table.concat(self.errors, "\n  ")
end

-- Runs `body` as the body of an async function in the page and returns its
-- (JSON-able) return value. A thrown error or a rejection raises here with
-- its message and the page's console. `timeout` (s) bounds the wait.
function Page:js(body, timeout)
  timeout = timeout or M.CALL_TIMEOUT
  local r = self:call("Runtime.evaluate", {
    expression = "(async () => {\n" .. body .. "\n})()",
    awaitPromise = true, returnByValue = true,
  }, timeout)
  if r.exceptionDetails then
    local d = r.exceptionDetails
    local why = (d.exception and (d.exception.description or d.exception.value)) or d.text
    error("in the page: " .. tostring(why) .. "\n" .. self:diagnostics(), 2)
  end
  local v = r.result and r.result.value
  if v == cjson.null then return nil end
  return v
end

-- Waits (bounded) until the JS expression is truthy; survives navigations
-- (an evaluation in a context being replaced is retried).
function Page:wait_js(expr, timeout)
  local deadline = now() + (timeout or 10)
  local last
  while now() < deadline do
    local ok, v = pcall(self.js, self, "return !!(" .. expr .. ")", 5)
    if ok and v then return end
    last = ok and "false" or v
    cqueues.sleep(0.05)
  end
  error(string.format("page: %q not true within %ss (last: %s)\n%s", expr, timeout or 10,
    tostring(last), self:diagnostics()), 2)
end

-- Closes the tab (its WebSockets go with it).
function Page:close()
  if self.closed then return end
  self.closed = true
  pcall(self.browser.call, self.browser, "Target.closeTarget", { targetId = self.target }, nil, 5)
  self.browser.sessions[self.session] = nil
end

-- JSON for embedding Lua values in page code.
M.json = function(v) return cjson.encode(v) end

return M
