-- Small things the specs share: tables, text, files and the shell.
--
--   local util = require "helpers.util"
--   util.copy(t), util.with(base, extra), util.range(1, 5)
--   util.count(log, needle), util.lines_with(log, needle)
--   util.read_file(path), util.write_file(path, s), util.replace_file(path, s)
--   util.mkdtemp("moonpush-logs"), util.rm_rf(dir), util.shq(s)
--   util.run(cmd) -> output (stdout and stderr), exit code

local M = {}

---------------------------------------------------------------------------
-- tables
---------------------------------------------------------------------------

-- Deep copy (configs handed to server.start are copied so that specs can
-- keep editing their own tables).
function M.copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = M.copy(v) end
  return c
end

-- `base` with the keys of `extra` set over it (shallow; base is changed and
-- returned). For builders such as `msg(extra)`, `ctx(phase, route, extra)`.
function M.with(base, extra)
  for k, v in pairs(extra or {}) do base[k] = v end
  return base
end

-- { a, a+1, ..., b } ({} when b < a).
function M.range(a, b)
  local t = {}
  for i = a, b do t[#t + 1] = i end
  return t
end

---------------------------------------------------------------------------
-- text (server logs)
---------------------------------------------------------------------------

-- How many times `needle` (plain text) occurs in s.
function M.count(s, needle)
  local n, i = 0, 1
  while true do
    local a, b = s:find(needle, i, true)
    if not a then return n end
    n, i = n + 1, b + 1
  end
end

-- The lines of s that contain `needle` (plain text).
function M.lines_with(s, needle)
  local out = {}
  for line in (s .. "\n"):gmatch("([^\n]*)\n") do
    if line:find(needle, 1, true) then out[#out + 1] = line end
  end
  return out
end

---------------------------------------------------------------------------
-- files and the shell
---------------------------------------------------------------------------

-- The whole file; errors when it cannot be opened.
function M.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- The whole file, or nil when there is none (yet).
function M.try_read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Writes the file in place.
function M.write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- Writes a temp file next to `path`, then renames it over `path` (readers
-- never see half a file).
function M.replace_file(path, s)
  local tmp = path .. ".new"
  M.write_file(tmp, s)
  assert(os.rename(tmp, path))
end

-- A new directory /tmp/<prefix>.XXXXXX.
function M.mkdtemp(prefix)
  local p = io.popen("mktemp -d /tmp/" .. prefix .. ".XXXXXX")
  local dir = p:read("*l")
  p:close()
  assert(dir and dir ~= "", "mktemp failed")
  return dir
end

-- s quoted for sh.
function M.shq(s)
  return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end

-- Runs a shell command; returns its output (stdout and stderr) and exit code.
function M.run(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return (out:gsub("__rc=%d+%s*$", "")), rc
end

function M.rm_rf(dir)
  os.execute("rm -rf " .. M.shq(dir))
end

return M
